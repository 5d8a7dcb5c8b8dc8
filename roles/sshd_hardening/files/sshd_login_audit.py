#!/usr/bin/env python3
"""Read-only audit for sshd_hardening: who could still log in after the new sshd_config?

Runs on the target (ansible.builtin.script). Collects login-capable accounts and judges each
authorized key against the policy sshd will enforce (key type in PubkeyAcceptedAlgorithms, RSA
size against RequiredRSASize), then plans AllowUsers/AllowGroups so the admin account is never
excluded, lists the accounts that turning password login off would lock out, and plans the
ports sshd listens on so a port change never closes the way in before the new one is proven.
Prints one JSON object; changes nothing.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import fnmatch
import grp
import hashlib
import json
import os
import pwd
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import cast

NO_LOGIN_SHELLS = ("nologin", "false", "sync", "halt", "shutdown")

# OpenSSH refuses RSA keys below this size whatever RequiredRSASize says (SSH_RSA_MINIMUM_MODULUS_SIZE).
OPENSSH_RSA_FLOOR = 1024

# Signature algorithms a key type can sign with; a key is usable if any of them is accepted.
# RSA keys sign with rsa-sha2-* (any OpenSSH client since 7.2), ssh-rsa is SHA-1.
SIGNATURE_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
    "ssh-rsa-cert-v01@openssh.com": (
        "rsa-sha2-512-cert-v01@openssh.com",
        "rsa-sha2-256-cert-v01@openssh.com",
        "ssh-rsa-cert-v01@openssh.com",
    ),
}

# ssh-keygen's names for key types, so messages read like `ssh-keygen -l`.
KEY_LABELS = {
    "ssh-ed25519": "ED25519",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "ssh-rsa": "RSA",
    "ssh-dss": "DSA",
    "ecdsa-sha2-nistp256": "ECDSA",
    "ecdsa-sha2-nistp384": "ECDSA",
    "ecdsa-sha2-nistp521": "ECDSA",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
}

CURVE_BITS = {"nistp256": 256, "nistp384": 384, "nistp521": 521}


@dataclass(frozen=True)
class KeyPolicy:
    """What sshd will accept after the change (ssh_crypto_policy's effective policy)."""

    accepted_algorithms: tuple[str, ...] = ()
    ca_signature_algorithms: tuple[str, ...] = ()
    required_rsa_size: int = 0


@dataclass(frozen=True)
class KeyVerdict:
    """One authorized_keys entry and whether sshd would accept it."""

    path: str
    line: int
    key_type: str
    label: str
    bits: int
    fingerprint: str
    comment: str
    cert_authority: bool
    usable: bool
    reason: str = ""

    def describe(self) -> str:
        """Like `ssh-keygen -l`: size, fingerprint, comment, type; plus where it is."""
        if not self.fingerprint:
            return f"{self.path} line {self.line}: {self.reason}"
        comment = f" {self.comment!r}" if self.comment else " (no comment)"
        what = f"{self.label} {self.bits} bits {self.fingerprint}{comment}"
        if self.cert_authority:
            what = f"certificate authority {what}"
        return f"{self.path} line {self.line}: {what}" + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class Account:
    """One account that sshd could let in (it has a login shell)."""

    name: str
    uid: int
    password_usable: bool
    has_key: bool  # at least one authorized key that sshd would accept
    groups: tuple[str, ...] = field(default_factory=tuple)
    primary_group: str = ""
    keys: tuple[KeyVerdict, ...] = field(default_factory=tuple)
    key_files: tuple[str, ...] = field(default_factory=tuple)

    @property
    def refused_keys(self) -> tuple[KeyVerdict, ...]:
        return tuple(k for k in self.keys if not k.usable)


def shell_allows_login(shell: str) -> bool:
    """Accounts with nologin/false shells cannot open a session, so they cannot be locked out."""
    return bool(shell) and os.path.basename(shell) not in NO_LOGIN_SHELLS


def password_usable(shadow_field: str) -> bool:
    """A hash that is empty or starts with ! or * cannot be used to log in."""
    return bool(shadow_field) and shadow_field[0] not in "!*"


def expand_key_file(pattern: str, name: str, home: str) -> str:
    """Expand sshd's AuthorizedKeysFile tokens (%h, %u, %%); relative paths are under the home."""
    path = pattern.replace("%%", "\0").replace("%h", home).replace("%u", name).replace("\0", "%")
    return path if path.startswith("/") else os.path.join(home, path)


def _read_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise ValueError("truncated key blob")
    size = int.from_bytes(blob[offset:offset + 4], "big")
    end = offset + 4 + size
    if end > len(blob):
        raise ValueError("truncated key blob")
    return blob[offset + 4:end], end


def _mpint_bits(value: bytes) -> int:
    return int.from_bytes(value, "big").bit_length()


def key_bits(blob: bytes) -> tuple[str, int]:
    """The key type embedded in a public key blob, and its size in bits as ssh-keygen reports it."""
    raw_type, offset = _read_string(blob, 0)
    key_type = raw_type.decode("ascii", errors="replace")
    base = key_type.replace("-cert-v01@openssh.com", "")
    if key_type.endswith("-cert-v01@openssh.com"):
        _nonce, offset = _read_string(blob, offset)  # the certificate nonce comes first
    if base == "ssh-rsa":
        _exponent, offset = _read_string(blob, offset)
        modulus, _end = _read_string(blob, offset)
        return key_type, _mpint_bits(modulus)
    if base == "ssh-dss":
        prime, _end = _read_string(blob, offset)
        return key_type, _mpint_bits(prime)
    if "ecdsa-sha2-" in base:
        curve, _end = _read_string(blob, offset)
        return key_type, CURVE_BITS.get(curve.decode("ascii", errors="replace"), 0)
    if "ed25519" in base:
        return key_type, 256
    return key_type, 0


def fingerprint(blob: bytes) -> str:
    """SHA256 fingerprint, the same string `ssh-keygen -l` and sshd's log print."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def split_options(line: str) -> tuple[str, str]:
    """Split authorized_keys options (which may hold quoted spaces) from the key that follows."""
    quoted = False
    index = 0
    while index < len(line):
        char = line[index]
        if char == "\\" and quoted and index + 1 < len(line):
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char in " \t" and not quoted:
            break
        index += 1
    return line[:index], line[index:].lstrip()


def _parse_key(text: str) -> tuple[str, bytes, str] | None:
    fields = text.split(None, 2)
    if len(fields) < 2:
        return None
    try:
        blob = base64.b64decode(fields[1], validate=True)
        embedded, _bits = key_bits(blob)
    except (binascii.Error, ValueError):
        return None
    if embedded != fields[0]:
        return None  # sshd refuses a line whose type and blob disagree
    return fields[0], blob, fields[2].strip() if len(fields) > 2 else ""


def matches(algorithm: str, patterns: tuple[str, ...]) -> bool:
    """sshd's pattern-list match: wildcards, and !pattern excludes."""
    if any(p.startswith("!") and fnmatch.fnmatchcase(algorithm, p[1:]) for p in patterns):
        return False
    return any(not p.startswith("!") and fnmatch.fnmatchcase(algorithm, p) for p in patterns)


def judge_key_line(text: str, policy: KeyPolicy, path: str = "", line: int = 0) -> KeyVerdict | None:
    """Judge one authorized_keys line; None for blank lines and comments.

    An empty policy (no accepted algorithms given) accepts every parsable key, as before the
    policy was passed in.
    """
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    options = ""
    parsed = _parse_key(text)
    if parsed is None:
        options, rest = split_options(text)
        parsed = _parse_key(rest)
    if parsed is None:
        return KeyVerdict(path, line, "", "?", 0, "", "", False, False, "not a public key sshd can read")
    key_type, blob, comment = parsed
    _type, bits = key_bits(blob)
    cert_authority = any(o.strip().lower() == "cert-authority" for o in options.split(","))
    base = key_type.replace("-cert-v01@openssh.com", "")
    label = KEY_LABELS.get(base, key_type) + ("-CERT" if key_type != base else "")
    allowed = policy.ca_signature_algorithms if cert_authority else policy.accepted_algorithms
    option_name = "CASignatureAlgorithms" if cert_authority else "PubkeyAcceptedAlgorithms"
    reason = ""
    if allowed and not any(matches(a, allowed) for a in SIGNATURE_ALGORITHMS.get(key_type, (key_type,))):
        reason = f"{key_type} is not in the host's {option_name}"
    elif base == "ssh-rsa" and bits < OPENSSH_RSA_FLOOR:
        reason = f"RSA below OpenSSH's {OPENSSH_RSA_FLOOR}-bit floor"
    elif base == "ssh-rsa" and policy.required_rsa_size and bits < policy.required_rsa_size:
        reason = f"RSA smaller than the host's RequiredRSASize {policy.required_rsa_size}"
    return KeyVerdict(path, line, key_type, label, bits, fingerprint(blob), comment, cert_authority,
                      not reason, reason)


def read_keys(paths: list[str], policy: KeyPolicy) -> list[KeyVerdict]:
    """Every entry of the files that exist, judged; unreadable files hold no usable key."""
    verdicts: list[KeyVerdict] = []
    for path in paths:
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError as exc:
            unread = f"cannot be read ({exc.strerror})"
            verdicts.append(KeyVerdict(path, 0, "", "?", 0, "", "", False, False, unread))
            continue
        for number, text in enumerate(lines, start=1):
            verdict = judge_key_line(text, policy, path, number)
            if verdict is not None:
                verdicts.append(verdict)
    return verdicts


def has_authorized_key(paths: list[str], policy: KeyPolicy | None = None) -> bool:
    """True when the files hold at least one key sshd would accept under the policy."""
    return any(k.usable for k in read_keys(paths, policy or KeyPolicy()))


def shadow_fields() -> dict[str, str]:
    """Password hashes by account name, via NSS (getent), readable as root."""
    out = subprocess.run(["getent", "shadow"], capture_output=True, text=True, check=False, timeout=30).stdout
    fields: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            fields[parts[0]] = parts[1]
    return fields


def collect(key_files: list[str], uid_min: int, policy: KeyPolicy | None = None) -> list[Account]:
    """Accounts with a login shell: root and regular users (uid >= uid_min)."""
    shadow = shadow_fields()
    accounts = []
    for entry in pwd.getpwall():
        if not shell_allows_login(entry.pw_shell):
            continue
        if entry.pw_uid != 0 and entry.pw_uid < uid_min:
            continue
        groups = sorted(
            {g.gr_name for g in grp.getgrall() if entry.pw_name in g.gr_mem}
            | {grp.getgrgid(entry.pw_gid).gr_name}
        )
        paths = [expand_key_file(p, entry.pw_name, entry.pw_dir) for p in key_files]
        keys = read_keys(paths, policy or KeyPolicy())
        accounts.append(
            Account(
                name=entry.pw_name,
                uid=entry.pw_uid,
                password_usable=password_usable(shadow.get(entry.pw_name, "")),
                has_key=any(k.usable for k in keys),
                groups=tuple(groups),
                primary_group=grp.getgrgid(entry.pw_gid).gr_name,
                keys=tuple(keys),
                key_files=tuple(paths),
            )
        )
    return accounts


def key_fix(account: Account, policy: KeyPolicy) -> str:
    """The one-line fix for an account whose keys sshd would refuse."""
    where = account.key_files[0] if account.key_files else "~/.ssh/authorized_keys"
    rsa = max(policy.required_rsa_size, 3072)
    return (
        f"Fix: add an Ed25519 key (ssh-keygen -t ed25519) to {where} of {account.name}, or an RSA key "
        f"of at least {rsa} bits (ssh-keygen -t rsa -b {rsa}), and log in with it; then run again."
    )


def plan(
    accounts: list[Account],
    *,
    admin: str,
    allow_users: list[str],
    allow_groups: list[str],
    exempt: list[str],
    permit_root_login: str,
    password_authentication: bool,
    ssh_session: bool,
    policy: KeyPolicy | None = None,
    session_key: str = "",
) -> dict[str, object]:
    """Decide the effective allow lists and list everything that would lock someone out."""
    policy = policy or KeyPolicy()
    by_name = {a.name: a for a in accounts}
    users = list(allow_users)
    groups = list(allow_groups)
    errors: list[str] = []
    admin_account = by_name.get(admin) if admin else None
    if admin and admin_account is None:
        errors.append(
            f"The admin account {admin!r} does not exist or has no login shell; "
            "set sshd_hardening_admin_user to the account Ansible logs in as."
        )
    if admin_account is not None:
        if users and admin not in users:
            users.append(admin)
        if groups and not set(admin_account.groups) & set(groups):
            groups.append(admin_account.primary_group)
        if admin == "root" and ssh_session and permit_root_login == "no":
            errors.append(
                "This run logs in over SSH as root, and PermitRootLogin no would lock it out. "
                "Log in as a sudo user, or set sshd_hardening_permit_root_login: prohibit-password."
            )
        if admin_account.keys and not admin_account.has_key:
            errors.append(
                f"Refusing to change sshd: the admin account {admin!r} would be locked out, because sshd "
                f"would refuse every one of its authorized keys under the new policy: "
                + "; ".join(k.describe() for k in admin_account.keys)
                + ". " + key_fix(admin_account, policy) + " Nothing was changed."
            )
        elif session_key:
            used = [k for k in admin_account.keys if k.fingerprint == session_key and not k.usable]
            if used:
                errors.append(
                    "Refusing to change sshd: the key this run logs in with would be refused: "
                    + "; ".join(k.describe() for k in used)
                    + ". " + key_fix(admin_account, policy) + " Nothing was changed."
                )

    def allowed(account: Account) -> bool:
        if account.uid == 0 and account.name != admin:
            return False  # root login is "no" or key-only: root never needs a password here
        if users and account.name not in users:
            return False
        return not groups or bool(set(account.groups) & set(groups))

    offenders: list[str] = []
    notes: dict[str, str] = {}
    if not password_authentication:
        for account in accounts:
            if account.name in exempt or not allowed(account) or account.has_key:
                continue
            if account.password_usable or account.name == admin:
                offenders.append(account.name)
                if account.refused_keys:
                    notes[account.name] = "only keys sshd would refuse: " + "; ".join(
                        k.describe() for k in account.refused_keys)
    return {
        "admin": asdict(admin_account) if admin_account else None,
        "allow_users": users,
        "allow_groups": groups,
        "password_offenders": sorted(offenders),
        "offender_notes": notes,
        "errors": errors,
        "accounts": [asdict(a) for a in accounts],
    }


@dataclass(frozen=True)
class PortPlan:
    """The ports sshd listens on after this run, and how they differ from now."""

    ports: tuple[int, ...]  # the new port first
    kept: tuple[int, ...]  # old ports still open while the move is in progress
    dropped: tuple[int, ...]
    added: tuple[int, ...]

    @property
    def transition(self) -> bool:
        return bool(self.kept)


def plan_ports(new_port: int, current: list[int], session_port: int, new_port_proven: bool) -> PortPlan:
    """Plan the ports: an old one stays open until the move cannot lock anyone out.

    An old port stays while it carries this run's own SSH session (the next connection, or a
    reboot later in the play, comes back on it), and, without a session, until a fresh login on
    the new port has succeeded. A session that came in on the new port proves that port.
    """
    listening = sorted(set(current) | ({session_port} if session_port else set()))
    old = [p for p in listening if p != new_port]
    if not old or session_port == new_port:
        keep: list[int] = []
    elif session_port:
        keep = [session_port]
    elif new_port_proven:
        keep = []
    else:
        keep = old
    return PortPlan(
        ports=(new_port, *keep),
        kept=tuple(keep),
        dropped=tuple(p for p in old if p not in keep),
        added=tuple(p for p in [new_port] if p not in listening),
    )


def port_listeners(port: int) -> list[str]:
    """Who listens on a TCP port now (ss -ltnp), one line each; empty when it is free."""
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True,
                         check=False, timeout=30).stdout
    return [" ".join(line.split()) for line in out.splitlines() if line.strip()]


