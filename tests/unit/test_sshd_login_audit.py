"""sshd_hardening's lockout guard: who may log in, and who would lose access."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pathload import load_module

ROOT = Path(__file__).resolve().parents[2]




audit = load_module("sshd_login_audit", ROOT / "roles/sshd_hardening/files/sshd_login_audit.py")
Account = audit.Account


def account(name: str, uid: int, password: bool, key: bool, *extra_groups: str) -> Any:
    return Account(name, uid, password, key, (name, *extra_groups), name)


ROOT_ACCOUNT = account("root", 0, False, True)
ADMIN = account("ops", 1000, True, True, "sudo")
PW_ONLY = account("carol", 1001, True, False, "lab")
LOCKED = account("svc", 1002, False, False)
ACCOUNTS = [ROOT_ACCOUNT, ADMIN, PW_ONLY, LOCKED]


def run_plan(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "admin": "ops",
        "allow_users": [],
        "allow_groups": [],
        "exempt": [],
        "permit_root_login": "no",
        "password_authentication": False,
        "ssh_session": True,
    }
    args.update(overrides)
    return dict(audit.plan(ACCOUNTS, **args))


def test_password_only_account_blocks_disabling_passwords() -> None:
    assert run_plan()["password_offenders"] == ["carol"]


def test_no_offenders_when_passwords_stay_on() -> None:
    assert run_plan(password_authentication=True)["password_offenders"] == []


def test_accounts_outside_allow_lists_cannot_be_locked_out() -> None:
    result = run_plan(allow_groups=["sudo"])
    assert result["password_offenders"] == []
    assert result["allow_groups"] == ["sudo"]


def test_exempt_accounts_are_skipped() -> None:
    assert run_plan(exempt=["carol"])["password_offenders"] == []


def test_admin_is_added_to_allow_users() -> None:
    assert run_plan(allow_users=["carol"], exempt=["carol"])["allow_users"] == ["carol", "ops"]


def test_admin_primary_group_is_added_when_no_listed_group_matches() -> None:
    result = run_plan(allow_groups=["lab"], exempt=["carol"])
    assert result["allow_groups"] == ["lab", "ops"]


def test_admin_without_key_is_an_offender_even_without_password() -> None:
    admin = account("ops", 1000, False, False)
    result = audit.plan(
        [admin],
        admin="ops",
        allow_users=[],
        allow_groups=[],
        exempt=[],
        permit_root_login="no",
        password_authentication=False,
        ssh_session=True,
    )
    assert result["password_offenders"] == ["ops"]


@pytest.mark.parametrize(
    ("root_login", "ssh_session", "refused"),
    [("no", True, True), ("prohibit-password", True, False), ("no", False, False)],
)
def test_root_session_refuses_permit_root_login_no(root_login: str, ssh_session: bool, refused: bool) -> None:
    result = run_plan(admin="root", permit_root_login=root_login, ssh_session=ssh_session, exempt=["carol"])
    assert bool(result["errors"]) is refused


def test_unknown_admin_is_an_error() -> None:
    assert "does not exist" in run_plan(admin="nobody-here")["errors"][0]


@pytest.mark.parametrize(
    ("field", "usable"),
    [("$y$j9T$abc", True), ("!$y$j9T$abc", False), ("*", False), ("", False), ("!", False)],
)
def test_password_usable(field: str, usable: bool) -> None:
    assert audit.password_usable(field) is usable


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (".ssh/authorized_keys", "/home/ann/.ssh/authorized_keys"),
        ("/etc/ssh/keys/%u", "/etc/ssh/keys/ann"),
        ("%h/.ssh/k%%", "/home/ann/.ssh/k%"),
    ],
)
def test_expand_key_file(pattern: str, expected: str) -> None:
    assert audit.expand_key_file(pattern, "ann", "/home/ann") == expected


@pytest.mark.parametrize(
    ("shell", "allowed"),
    [("/bin/bash", True), ("/usr/sbin/nologin", False), ("/bin/false", False), ("", False)],
)
def test_shell_allows_login(shell: str, allowed: bool) -> None:
    assert audit.shell_allows_login(shell) is allowed


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")
def test_has_authorized_key_reads_a_real_key_behind_options(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    keyfile = tmp_path / "authorized_keys"
    keyfile.write_text('from="10.0.0.0/8" ' + (tmp_path / "k.pub").read_text())
    empty = tmp_path / "empty"
    empty.write_text("# no keys\n")
    assert audit.has_authorized_key([str(empty), str(keyfile)]) is True
    assert audit.has_authorized_key([str(empty), str(tmp_path / "missing")]) is False


# --- Key judgement against the host's effective policy (finding 2) --------------------------

POLICY_DEFAULTS = yaml.safe_load((ROOT / "roles/ssh_crypto_policy/defaults/main.yml").read_text())
# ssh_crypto_policy's lists as ssh_crypto_policy_effective hands them over on OpenSSH >= 9.1.
POLICY = audit.KeyPolicy(
    tuple(POLICY_DEFAULTS["ssh_crypto_policy_pubkey_accepted_algorithms"]),
    tuple(POLICY_DEFAULTS["ssh_crypto_policy_ca_signature_algorithms"]),
    POLICY_DEFAULTS["ssh_crypto_policy_rsa_min_bits"],
)
KEYGEN = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")


@pytest.fixture(scope="module")
def real_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Public key lines made by ssh-keygen, by name (comment = name@test)."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("needs OpenSSH's ssh-keygen")
    tmp = tmp_path_factory.mktemp("keys")
    specs = {"ed25519": ["-t", "ed25519"], "rsa2048": ["-t", "rsa", "-b", "2048"],
             "rsa3072": ["-t", "rsa", "-b", "3072"], "ecdsa": ["-t", "ecdsa", "-b", "256"],
             "ecdsa384": ["-t", "ecdsa", "-b", "384"]}
    lines = {}
    for name, spec in specs.items():
        subprocess.run(["ssh-keygen", "-q", *spec, "-N", "", "-C", f"{name}@test", "-f", str(tmp / name)],
                       check=True)
        lines[name] = (tmp / f"{name}.pub").read_text().strip()
    return lines


def keygen_l(line: str, tmp_path: Path) -> tuple[int, str, str]:
    """ssh-keygen -l's bits, fingerprint and type for one key line."""
    path = tmp_path / "one.pub"
    path.write_text(line + "\n")
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[0]), out[1], out[-1].strip("()")


