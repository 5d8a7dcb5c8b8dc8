"""Roles that other roles include must have no handlers.

Ansible sends a notification to the handler of that name loaded *last*. `include_role` loads a
copy of the included role's handlers that carries the include's own conditions, so the included
role's own notifications can land on that copy and be skipped where the includer does not run
(the front door's nginx on the log host was never reloaded this way; roles/lab_ca exists for it).
The first test shows that behaviour on two local hosts; the second keeps every role out of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "handler_shadowing"
ANSIBLE_PLAYBOOK = shutil.which(
    "ansible-playbook", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
)
INCLUDE_ACTIONS = {"include_role", "import_role",
                   "ansible.builtin.include_role", "ansible.builtin.import_role"}


@pytest.mark.skipif(ANSIBLE_PLAYBOOK is None, reason="ansible-playbook is not installed")
def test_an_included_roles_handlers_shadow_its_own_notifications(tmp_path: Path) -> None:
    config = tmp_path / "ansible.cfg"  # Ansible's defaults, nothing of the project's
    config.write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(FIXTURE / "roles"), ANSIBLE_CONFIG=str(config),
               ANSIBLE_NOCOLOR="1")
    markers = tmp_path / "reloaded"
    markers.mkdir()
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(FIXTURE / "inventory.ini"), str(FIXTURE / "play.yml"),
                           "-e", f"marker_dir={markers}",
                           "-e", f"ansible_python_interpreter={sys.executable}"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The positive control: where the includer ran, the handler ran.
    assert (markers / "first").read_text() == "reloaded", proc.stdout
    # Where it did not, the door's own change was never followed by its handler.
    assert not (markers / "second").exists(), (
        "Ansible now runs the includer-independent handler: the rule below may be relaxed\n" + proc.stdout)


def included_roles(role_dir: Path) -> set[str]:
    """Roles that role_dir's tasks include or import, and its meta dependencies."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in INCLUDE_ACTIONS and isinstance(value, dict) and "name" in value:
                    names.add(str(value["name"]))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in sorted((role_dir / "tasks").glob("*.yml")) + sorted((role_dir / "handlers").glob("*.yml")):
        walk(yaml.safe_load(path.read_text()))
    meta = role_dir / "meta" / "main.yml"
    if meta.exists():
        for dep in (yaml.safe_load(meta.read_text()) or {}).get("dependencies") or []:
            names.add(str(dep["role"] if isinstance(dep, dict) else dep))
    return names - {role_dir.name}


def has_handlers(role_dir: Path) -> bool:
    return any(yaml.safe_load(path.read_text()) for path in (role_dir / "handlers").glob("*.yml"))


def test_no_role_that_another_role_includes_has_handlers() -> None:
    roles = sorted(p for p in (REPO / "roles").iterdir() if (p / "tasks").is_dir())
    included = {name: sorted(r.name for r in roles if name in included_roles(r)) for r in roles
                for name in included_roles(r)}
    # The scan itself: the shared roles are found (else this test would pass on nothing).
    assert {"lab_ca", "ssh_crypto_policy"} <= set(included), included
    offenders = {name: by for name, by in included.items() if has_handlers(REPO / "roles" / name)}
    assert not offenders, (
        f"these roles are included by others but have handlers, which shadow their own notifications: "
        f"{offenders}; move the shared tasks into a handler-less role (as roles/lab_ca)")
