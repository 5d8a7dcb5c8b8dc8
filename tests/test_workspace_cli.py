"""`tflab workspace add|remove|list` edit the inventory safely (no host contacted with --no-apply)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import Tflab

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2bX1uQy7p3Yv0mJ8s5k2T9cR4wE6nH1aL0dF3gV7s carol@lab"


@pytest.fixture
def inventory(tmp_path: Path, project_root: Path) -> Path:
    target = tmp_path / "inv"
    shutil.copytree(project_root / "inventory" / "example", target)
    return target


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "carol.pub"
    path.write_text(KEY + "\n")
    return path


def test_add_keeps_comments_and_allocates_ports(inventory: Path, key_file: Path, tmp_path: Path) -> None:
    tflab = Tflab(tmp_path / "state")
    before = (inventory / "host_vars" / "gpu01.yml").read_text()
    proc = tflab.run("workspace", "add", "gpu01", "carol", "--uid", "2003", "--gpus", "0",
                     "--key", str(key_file), "-i", str(inventory), "--no-apply")
    assert proc.returncode == 0, proc.stderr
    after = (inventory / "host_vars" / "gpu01.yml").read_text()
    assert after.startswith(before.rstrip("\n").rsplit("\n", 2)[0])  # untouched prefix, comments kept
    assert KEY in after
    proc = tflab.run("workspace", "list", "-i", str(inventory), "--json")
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["carol"]["ssh_port"] == 22003 and rows["carol"]["jupyter_port"] == 28003
    assert rows["carol"]["ssh"] == "ssh -p 22003 carol@192.0.2.11"


def test_add_that_breaks_validation_is_rolled_back(inventory: Path, key_file: Path, tmp_path: Path) -> None:
    tflab = Tflab(tmp_path / "state")
    before = (inventory / "host_vars" / "gpu01.yml").read_text()
    proc = tflab.run("workspace", "add", "gpu01", "carol", "--uid", "2001", "--key", str(key_file),
                     "-i", str(inventory), "--no-apply")
    assert proc.returncode == 1
    assert "share uid 2001" in proc.stderr
    assert (inventory / "host_vars" / "gpu01.yml").read_text() == before


def test_remove_marks_absent_and_purge_needs_confirmation(inventory: Path, tmp_path: Path) -> None:
    tflab = Tflab(tmp_path / "state")
    proc = tflab.run("workspace", "remove", "gpu01", "bob", "--purge", "-i", str(inventory), "--no-apply")
    assert proc.returncode == 1 and "--yes-delete-data" in proc.stderr
    proc = tflab.run("workspace", "remove", "gpu01", "bob", "-i", str(inventory), "--no-apply")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(tflab.run("workspace", "list", "-i", str(inventory),
                                                       "--json").stdout)}
    assert rows["bob"]["state"] == "absent"