@KEYGEN
@pytest.mark.parametrize(
    ("name", "usable", "reason"),
    [
        ("ed25519", True, ""),
        ("rsa2048", False, "RequiredRSASize 3072"),
        ("rsa3072", True, ""),
        ("ecdsa", False, "ecdsa-sha2-nistp256 is not in the host's PubkeyAcceptedAlgorithms"),
        ("ecdsa384", False, "ecdsa-sha2-nistp384 is not in the host's PubkeyAcceptedAlgorithms"),
    ],
)
def test_real_keys_are_judged_like_sshd_will(real_keys: dict[str, str], tmp_path: Path,
                                             name: str, usable: bool, reason: str) -> None:
    verdict = audit.judge_key_line(real_keys[name], POLICY, "/home/ops/.ssh/authorized_keys", 3)
    assert verdict.usable is usable
    assert reason in verdict.reason
    # Size, fingerprint and type exactly as ssh-keygen -l reports them.
    assert (verdict.bits, verdict.fingerprint, verdict.label) == keygen_l(real_keys[name], tmp_path)
    described = verdict.describe()
    assert f"{name}@test" in described and verdict.fingerprint in described
    assert f"{verdict.label} {verdict.bits} bits" in described
    assert described.startswith("/home/ops/.ssh/authorized_keys line 3: ")


@KEYGEN
def test_rsa_2048_passes_where_openssh_has_no_required_rsa_size(real_keys: dict[str, str]) -> None:
    before_9_1 = audit.KeyPolicy(POLICY.accepted_algorithms, POLICY.ca_signature_algorithms, 0)
    assert audit.judge_key_line(real_keys["rsa2048"], before_9_1).usable


@KEYGEN
def test_rsa_needs_an_rsa_sha2_signature_algorithm(real_keys: dict[str, str]) -> None:
    ed25519_only = audit.KeyPolicy(("ssh-ed25519",), (), 3072)
    verdict = audit.judge_key_line(real_keys["rsa3072"], ed25519_only)
    assert not verdict.usable and "ssh-rsa is not in the host's PubkeyAcceptedAlgorithms" in verdict.reason
    assert audit.judge_key_line(real_keys["rsa3072"], audit.KeyPolicy(("rsa-sha2-256",), (), 3072)).usable


