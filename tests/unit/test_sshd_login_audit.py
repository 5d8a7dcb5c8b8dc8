"""sshd_hardening's lockout guard: who may log in, and who would lose access."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
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
def test_has_authorized_key_uses_ssh_keygen(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    keyfile = tmp_path / "authorized_keys"
    keyfile.write_text('from="10.0.0.0/8" ' + (tmp_path / "k.pub").read_text())
    empty = tmp_path / "empty"
    empty.write_text("# no keys\n")
    assert audit.has_authorized_key([str(empty), str(keyfile)]) is True
    assert audit.has_authorized_key([str(empty), str(tmp_path / "missing")]) is False
