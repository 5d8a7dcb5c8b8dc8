"""Port allocation and firewall rules for workspaces (playbooks/filter_plugins/tf_workspace.py).

These ports cross a boundary: the firewall role and the tf_workspace containers must agree.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "playbooks" / "filter_plugins" / "tf_workspace.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tf_workspace_filters", PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tw = _load()


def ws(name: str, uid: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "uid": uid, **extra}


def test_ports_are_allocated_from_the_uid() -> None:
    out = tw.tf_workspace_ports([ws("alice", 2001), ws("bob", 2002)])
    assert [(w["ssh_port"], w["jupyter_port"]) for w in out] == [(22001, 28001), (22002, 28002)]


def test_allocation_is_deterministic_whatever_the_order() -> None:
    one = tw.tf_workspace_ports([ws("alice", 2001), ws("bob", 2007)])
    two = tw.tf_workspace_ports([ws("bob", 2007), ws("alice", 2001)])
    assert {w["name"]: w["ssh_port"] for w in one} == {w["name"]: w["ssh_port"] for w in two}


def test_explicit_ports_are_kept_and_input_is_not_mutated() -> None:
    given = [ws("alice", 2001, ssh_port=23001, jupyter_port="23002")]
    out = tw.tf_workspace_ports(given)
    assert (out[0]["ssh_port"], out[0]["jupyter_port"]) == (23001, 23002)
    assert "ssh_port" in given[0] and given[0]["jupyter_port"] == "23002"
    bare = [ws("bob", 2002)]
    tw.tf_workspace_ports(bare)
    assert "ssh_port" not in bare[0]


def test_defaults_fill_missing_and_null_keys_and_gid_follows_uid() -> None:
    out = tw.tf_workspace_ports(
        [ws("alice", 2001, memory=None, cpus=2), ws("bob", 2002, gid=3000, state="absent")],
        defaults={"memory": "8g", "cpus": 4, "gpus": "none"},
    )
    assert out[0] == {
        "name": "alice",
        "uid": 2001,
        "gid": 2001,
        "state": "present",
        "memory": "8g",
        "cpus": 2,
        "gpus": "none",
        "ssh_port": 22001,
        "jupyter_port": 28001,
        "network_bridge": "tfws2001",
        "network_subnet": "172.30.0.16/28",
        "network_gateway": "172.30.0.17",
        "network_address": "172.30.0.18",
    }
    assert (out[1]["gid"], out[1]["state"], out[1]["memory"]) == (3000, "absent", "8g")
    assert "network_address" not in out[1]  # absent: only its name is needed, to remove it


def test_custom_bases() -> None:
    out = tw.tf_workspace_ports(
        [ws("alice", 5003)], ssh_base=10000, jupyter_base=11000, uid_base=5000, range_size=500
    )
    assert (out[0]["ssh_port"], out[0]["jupyter_port"]) == (10003, 11003)


@pytest.mark.parametrize(
    ("workspaces", "message"),
    [
        ([ws("alice", 2001, ssh_port=22002), ws("bob", 2002)], "port 22002 is used twice"),
        ([ws("alice", 2001, jupyter_port=22001)], "port 22001 is used twice"),
        ([ws("alice", 2001), ws("bob", 2001)], "share uid 2001"),
        ([ws("alice", 2001), ws("alice", 2002)], "listed twice"),
        ([ws("alice", 999)], "below 1000"),
        ([ws("alice", 2001, gid=0)], "gid 0 is below"),
        ([ws("alice", 4000)], "outside the allocatable range"),
        ([ws("alice", 1500)], "outside the allocatable range"),
        ([ws("Alice", 2001)], "must be a Linux user name"),
        ([ws("root", 2001)], "reserved"),
        ([ws("prometheus", 2001)], "reserved"),  # the front door's /prometheus/ on a monitoring host
        ([{"name": "alice"}], "uid is required"),
        ([ws("alice", "x")], "must be an integer"),
        ([ws("alice", 2001, ssh_port=70000)], "not a valid port"),
        ([ws("alice", 2001, state="gone")], "state must be present or absent"),
        ("alice", "must be a list"),
    ],
)
def test_invalid_inventories_fail_with_the_field_to_fix(workspaces: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        tw.tf_workspace_ports(workspaces)


def test_overlapping_ranges_are_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="overlap"):
        tw.tf_workspace_ports([ws("alice", 2001)], ssh_base=22000, jupyter_base=22500)


def test_absent_workspaces_do_not_hold_ports_or_uids() -> None:
    out = tw.tf_workspace_ports(
        [
            ws("old", 2002, state="absent"),
            ws("new", 2002, ssh_port=22100, jupyter_port=28100),
            ws("bob", 2003, ssh_port=22002),
        ]
    )
    assert [w["ssh_port"] for w in out] == [22002, 22100, 22002]


def test_firewall_rules_use_own_cidrs_then_defaults_and_skip_absent() -> None:
    rules = tw.tf_workspace_firewall_rules(
        [
            ws("alice", 2001, allowed_cidrs=["10.0.0.0/24"]),
            ws("bob", 2002),
            ws("carol", 2003, state="absent"),
            ws("dave", 2004, allowed_cidrs=[]),
        ],
        ["192.168.1.0/24"],
    )
    rule = {"proto": "tcp", "container_port": 2222}
    assert rules == [
        {**rule, "port": 22001, "cidrs": ["10.0.0.0/24"], "comment": "tflab workspace alice ssh",
         "bridge": "tfws2001"},
        {**rule, "port": 22002, "cidrs": ["192.168.1.0/24"], "comment": "tflab workspace bob ssh",
         "bridge": "tfws2002"},
        {**rule, "port": 22004, "cidrs": [], "comment": "tflab workspace dave ssh", "bridge": "tfws2004"},
    ]


def test_web_routes_point_at_each_workspace_network_with_its_cidrs() -> None:
    routes = tw.tf_workspace_web_routes(
        [ws("alice", 2001, allowed_cidrs=["10.0.0.0/24"]), ws("bob", 2002),
         ws("carol", 2003, state="absent")],
        ["192.168.1.0/24"],
    )
    assert routes == [
        {"name": "alice", "upstream": "http://172.30.0.18:8888",
         "tensorboard_upstream": "http://172.30.0.18:6006", "allowed_cidrs": ["10.0.0.0/24"]},
        {"name": "bob", "upstream": "http://172.30.0.34:8888",
         "tensorboard_upstream": "http://172.30.0.34:6006", "allowed_cidrs": ["192.168.1.0/24"]},
    ]


def test_networks_are_disjoint_blocks_of_the_pool() -> None:
    out = tw.tf_workspace_ports([ws("alice", 2000), ws("bob", 2999)], network_pool="10.99.0.0/16",
                                network_prefix=29)
    assert [(w["network_subnet"], w["network_address"]) for w in out] == [
        ("10.99.0.0/29", "10.99.0.2"), ("10.99.31.56/29", "10.99.31.58")]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"network_pool": "10.99.0.0/22"},
         r"uid 2100 has no network in tf_workspace_network_pool 10\.99\.0\.0/22"),
        ({"network_pool": "nonsense"}, "is not an IPv4 network"),
        ({"network_prefix": 30}, "must be between"),
    ],
)
def test_network_pool_too_small_or_invalid_is_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        tw.tf_workspace_ports([ws("alice", 2100)], **settings)


def test_firewall_rules_pass_port_settings_through() -> None:
    rules = tw.tf_workspace_firewall_rules(
        [ws("alice", 5001)], [], uid_base=5000, ssh_base=30000, jupyter_base=31000
    )
    assert [(r["port"], r["bridge"]) for r in rules] == [(30001, "tfws5001")]


def test_firewall_rules_refuse_a_string_cidr() -> None:
    with pytest.raises(AnsibleFilterError, match="allowed_cidrs must be a list"):
        tw.tf_workspace_firewall_rules([ws("alice", 2001, allowed_cidrs="10.0.0.0/8")])


def test_dataset_mounts_are_read_only_binds_with_default_targets() -> None:
    assert tw.tf_workspace_dataset_mounts(
        ["/data/imagenet/", {"src": "/mnt/coco", "dest": "/data/coco"}, {"src": "/srv/x", "dest": None}]
    ) == [
        {"type": "bind", "source": "/data/imagenet", "target": "/datasets/imagenet", "read_only": True},
        {"type": "bind", "source": "/mnt/coco", "target": "/data/coco", "read_only": True},
        {"type": "bind", "source": "/srv/x", "target": "/datasets/x", "read_only": True},
    ]


@pytest.mark.parametrize(
    ("datasets", "message"),
    [
        (["/var/run"], "Docker socket"),
        (["/run/docker.sock"], "Docker socket"),
        (["/"], "Docker socket"),
        ([{"src": "/var/run/docker.sock", "dest": "/d"}], "Docker socket"),
        (["data/x"], "absolute path on the host"),
        ([{"src": "/data/x", "dest": "/etc/x"}], "system path"),
        ([{"src": "/data/x", "dest": "/home/alice"}], "system path"),
        ([{"src": "/data/x", "dest": "relative"}], "must be an absolute path"),
        (["/a/x", "/b/x"], "two datasets are mounted at '/datasets/x'"),
        ([{"dest": "/d"}], "must be a path or a dict"),
        ("/data/x", "must be a list"),
    ],
)
def test_dataset_mounts_refuse_dangerous_or_ambiguous_entries(datasets: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        tw.tf_workspace_dataset_mounts(datasets)


def test_filter_module_exposes_the_filters() -> None:
    assert set(tw.FilterModule().filters()) == {
        "tf_workspace_ports",
        "tf_workspace_firewall_rules",
        "tf_workspace_web_routes",
        "tf_workspace_dataset_mounts",
        "tf_workspace_problems",
    }


# --- finding 7: the firewall opens exactly the ports the containers publish -------------------

NON_DEFAULT = {"ssh_base": 32000, "jupyter_base": 38000, "uid_base": 10000, "range_size": 500}


def test_firewall_rules_equal_published_ports_with_non_default_bases() -> None:
    users = [ws("alice", 10001), ws("bob", 10002, ssh_port=31000)]
    settings = {**NON_DEFAULT, "ephemeral_ports": "40000-60999"}
    published = tw.tf_workspace_ports(users, **settings)
    rules = tw.tf_workspace_firewall_rules(users, [], **settings)
    # Only SSH is published (Jupyter is behind the front door), on each workspace's own bridge.
    assert [(r["port"], r["bridge"]) for r in rules] == [
        (w["ssh_port"], w["network_bridge"]) for w in published]
    assert [r["port"] for r in rules] == [32001, 31000]


def test_non_default_bases_in_linux_default_ephemeral_range_are_refused() -> None:
    with pytest.raises(AnsibleFilterError, match=r"jupyter_port 38001 \(allocated.*ephemeral port range "
                                                 r"32768-60999.*move tf_workspace_jupyter_port_base"):
        tw.tf_workspace_firewall_rules([ws("alice", 10001)], [], **NON_DEFAULT)


def _ansible_vars(inventory: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """site.yml's play, the tf_workspace users.yml tasks, and the variables a host of the play
    sees (role defaults of the roles it names, the play's vars, then the inventory)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import filter_loader

    filter_loader.add_directory(str(PLUGIN.parent))

    def load(relative: str) -> Any:
        return DataLoader().load_from_file(str(ROOT / relative), trusted_as_template=True)

    play = load("playbooks/site.yml")[0]
    tasks = {t["name"]: t for t in load("roles/tf_workspace/tasks/users.yml")}
    variables: dict[str, Any] = {}
    for role in ("ssh_crypto_policy", "sshd_hardening", "firewall", "tf_workspace"):
        variables.update(load(f"roles/{role}/defaults/main.yml"))
    variables.update(load("roles/tf_workspace/vars/main.yml"))
    variables.update(play["vars"])
    variables.update(inventory)
    return play, tasks, variables


@pytest.mark.parametrize("inventory", [
    {},
    {"tf_workspace_ssh_port_base": 32000, "tf_workspace_jupyter_port_base": 38000,
     "tf_workspace_uid_base": 10000, "tflab_ephemeral_port_range": "40000-60999"},
    {"tf_workspace_ssh_port_base": 12000, "tf_workspace_jupyter_port_base": 14000,
     "tf_workspace_uid_base": 10000, "tf_workspace_port_range_size": 2000},
], ids=["defaults", "ssh32000-jupyter38000-uid10000", "range2000"])
def test_site_yml_firewall_opens_the_ports_tf_workspace_publishes(inventory: dict[str, Any]) -> None:
    """Render site.yml's firewall_published_ports and the role's own allocation (users.yml) as
    Ansible would, from the same inventory: the ports must be the same (review finding 7)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    uid_base = inventory.get("tf_workspace_uid_base", 2000)
    inventory = {**inventory, "tflab_user_cidrs": ["10.0.0.0/8"],
                 "tflab_workspaces": [ws("alice", uid_base + 1), ws("bob", uid_base + 2, ssh_port=31000),
                                      ws("carol", uid_base + 3, state="absent")]}
    play, tasks, variables = _ansible_vars(inventory)
    roles = {r["role"]: r for r in play["roles"]}
    firewall = Templar(loader=DataLoader(), variables={**variables, **roles["firewall"]["vars"]})
    rules = firewall.template(roles["firewall"]["vars"]["firewall_published_ports"])

    role = {**variables, **roles["tf_workspace"]["vars"],
            "_tf_workspace_ip_local_port_range": {"content": base64.b64encode(b"32768\t60999\n").decode()}}
    role.update(Templar(loader=DataLoader(), variables=role).template(
        tasks["Users | Collect the settings of the port and dataset rules"]["ansible.builtin.set_fact"]))
    templar = Templar(loader=DataLoader(), variables=role)
    check = tasks["Users | Check names, UIDs, ports, keys, GPUs, datasets and the data root"]
    assert templar.template(check["vars"]["_tf_workspace_problems"]) == []
    allocate = tasks["Users | Allocate ports and fill in the defaults"]
    assert allocate.get("no_log") is True  # it carries the password hashes (review finding 18)
    published = templar.template(allocate["ansible.builtin.set_fact"]["_tf_workspace_all"])
    present = [w for w in published if w["state"] == "present"]
    assert [(r["port"], r["bridge"]) for r in rules] == [
        (w["ssh_port"], w["network_bridge"]) for w in present]
    assert len(rules) == 2


def test_filter_defaults_are_the_role_defaults() -> None:
    """site.yml and tflab leave unset settings to the filter; the role uses its own defaults."""
    import yaml

    defaults = yaml.safe_load((ROOT / "roles/tf_workspace/defaults/main.yml").read_text())
    specs = yaml.safe_load((ROOT / "roles/tf_workspace/meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    names = {"ssh_base": "tf_workspace_ssh_port_base", "jupyter_base": "tf_workspace_jupyter_port_base",
             "uid_base": "tf_workspace_uid_base", "range_size": "tf_workspace_port_range_size"}
    for arg, var in names.items():
        assert defaults[var] == options[var]["default"] == tw.DEFAULT_PORT_SETTINGS[arg], var
    assert defaults["tf_workspace_network_pool"] == options["tf_workspace_network_pool"]["default"] \
        == tw.DEFAULT_NETWORK_POOL
    assert defaults["tf_workspace_network_prefix"] == options["tf_workspace_network_prefix"]["default"] \
        == tw.DEFAULT_NETWORK_PREFIX
    firewall = yaml.safe_load((ROOT / "roles/firewall/defaults/main.yml").read_text())
    assert firewall["firewall_workspace_interfaces"] == [tw.BRIDGE_PREFIX + "+"]


def test_users_yml_sets_no_log_on_every_fact_that_carries_the_workspaces() -> None:
    import yaml

    for task in yaml.safe_load((ROOT / "roles/tf_workspace/tasks/users.yml").read_text()):
        facts = task.get("ansible.builtin.set_fact") or {}
        if any("_tf_workspace_all" in str(v) or "tf_workspace_users" in str(v) for v in facts.values()):
            assert task.get("no_log") is True, task["name"]


# --- finding 9: ports the host or the container needs ---------------------------------------

@pytest.mark.parametrize(
    ("workspace", "settings", "message"),
    [
        (ws("bob", 2002, ssh_port=2222), {}, "ssh_port 2222 is the workspace container's internal SSH port"),
        (ws("bob", 2002, jupyter_port=8888), {},
         "jupyter_port 8888 is the workspace container's internal Jupyter port.*"
         "remove jupyter_port to use the allocated port 28002"),
        (ws("bob", 2002, ssh_port=2200),
         {"reserved_ports": [{"port": 2200, "comment": "the host's SSH port (sshd_hardening_port)"}]},
         r"ssh_port 2200 is used by the host: the host's SSH port \(sshd_hardening_port\)"),
        (ws("bob", 2002, jupyter_port=9100), {"reserved_ports": [9100]},
         "jupyter_port 9100 is used by the host"),
        (ws("bob", 2002), {"reserved_ports": [22002]}, r"ssh_port 22002 \(allocated.*is used by the host"),
        (ws("bob", 2002, ssh_port=33000), {},
         "ssh_port 33000 is in the host's ephemeral port range 32768-60999"),
        (ws("bob", 2002), {"ssh_base": 40000, "jupyter_base": 42000},
         "ssh_port 40002 .*ephemeral.*move tf_workspace_ssh_port_base"),
        (ws("bob", 2002, ssh_port=23000), {"ephemeral_ports": "20000\t30000"},
         "ephemeral port range 20000-30000"),
        (ws("bob", 2002, ssh_port=23000), {"ephemeral_ports": [20000, 30000]},
         "ephemeral port range 20000-30000"),
        (ws("bob", 2002, ssh_port=1022), {}, "privileged port"),
    ],
)
def test_workspace_ports_never_take_a_port_the_host_needs(
        workspace: dict[str, Any], settings: dict[str, Any], message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        tw.tf_workspace_ports([workspace], **settings)


def test_another_ephemeral_range_frees_the_default_one() -> None:
    out = tw.tf_workspace_ports([ws("bob", 2002, ssh_port=33000)], ephemeral_ports="50000-60999")
    assert out[0]["ssh_port"] == 33000


def test_absent_workspaces_keep_no_host_port_check() -> None:
    out = tw.tf_workspace_ports([ws("bob", 2002, ssh_port=2222, state="absent")], reserved_ports=[2222])
    assert out[0]["ssh_port"] == 2222


@pytest.mark.parametrize("value", ["a-b", "60999-32768", [1], "0-10", {"low": 1}])
def test_bad_ephemeral_ranges_are_refused(value: Any) -> None:
    with pytest.raises(AnsibleFilterError, match="ephemeral port range"):
        tw.tf_workspace_ports([ws("bob", 2002)], ephemeral_ports=value)


# --- finding 14 and the admin: names of existing accounts ------------------------------------

@pytest.mark.parametrize("name", ["games", "man", "sync", "_apt", "messagebus", "systemd-network", "ubuntu",
                                  "debian", "docker", "tflab", "www-data", "nobody", "sshd"])
def test_names_of_image_and_host_accounts_are_refused(name: str) -> None:
    with pytest.raises(AnsibleFilterError, match="account of the OS image or host"):
        tw.tf_workspace_ports([ws(name, 2001)])


def test_the_admin_account_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="the admin account"):
        tw.tf_workspace_ports([ws("labadmin", 2001)], reserved_names=["labadmin", ""])


# --- finding 13: keys the workspace sshd accepts ----------------------------------------------

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHlY4mGhY1xyT4w0Ql1pXz0kXcCn6U4Rj0Xc0xKk8Hn1 alice@laptop"


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _key(key_type: str, *fields: bytes, comment: str = "u@h") -> str:
    blob = _ssh_string(key_type.encode()) + b"".join(_ssh_string(f) for f in fields)
    return f"{key_type} {base64.b64encode(blob).decode()} {comment}"


def rsa_key(bits: int) -> str:
    modulus = (1 << (bits - 1)) | 1
    return _key("ssh-rsa", (65537).to_bytes(3, "big"), b"\0" + modulus.to_bytes(bits // 8, "big"))


@pytest.mark.parametrize("line", [
    ED25519,
    _key("sk-ssh-ed25519@openssh.com", bytes(32), b"ssh:"),
    rsa_key(3072),
    rsa_key(4096),
])
def test_keys_the_policy_accepts_pass(line: str) -> None:
    assert tw.authorized_key_problem(line) is None
    assert tw.tf_workspace_ports([ws("alice", 2001, authorized_keys=[line])])[0]["authorized_keys"] == [line]


@pytest.mark.parametrize(("line", "message"), [
    (_key("ecdsa-sha2-nistp256", b"nistp256", bytes(65)), "ecdsa-sha2-nistp256 keys are refused"),
    (_key("sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", bytes(65), b"ssh:"), "sk-ecdsa-sha2-nistp256"),
    (rsa_key(2048), "RSA key of 2048 bits.*at least 3072"),
    (rsa_key(1024), "RSA key of 1024 bits"),
    (_key("ssh-dss", b"p", b"q"), "DSA"),
    ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x", "is a 'ssh-rsa' key"),
    ("ssh-ed25519 not*base64 x", "not a valid public key"),
    (_key("ssh-ed25519", bytes(31)), "not a valid public key"),
    ("not a key", "is not an OpenSSH public key line"),
    ("ssh-ed25519", "is not an OpenSSH public key line"),
])
def test_keys_the_policy_refuses_say_why_and_how_to_fix(line: str, message: str) -> None:
    why = tw.authorized_key_problem(line)
    assert why is not None and re.search(message, why), why
    if "ecdsa" in message or "RSA" in message:
        assert "ssh-keygen -t ed25519" in why
    with pytest.raises(AnsibleFilterError, match=r"workspace 'alice': authorized_keys\[1\]: "):
        tw.tf_workspace_ports([ws("alice", 2001, authorized_keys=[ED25519, line])])


def test_key_policy_follows_the_crypto_policy_settings() -> None:
    assert "not accepted" in tw.authorized_key_problem(rsa_key(4096), accepted_algorithms=["ssh-ed25519"])
    assert "at least 8192" in tw.authorized_key_problem(rsa_key(4096), rsa_min_bits=8192)
    assert tw.authorized_key_problem(ED25519, accepted_algorithms=["ssh-ed25519"]) is None


@pytest.mark.parametrize(("key_type", "bits", "refused"), [("rsa", 2048, True), ("rsa", 3072, False),
                                                           ("ed25519", 0, False), ("ecdsa", 256, True)])
def test_keys_made_by_ssh_keygen(tmp_path: Path, key_type: str, bits: int, refused: bool) -> None:
    """Real keys (OpenSSH's client is a dependency of tflab: sandbox hosts use it too)."""
    argv = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(tmp_path / "k")]
    subprocess.run(argv + (["-b", str(bits)] if bits else []), check=True, capture_output=True)
    line = (tmp_path / "k.pub").read_text().strip()
    assert (tw.authorized_key_problem(line) is not None) is refused


# --- GPUs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("gpus", [[0, 0], [True], ["0"], [-1], "some", 1])
def test_gpu_requests_must_be_all_none_or_distinct_indices(gpus: Any) -> None:
    with pytest.raises(AnsibleFilterError, match="workspace 'alice': gpus"):
        tw.tf_workspace_ports([ws("alice", 2001, gpus=gpus)])


def test_default_gpus_are_checked_too() -> None:
    with pytest.raises(AnsibleFilterError, match="tf_workspace_default_gpus"):
        tw.tf_workspace_ports([ws("alice", 2001)], defaults={"gpus": [1, 1]})
    out = tw.tf_workspace_ports([ws("alice", 2001, gpus=[0, 2])], defaults={"gpus": "all"})
    assert out[0]["gpus"] == [0, 2]


# --- finding 11: datasets, normalised as Docker sees them ------------------------------------

@pytest.mark.parametrize(("src", "message"), [
    ("//run", "the source is /run"),
    ("/run/", "the source is /run"),
    ("/var/run/.", "the source is /var/run"),
    ("/var/../run", r"must not contain '\.\.' \(it is /run\)"),
    ("/run/containerd", "the source is inside /run"),
    ("/var/lib/docker", "the source is /var/lib/docker"),
    ("/var/lib/containerd/io", "inside /var/lib/containerd"),
    ("/proc", "is /proc"),
    ("/sys/fs", "inside /sys"),
    ("/dev", "is /dev"),
    ("/", "contains /run"),
    ("/var", "contains /var/run"),
    ("/etc", "is /etc"),
    ("/boot", "is /boot"),
    ("/root/data", "inside /root"),
])
def test_dataset_sources_that_expose_the_host_are_refused(src: str, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        tw.tf_workspace_dataset_mounts([{"src": src, "dest": "/data/x"}])


@pytest.mark.parametrize("dest", [
    "/", "/etc/tflab/ssh", "/etc/tflab", "/etc/ssh", "/etc", "/home/alice", "/home/alice/data", "/home",
    "/run/x", "/tmp/x", "/proc/x", "/sys", "/dev/x", "/usr/local/data", "/bin", "/lib/x",
    "//etc/tflab/jupyter",
])
def test_dataset_destinations_over_system_or_workspace_paths_are_refused(dest: str) -> None:
    with pytest.raises(AnsibleFilterError, match=r"must be an absolute path below /|covers a system path"):
        tw.tf_workspace_dataset_mounts([{"src": "/srv/datasets/x", "dest": dest}])


def test_dataset_destination_with_dotdot_is_refused_as_what_it_is() -> None:
    with pytest.raises(AnsibleFilterError, match=r"'\.\.' \(it is /etc/tflab/ssh\)"):
        tw.tf_workspace_dataset_mounts([{"src": "/srv/datasets/x", "dest": "/datasets/../etc/tflab/ssh"}])


@pytest.mark.parametrize("dests", [["/data/a", "/data/a/b"], ["/data/a/b", "/data/a"], ["/d/x", "//d/x/"]])
def test_nested_or_equal_destinations_are_refused(dests: list[str]) -> None:
    with pytest.raises(AnsibleFilterError, match=r"nested|two datasets are mounted"):
        tw.tf_workspace_dataset_mounts([{"src": f"/srv/datasets/{i}", "dest": d}
                                        for i, d in enumerate(dests)])


def test_dataset_paths_are_normalised() -> None:
    assert tw.tf_workspace_dataset_mounts([{"src": "//srv/datasets//coco/", "dest": "/data/./coco/"}]) == [
        {"type": "bind", "source": "/srv/datasets/coco", "target": "/data/coco", "read_only": True}]


def test_dataset_roots_hold_in_the_filter() -> None:
    roots = ["/srv/datasets/"]
    mounts = tw.tf_workspace_dataset_mounts(["/srv/datasets/imagenet"], roots)
    assert mounts[0]["source"] == "/srv/datasets/imagenet"
    for src in ("/home/alice/data", "/srv/datasets-old/x", "/srv"):
        with pytest.raises(AnsibleFilterError, match="outside the allowed dataset roots"):
            tw.tf_workspace_dataset_mounts([src], roots)


@pytest.mark.parametrize("src", ["/srv/tflab", "/srv/tflab/.tflab", "/srv/tflab/bob", "/srv"])
def test_datasets_never_expose_users_data_or_tflab_state(src: str) -> None:
    with pytest.raises(AnsibleFilterError, match="overlaps /srv/tflab"):
        tw.tf_workspace_dataset_mounts([{"src": src, "dest": "/data/x"}], private_sources=["/srv/tflab"])


# --- data root --------------------------------------------------------------------------------

@pytest.mark.parametrize("root", [
    "/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/var", "/var/lib", "/boot", "/dev", "/proc",
    "/sys", "/run", "/tmp", "/root", "/home", "/home/", "//etc", "/etc/tflab", "/usr/local/tflab", "/proc/1",
    "/sys/x", "/dev/shm/x", "/run/tflab", "/boot/efi", "/tmp/tflab", "/var/tmp/tflab",
])
def test_system_locations_are_refused_as_the_data_root(root: str) -> None:
    why = tw.data_root_problem(root)
    assert why is not None and "system location" in why


@pytest.mark.parametrize("root", ["/srv/tflab", "/data/tflab", "/home/tflab", "/var/lib/tflab", "/opt/tflab"])
def test_ordinary_data_roots_pass(root: str) -> None:
    assert tw.data_root_problem(root) is None


def test_problems_collects_every_stage_as_messages() -> None:
    assert tw.tf_workspace_problems([ws("alice", 2001, datasets=["/srv/datasets/x"])], data_root="/srv/tflab",
                                    dataset_roots=["/srv/datasets"]) == []
    problems = tw.tf_workspace_problems(
        [ws("alice", 2001, datasets=["/run"]), ws("bob", 2002, state="absent", datasets=["/run"])],
        data_root="/etc", shared_datasets=[], dataset_roots=["/srv/datasets"])
    assert len(problems) == 2
    assert problems[0].startswith("tf_workspace_data_root (tflab_data_root): '/etc' is a system location")
    assert problems[1].startswith("workspace 'alice': dataset '/run'")
    assert tw.tf_workspace_problems([ws("alice", 2001, ssh_port=2222)]) == [
        "workspace 'alice': ssh_port 2222 is the workspace container's internal SSH port, which must not "
        "be a host port (traffic routed straight to containers would match it); remove ssh_port to use "
        "the allocated port 22001, or choose another free port"]