@KEYGEN
def test_options_with_quoted_spaces_and_cert_authority(real_keys: dict[str, str]) -> None:
    options = 'from="10.0.0.0/8",command="echo a b",no-pty '
    assert audit.judge_key_line(options + real_keys["ed25519"], POLICY).usable
    ca = audit.judge_key_line("cert-authority " + real_keys["ecdsa"], POLICY)
    assert ca.cert_authority and not ca.usable and "CASignatureAlgorithms" in ca.reason
    assert audit.judge_key_line("cert-authority,principals=\"ops\" " + real_keys["ed25519"], POLICY).usable


@pytest.mark.parametrize("line", ["", "   ", "# a comment"])
def test_blank_and_comment_lines_are_not_keys(line: str) -> None:
    assert audit.judge_key_line(line, POLICY) is None


# The last one is an Ed25519 blob under an RSA type name: sshd refuses such a line.
@pytest.mark.parametrize("line", ["ssh-ed25519 not-base64!", "garbage",
                                  "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIA=="])
def test_unreadable_lines_are_refused_with_a_reason(line: str) -> None:
    verdict = audit.judge_key_line(line, POLICY, "/k", 1)
    assert not verdict.usable and "not a public key" in verdict.describe()


def test_security_key_types_are_judged_by_their_own_names() -> None:
    def blob(*parts: bytes) -> str:
        data = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
        return base64.b64encode(data).decode()

    sk_ecdsa = "sk-ecdsa-sha2-nistp256@openssh.com"
    point = b"\x04" + bytes(64)
    line = f"{sk_ecdsa} {blob(sk_ecdsa.encode(), b'nistp256', point, b'ssh:')} yubikey"
    verdict = audit.judge_key_line(line, POLICY)
    assert (verdict.label, verdict.bits, verdict.usable) == ("ECDSA-SK", 256, False)
    sk_ed = "sk-ssh-ed25519@openssh.com"
    line = f"{sk_ed} {blob(sk_ed.encode(), bytes(32), b'ssh:')} yubikey"
    assert audit.judge_key_line(line, POLICY).label == "ED25519-SK"
    assert audit.judge_key_line(line, POLICY).usable


@KEYGEN
def test_read_keys_and_has_authorized_key_use_the_policy(real_keys: dict[str, str], tmp_path: Path) -> None:
    weak = tmp_path / "weak"
    weak.write_text(f"# old keys\n{real_keys['rsa2048']}\n{real_keys['ecdsa']}\n")
    good = tmp_path / "good"
    good.write_text(real_keys["ed25519"] + "\n")
    assert [(k.line, k.usable) for k in audit.read_keys([str(weak)], POLICY)] == [(2, False), (3, False)]
    assert audit.has_authorized_key([str(weak)], POLICY) is False
    assert audit.has_authorized_key([str(weak)]) is True  # no policy given: any parsable key, as before
    assert audit.has_authorized_key([str(weak), str(good)], POLICY) is True


def keyed_admin(lines: list[str], tmp_path: Path, password: bool = False) -> Any:
    path = tmp_path / "authorized_keys"
    path.write_text("\n".join(lines) + "\n")
    keys = tuple(audit.read_keys([str(path)], POLICY))
    usable = any(k.usable for k in keys)
    return Account("ops", 1000, password, usable, ("ops", "sudo"), "ops", keys, (str(path),))


def plan_for(admin: Any, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "admin": "ops", "allow_users": [], "allow_groups": [], "exempt": [], "permit_root_login": "no",
        "password_authentication": False, "ssh_session": True, "policy": POLICY,
    }
    args.update(overrides)
    return dict(audit.plan([ROOT_ACCOUNT, admin], **args))


