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


@pytest.mark.parametrize("host", ["gpu1", "gpu03", "../evil", "../../tmp/evil", "/tmp/evil", ".hidden"])
def test_add_refuses_a_host_the_inventory_does_not_have_and_writes_nothing(
        inventory: Path, key_file: Path, tmp_path: Path, host: str) -> None:
    def files() -> list[Path]:
        return sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "state"))

    before = files()
    proc = Tflab(tmp_path / "state").run("workspace", "add", host, "carol", "--uid", "2003",
                                         "--key", str(key_file), "-i", str(inventory), "--no-apply")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "is not a host of the inventory" in proc.stderr
    if host == "gpu1":
        assert "did you mean gpu01?" in proc.stderr
    assert files() == before
    assert not Path("/tmp/evil.yml").exists()


def test_host_vars_file_never_leaves_host_vars(tmp_path: Path) -> None:
    from tflab_provision.runner import ConfigError
    from tflab_provision.workspaces import host_vars_file

    (tmp_path / "host_vars").mkdir()
    assert host_vars_file(tmp_path, "gpu01", ["gpu01"]) == tmp_path / "host_vars" / "gpu01.yml"
    for host in ("../x", "a/b", ".", "..", "/abs"):
        with pytest.raises(ConfigError, match="cannot name a file"):
            host_vars_file(tmp_path, host, [host])  # even a host the inventory names so
    (tmp_path / "host_vars" / "link.yml").symlink_to(tmp_path / "elsewhere.yml")
    with pytest.raises(ConfigError, match="cannot name a file"):
        host_vars_file(tmp_path, "link", ["link"])


def test_add_with_a_key_the_workspace_sshd_refuses_is_rolled_back(inventory: Path, tmp_path: Path) -> None:
    key = tmp_path / "dave.pub"
    key.write_text("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBACzjiDdJm1Hhu2"
                   "bEYImHfJgQrvx3VT9rMUvQBO69at5Lo5WpF4GxTJk92u8HERo2a5rgB/6w9rSIQHueZJr6BM= dave@yubikey\n")
    before = (inventory / "host_vars" / "gpu01.yml").read_text()
    proc = Tflab(tmp_path / "state").run("workspace", "add", "gpu01", "dave", "--uid", "2004",
                                         "--key", str(key), "-i", str(inventory), "--no-apply")
    assert proc.returncode == 1
    assert "ssh-keygen -t ed25519" in " ".join(proc.stderr.split())
    assert (inventory / "host_vars" / "gpu01.yml").read_text() == before
