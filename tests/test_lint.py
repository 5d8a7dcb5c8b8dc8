"""Static checks over the whole tree: the same linters users' CI runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("argv", [
    [str(BIN / "ruff"), "check", "."],
    [str(BIN / "mypy")],
    [str(BIN / "yamllint"), "--strict", "."],
    [str(BIN / "ansible-lint"), "--offline", "--profile", "production",
     "playbooks/", "roles/", "molecule/"],
], ids=["ruff", "mypy", "yamllint", "ansible-lint"])
def test_linter_is_clean(argv: list[str]) -> None:
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False,
                          env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home()),
                               "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")})
    assert proc.returncode == 0, f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
