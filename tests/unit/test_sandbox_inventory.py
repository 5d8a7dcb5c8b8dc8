"""Sandbox inventories: one file per prefix (CI once lost a fleet's inventory to another sandbox)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tflab_provision.sandbox import SandboxHost, inventory_path, write_inventory


def hosts_in(path: Path) -> dict[str, dict[str, object]]:
    return yaml.safe_load(path.read_text())["all"]["children"]["sandbox"]["hosts"]


def test_two_prefixes_keep_their_own_inventories(tmp_path: Path) -> None:
    (tmp_path / "sandbox").mkdir()
    key = tmp_path / "sandbox" / "id_ed25519"
    fleet = write_inventory(tmp_path, "tflab-pt", [SandboxHost("tflab-pt-1", 40001),
                                                   SandboxHost("tflab-pt-2", 40002)], key)
    plan = write_inventory(tmp_path, "tflab-plan", [SandboxHost("tflab-plan-1", 40003)], key)
    assert fleet != plan
    assert fleet == inventory_path(tmp_path, "tflab-pt")
    assert hosts_in(fleet) == {"tflab-pt-1": {"ansible_host": "127.0.0.1", "ansible_port": 40001},
                               "tflab-pt-2": {"ansible_host": "127.0.0.1", "ansible_port": 40002}}
    assert list(hosts_in(plan)) == ["tflab-plan-1"]


def test_host_keys_are_pinned_and_a_reused_port_forgets_the_old_key(tmp_path: Path) -> None:
    (tmp_path / "sandbox").mkdir()
    key = tmp_path / "sandbox" / "id_ed25519"
    old = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOldOldOldOldOldOldOldOldOldOldOldOldOldOldOld"
    new = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINewNewNewNewNewNewNewNewNewNewNewNewNewNewNew"
    write_inventory(tmp_path, "tflab-pt", [SandboxHost("tflab-pt-1", 40001, host_key=old)], key)
    path = write_inventory(tmp_path, "tflab-pt", [SandboxHost("tflab-pt-1", 40001, host_key=new)], key)
    known_hosts = tmp_path / "sandbox" / "known_hosts"
    assert known_hosts.read_text().splitlines() == [f"[127.0.0.1]:40001 {new}"]
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    group_vars = yaml.safe_load(path.read_text())["all"]["children"]["sandbox"]["vars"]
    ssh_args = group_vars["ansible_ssh_common_args"]
    # Known keys only: nothing is trusted on first use.
    assert "StrictHostKeyChecking=yes" in ssh_args and f"UserKnownHostsFile={known_hosts}" in ssh_args