@KEYGEN
@pytest.mark.parametrize("password_authentication", [False, True])
@pytest.mark.parametrize("names", [["rsa2048"], ["ecdsa"], ["rsa2048", "ecdsa"]])
def test_admin_with_only_refused_keys_is_stopped_with_the_key_and_the_fix(
        real_keys: dict[str, str], tmp_path: Path, names: list[str], password_authentication: bool) -> None:
    admin = keyed_admin([real_keys[n] for n in names], tmp_path, password=True)
    [error] = plan_for(admin, password_authentication=password_authentication)["errors"]
    assert error.startswith("Refusing to change sshd: the admin account 'ops' would be locked out")
    for name in names:
        verdict = audit.judge_key_line(real_keys[name], POLICY)
        assert f"{name}@test" in error and verdict.fingerprint in error
        assert f"{verdict.label} {verdict.bits} bits" in error
    assert "ssh-keygen -t ed25519" in error and str(tmp_path / "authorized_keys") in error
    assert "at least 3072 bits" in error and "Nothing was changed." in error


@KEYGEN
@pytest.mark.parametrize("names", [["ed25519"], ["rsa3072"], ["rsa2048", "ed25519"]])
def test_admin_with_an_accepted_key_passes(real_keys: dict[str, str], tmp_path: Path,
                                           names: list[str]) -> None:
    result = plan_for(keyed_admin([real_keys[n] for n in names], tmp_path))
    assert result["errors"] == [] and result["password_offenders"] == []


@KEYGEN
def test_the_key_this_run_uses_must_be_accepted(real_keys: dict[str, str], tmp_path: Path) -> None:
    admin = keyed_admin([real_keys["rsa2048"], real_keys["ed25519"]], tmp_path)
    session = audit.judge_key_line(real_keys["rsa2048"], POLICY).fingerprint
    [error] = plan_for(admin, session_key=session)["errors"]
    assert "the key this run logs in with would be refused" in error and session in error
    ok = audit.judge_key_line(real_keys["ed25519"], POLICY).fingerprint
    assert plan_for(admin, session_key=ok)["errors"] == []
    assert plan_for(admin, session_key="SHA256:not-in-the-file")["errors"] == []


@KEYGEN
def test_password_offender_with_refused_keys_says_which(real_keys: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "carol_keys"
    path.write_text(real_keys["ecdsa"] + "\n")
    keys = tuple(audit.read_keys([str(path)], POLICY))
    carol = Account("carol", 1001, True, False, ("carol",), "carol", keys, (str(path),))
    result = dict(audit.plan([ROOT_ACCOUNT, ADMIN, carol], admin="ops", allow_users=[], allow_groups=[],
                             exempt=[], permit_root_login="no", password_authentication=False,
                             ssh_session=True, policy=POLICY))
    assert result["password_offenders"] == ["carol"]
    assert "ecdsa@test" in result["offender_notes"]["carol"]


# --- Port moves (finding 3) -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("new", "current", "session", "proven", "ports", "dropped"),
    [
        (22, [22], 22, False, (22,), ()),  # no move
        (2200, [22], 22, False, (2200, 22), ()),  # session on the old port: keep it
        (2200, [22, 2200], 22, True, (2200, 22), ()),  # proven, but this run still uses 22
        (2200, [22, 2200], 2200, False, (2200,), (22,)),  # this run came in on 2200: drop 22
        (2300, [22, 2200], 22, False, (2300, 22), (2200,)),  # another old port goes, the session's stays
        (2200, [22], 0, False, (2200, 22), ()),  # no SSH session: keep until proven
        (2200, [22, 2200], 0, False, (2200, 22), ()),
        (2200, [22, 2200], 0, True, (2200,), (22,)),  # a fresh login on 2200 worked
        (2200, [], 0, False, (2200,), ()),  # sshd not configured yet
    ],
)
def test_plan_ports(new: int, current: list[int], session: int, proven: bool,
                    ports: tuple[int, ...], dropped: tuple[int, ...]) -> None:
    result = audit.plan_ports(new, current, session, proven)
    assert (result.ports, result.dropped) == (ports, dropped)
    assert result.transition is (len(ports) > 1)


def test_a_busy_new_port_is_refused_with_its_holder() -> None:
    move = audit.plan_ports(2222, [22], 22, False)
    holder = 'LISTEN 0 4096 0.0.0.0:2222 0.0.0.0:* users:(("docker-proxy",pid=812,fd=4))'
    [error] = audit.port_errors(move, {2222: [holder]})
    assert "port 2222" in error and "docker-proxy" in error and "Nothing was changed." in error
    assert audit.port_errors(move, {2222: []}) == []
    assert audit.port_errors(audit.plan_ports(22, [22, 2222], 22, False), {22: [holder]}) == []
