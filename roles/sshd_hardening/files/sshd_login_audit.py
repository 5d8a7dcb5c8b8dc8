#!/usr/bin/env python3
"""Read-only audit for sshd_hardening: who could still log in after the new sshd_config?

Runs on the target (ansible.builtin.script). Collects login-capable accounts, whether they hold
an authorized key and a usable password, then plans AllowUsers/AllowGroups so the admin account
is never excluded, and lists the accounts that turning password login off would lock out.
Prints one JSON object; changes nothing.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import subprocess
import sys
from dataclasses import asdict, dataclass, field

NO_LOGIN_SHELLS = ("nologin", "false", "sync", "halt", "shutdown")


@dataclass(frozen=True)
class Account:
    """One account that sshd could let in (it has a login shell)."""

    name: str
    uid: int
    password_usable: bool
    has_key: bool
    groups: tuple[str, ...] = field(default_factory=tuple)
    primary_group: str = ""


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


def has_authorized_key(paths: list[str]) -> bool:
    """ssh-keygen -l succeeds only when the file holds at least one parsable public key."""
    for path in paths:
        if not os.path.isfile(path):
            continue
        probe = subprocess.run(["ssh-keygen", "-l", "-f", path], capture_output=True, check=False, timeout=30)
        if probe.returncode == 0:
            return True
    return False


def shadow_fields() -> dict[str, str]:
    """Password hashes by account name, via NSS (getent), readable as root."""
    out = subprocess.run(["getent", "shadow"], capture_output=True, text=True, check=False, timeout=30).stdout
    fields: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            fields[parts[0]] = parts[1]
    return fields


def collect(key_files: list[str], uid_min: int) -> list[Account]:
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
        accounts.append(
            Account(
                name=entry.pw_name,
                uid=entry.pw_uid,
                password_usable=password_usable(shadow.get(entry.pw_name, "")),
                has_key=has_authorized_key(
                    [expand_key_file(p, entry.pw_name, entry.pw_dir) for p in key_files]
                ),
                groups=tuple(groups),
                primary_group=grp.getgrgid(entry.pw_gid).gr_name,
            )
        )
    return accounts


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
) -> dict[str, object]:
    """Decide the effective allow lists and list everything that would lock someone out."""
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

    def allowed(account: Account) -> bool:
        if account.uid == 0 and account.name != admin:
            return False  # root login is "no" or key-only: root never needs a password here
        if users and account.name not in users:
            return False
        return not groups or bool(set(account.groups) & set(groups))

    offenders: list[str] = []
    if not password_authentication:
        for account in accounts:
            if account.name in exempt or not allowed(account) or account.has_key:
                continue
            if account.password_usable or account.name == admin:
                offenders.append(account.name)
    return {
        "admin": asdict(admin_account) if admin_account else None,
        "allow_users": users,
        "allow_groups": groups,
        "password_offenders": sorted(offenders),
        "errors": errors,
        "accounts": [asdict(a) for a in accounts],
    }


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
    args = parser.parse_args(argv)
    accounts = collect(args.key_file or [".ssh/authorized_keys"], uid_min_from_login_defs())
    result = plan(
        accounts,
        admin=args.admin,
        allow_users=args.allow_user,
        allow_groups=args.allow_group,
        exempt=args.exempt,
        permit_root_login=args.permit_root_login,
        password_authentication=args.password_authentication == "yes",
        ssh_session=args.ssh_session == "yes",
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