def port_errors(ports: PortPlan, listeners: dict[int, list[str]]) -> list[str]:
    """A new port that something else holds would leave sshd unable to listen there."""
    return [
        f"Refusing to move sshd to port {port}: it is already in use ({' | '.join(holders)}). "
        "sshd could not listen there after the reload (a workspace or another service holds it). "
        "Choose another sshd_hardening_port, or move that service first. Nothing was changed."
        for port, holders in sorted(listeners.items())
        if port in ports.added and holders
    ]


def uid_min_from_login_defs(path: str = "/etc/login.defs") -> int:
    """Regular accounts start at UID_MIN (1000 on Debian and Ubuntu)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) == 2 and parts[0] == "UID_MIN" and parts[1].isdigit():
                    return int(parts[1])
    except OSError:
        pass
    return 1000


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.split(",") if v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin", default="")
    parser.add_argument("--allow-user", action="append", default=[])
    parser.add_argument("--allow-group", action="append", default=[])
    parser.add_argument("--exempt", action="append", default=[])
    parser.add_argument("--key-file", action="append", default=[])
    parser.add_argument("--permit-root-login", default="no")
    parser.add_argument("--password-authentication", choices=["yes", "no"], default="no")
    parser.add_argument("--ssh-session", choices=["yes", "no"], default="no")
    parser.add_argument("--pubkey-accepted-algorithms", default="", help="comma-separated, effective policy")
    parser.add_argument("--ca-signature-algorithms", default="", help="comma-separated, effective policy")
    parser.add_argument("--required-rsa-size", type=int, default=0, help="0 when this OpenSSH has none")
    parser.add_argument("--session-key", default="", help="SHA256 fingerprint of this run's key")
    parser.add_argument("--new-port", type=int, default=0)
    parser.add_argument("--current-port", type=int, action="append", default=[])
    parser.add_argument("--session-port", type=int, default=0)
    parser.add_argument("--new-port-proven", choices=["yes", "no"], default="no")
    args = parser.parse_args(argv)
    policy = KeyPolicy(_csv(args.pubkey_accepted_algorithms), _csv(args.ca_signature_algorithms),
                       args.required_rsa_size)
    accounts = collect(args.key_file or [".ssh/authorized_keys"], uid_min_from_login_defs(), policy)
    result = plan(
        accounts,
        admin=args.admin,
        allow_users=args.allow_user,
        allow_groups=args.allow_group,
        exempt=args.exempt,
        permit_root_login=args.permit_root_login,
        password_authentication=args.password_authentication == "yes",
        ssh_session=args.ssh_session == "yes",
        policy=policy,
        session_key=args.session_key,
    )
    if args.new_port:
        ports = plan_ports(args.new_port, args.current_port, args.session_port, args.new_port_proven == "yes")
        result["ports"] = {**asdict(ports), "transition": ports.transition}
        result["errors"] = [*cast("list[str]", result["errors"]),
                            *port_errors(ports, {p: port_listeners(p) for p in ports.added})]
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
