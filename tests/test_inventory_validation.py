"""A corpus of bad inventories: each fails validation with its message and contacts no host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Tflab

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "inventories" / "bad_cases.yml").read_text())


def write_inventory(root: Path, case: dict[str, Any], port: int) -> Path:
    inv = root / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "host_vars").mkdir()
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"counted": {
        "ansible_host": "127.0.0.1", "ansible_port": port, "ansible_user": "nobody"}}}}))
    base = {"tflab_admin_cidrs": ["127.0.0.0/8"]}
    if "raw_group_vars" in case:
        (inv / "group_vars" / "all.yml").write_text(case["raw_group_vars"])
    else:
        (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump({**base, **case.get("group_vars", {})}))
    if "host_vars" in case:
        (inv / "host_vars" / "counted.yml").write_text(yaml.safe_dump(case["host_vars"]))
    return inv


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 20
    assert len({c["id"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_inventory_is_refused_before_any_connection(
        case: dict[str, Any], tmp_path: Path, connection_counter: tuple[int, list[object]]) -> None:
    port, connections = connection_counter
    inventory = write_inventory(tmp_path, case, port)
    tflab = Tflab(tmp_path / "state")
    if "facts" in case:  # what an earlier run cached about the host
        facts = tflab.state_dir / "facts"
        facts.mkdir(parents=True)
        (facts / "counted").write_text(json.dumps(case["facts"]))
    proc = tflab.run("apply", "-i", str(inventory))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    flat = " ".join(proc.stderr.split())
    assert case["expect"] in flat, proc.stderr
    assert connections == []


def test_the_example_inventory_is_valid(tflab: Tflab, project_root: Path) -> None:
    proc = tflab.run("apply", "-i", str(project_root / "inventory" / "example"), "--validate-only")
    assert proc.returncode == 0, proc.stderr
    assert "gpu01" in proc.stdout and "gpu02" in proc.stdout


# --- -e vars files: the same schema, merged over the host vars (review finding 11) ---------

def write_vars(root: Path, data: dict[str, Any], name: str = "vars.yml") -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


ECDSA = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBACzjiDdJm1Hhu2bEYImHfJg"
         "Qrvx3VT9rMUvQBO69at5Lo5WpF4GxTJk92u8HERo2a5rgB/6w9rSIQHueZJr6BM= dave@yubikey")


@pytest.mark.parametrize(("data", "expect"), [
    ({"tflab_workspaces": [{"name": "dave", "uid": 2004, "authorized_keys": [ECDSA]}]},
     "vars.yml: tflab_workspaces[0].authorized_keys[0]: ecdsa-sha2-nistp256 keys are refused"),
    ({"tflab_workspace": []},
     "vars.yml: tflab_workspace: unknown tflab setting; did you mean tflab_workspaces?"),
    ({"tflab_workspaces": [{"name": "alice", "uid": 2001, "jupyter_password_hash": "hunter2"}]},
     "vars.yml: tflab_workspaces[0].jupyter_password_hash: must be an argon2 hash"),
    ({"docker_engine_source": "snap"}, "vars.yml: docker_engine_source: must be one of"),
    # Merged over the host's variables, where the file wins: the port clashes with the host's SSH.
    ({"tflab_workspaces": [{"name": "alice", "uid": 2001, "ssh_port": 2200}]},
     "vars.yml (host counted): tflab_workspaces: workspace 'alice': ssh_port 2200 is used by the host"),
    # A role variable given with -e beats site.yml's mapping from tflab_workspaces.
    ({"tf_workspace_users": [{"name": "alice", "uid": 2001, "datasets": [{"src": "/run", "dest": "/d"}]}]},
     "vars.yml (host counted): tf_workspace_users: workspace 'alice': dataset '/run': the source is /run"),
])
def test_vars_files_are_validated_like_the_inventory(
        data: dict[str, Any], expect: str, tmp_path: Path,
        connection_counter: tuple[int, list[object]]) -> None:
    port, connections = connection_counter
    inventory = write_inventory(tmp_path, {"group_vars": {"sshd_hardening_port": 2200}, "host_vars": {
        "tflab_workspaces": [{"name": "alice", "uid": 2001}]}}, port)
    vars_file = write_vars(tmp_path, data)
    proc = Tflab(tmp_path / "state").run("apply", "-i", str(inventory), "-e", str(vars_file))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert expect in " ".join(proc.stderr.split()), proc.stderr
    assert connections == []


def test_later_vars_file_wins_and_vault_files_are_read_with_the_password(
        tmp_path: Path, project_root: Path) -> None:
    from ansible.parsing.vault import VaultLib, VaultSecret

    from tflab_provision.inventory import InventoryInvalid
    from tflab_provision.runner import Project, RunRequest, validate_request

    def alice(**extra: Any) -> dict[str, Any]:
        return {"tflab_workspaces": [{"name": "alice", "uid": 2001, **extra}]}

    inventory = write_inventory(tmp_path, {"host_vars": alice()}, 22)
    bad = write_vars(tmp_path, alice(ssh_port=40000), "a.yml")
    good = write_vars(tmp_path, alice(ssh_port=23000), "b.yml")
    project = Project(project_root)
    validate_request(RunRequest("site.yml", (inventory,), vars_files=(bad, good)), project)
    with pytest.raises(InventoryInvalid, match="ssh_port 40000 is in the host's ephemeral port range"):
        validate_request(RunRequest("site.yml", (inventory,), vars_files=(good, bad)), project)

    password = tmp_path / "vault-pass"
    password.write_text("s3cret\n")
    password.chmod(0o600)
    vault = tmp_path / "vault.yml"
    vault.write_bytes(VaultLib([("default", VaultSecret(b"s3cret"))]).encrypt(bad.read_text()))
    vault.chmod(0o644)  # encrypted files may be readable
    request = RunRequest("site.yml", (inventory,), vars_files=(vault,), vault_password_file=password)
    with pytest.raises(InventoryInvalid, match=r"vault.yml \(host counted\): tflab_workspaces: .*port 40000"):
        validate_request(request, project)


def test_validate_only_and_workspace_list_read_vars_files(
        tmp_path: Path, connection_counter: tuple[int, list[object]]) -> None:
    port, connections = connection_counter
    inventory = write_inventory(tmp_path, {"group_vars": {}, "host_vars": {
        "tflab_workspaces": [{"name": "alice", "uid": 2001}]}}, port)
    bad = write_vars(tmp_path, {"tflab_workspaces": [{"name": "alice", "uid": 2001, "ssh_port": 8888}]})
    for command in (("apply", "--validate-only"), ("workspace", "list")):
        proc = Tflab(tmp_path / "state").run(*command, "-i", str(inventory), "-e", str(bad))
        assert proc.returncode == 1, (command, proc.stdout + proc.stderr)
        assert "vars.yml" in proc.stderr and "8888" in proc.stderr, (command, proc.stderr)
    assert connections == []


# --- the HTTPS front door and the lab CA: shared settings, checked like the others ------------

ALICE = {"tflab_workspaces": [{"name": "alice", "uid": 2001}]}


@pytest.mark.parametrize(("group_vars", "host_vars", "expect"), [
    ({"tflab_https_port": 70000}, ALICE,
     "group_vars/all.yml: tflab_https_port: Input should be less than or equal to 65535"),
    ({"tflab_https_port": 0}, ALICE, "tflab_https_port: Input should be greater than or equal to 1"),
    ({"tflab_https_port": "443"}, ALICE, "tflab_https_port: Input should be a valid integer"),
    ({"tflab_https_port": 8888}, ALICE, "tflab_https_port: 8888 is the workspace container's internal "
                                        "Jupyter port"),
    # The host's own services: its SSH port, and other inbound services the firewall admits.
    ({"sshd_hardening_port": 2200, "tflab_https_port": 2200}, ALICE,
     "host counted: tflab_https_port: 2200 is the host's SSH port (sshd_hardening_port)"),
    ({"tflab_https_port": 22}, ALICE, "host counted: tflab_https_port: 22 is the host's SSH port"),
    ({"firewall_allowed_inbound": [{"port": 443, "proto": "tcp", "cidrs": ["10.0.0.0/8"],
                                    "comment": "node exporter"}]}, ALICE,
     "host counted: tflab_https_port: 443 is firewall_allowed_inbound[0] (node exporter)"),
    # A workspace port, explicit or allocated from the uid, on the front door's port.
    ({"tflab_https_port": 8443}, {"tflab_workspaces": [{"name": "alice", "uid": 2001, "jupyter_port": 8443}]},
     "workspace 'alice': jupyter_port 8443 is used by the host: the HTTPS front door (tflab_https_port)"),
    ({"tflab_https_port": 22001}, ALICE,
     "workspace 'alice': ssh_port 22001 (allocated: tf_workspace_ssh_port_base + uid - "
     "tf_workspace_uid_base) is used by the host: the HTTPS front door (tflab_https_port)"),
    # The plain-HTTP redirect (0: none) takes a port too.
    ({"tflab_http_port": 8443, "tflab_https_port": 8443}, ALICE,
     "host counted: tflab_http_port: 8443 is the HTTPS front door (tflab_https_port)"),
    ({"tflab_http_port": 28001}, ALICE, "workspace 'alice': jupyter_port 28001 (allocated: "
     "tf_workspace_jupyter_port_base + uid - tf_workspace_uid_base) is used by the host: the front door's "
     "redirect to HTTPS (tflab_http_port)"),
    ({"tflab_http_port": -1}, ALICE, "tflab_http_port: Input should be greater than or equal to 0"),
    ({"tflab_management_cidrs": ["10.0.0.1/8"]}, ALICE,
     "tflab_management_cidrs[0]: '10.0.0.1/8' is not a network in CIDR form"),
    ({"tflab_management_cidrs": ["bmc-lan"]}, ALICE,
     "tflab_management_cidrs[0]: 'bmc-lan' is not a network in CIDR form"),
    ({}, {**ALICE, "tflab_public_name": "https://gpu01.lab/"},
     "host_vars/counted.yml: tflab_public_name: 'https://gpu01.lab/' is not a host name or IP address"),
    ({"tflab_tls_extra_names": ["gpu01.lab", "gpu 01"]}, ALICE,
     "tflab_tls_extra_names[1]: 'gpu 01' is not a host name or IP address"),
    ({"tflab_ca_dir": "lab-ca"}, ALICE, "tflab_ca_dir: 'lab-ca' must be an absolute path on the controller"),
    ({"tflab_ca_dir": "{{ lookup('env', 'HOME') }}/ca"}, ALICE, "tflab_ca_dir: must be a literal path"),
    ({"tflab_https_prot": 8443}, ALICE,
     "tflab_https_prot: unknown tflab setting; did you mean tflab_https_port?"),
])
def test_front_door_settings_are_validated(
        group_vars: dict[str, Any], host_vars: dict[str, Any], expect: str, tmp_path: Path,
        connection_counter: tuple[int, list[object]]) -> None:
    port, connections = connection_counter
    inventory = write_inventory(tmp_path, {"group_vars": group_vars, "host_vars": host_vars}, port)
    proc = Tflab(tmp_path / "state").run("apply", "-i", str(inventory))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert expect in " ".join(proc.stderr.split()), proc.stderr
    assert connections == []


def test_front_door_settings_are_known(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, {"group_vars": {
        "tflab_https_port": 8443, "tflab_http_port": 0, "tflab_ca_dir": "~/lab-ca",
        "tflab_tls_extra_names": ["*.lab.example.org"],
        "tflab_management_cidrs": ["10.10.0.0/16", "fd00:10::/48"]},
        "host_vars": {**ALICE, "tflab_public_name": "gpu01.lab.example.org",
                      "tflab_tls_extra_names": ["gpu01", "192.0.2.11", "fd00::11"]}}, 22)
    proc = Tflab(tmp_path / "state").run("apply", "-i", str(inventory), "--validate-only")
    assert proc.returncode == 0, proc.stderr
