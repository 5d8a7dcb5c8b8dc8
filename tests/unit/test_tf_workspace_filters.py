"""Port allocation and firewall rules for workspaces (playbooks/filter_plugins/tf_workspace.py).

These ports cross a boundary: the firewall role and the tf_workspace containers must agree.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

PLUGIN = Path(__file__).resolve().parents[2] / "playbooks" / "filter_plugins" / "tf_workspace.py"


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
    given = [ws("alice", 2001, ssh_port=2222, jupyter_port="8888")]
    out = tw.tf_workspace_ports(given)
    assert (out[0]["ssh_port"], out[0]["jupyter_port"]) == (2222, 8888)
    assert "ssh_port" in given[0] and given[0]["jupyter_port"] == "8888"
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
    }
    assert (out[1]["gid"], out[1]["state"], out[1]["memory"]) == (3000, "absent", "8g")


def test_custom_bases() -> None:
    out = tw.tf_workspace_ports(
        [ws("alice", 5003)], ssh_base=40000, jupyter_base=41000, uid_base=5000, range_size=500
    )
    assert (out[0]["ssh_port"], out[0]["jupyter_port"]) == (40003, 41003)


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
    assert rules == [
        {"port": 22001, "proto": "tcp", "cidrs": ["10.0.0.0/24"], "comment": "tflab workspace alice ssh"},
        {"port": 28001, "proto": "tcp", "cidrs": ["10.0.0.0/24"], "comment": "tflab workspace alice jupyter"},
        {"port": 22002, "proto": "tcp", "cidrs": ["192.168.1.0/24"], "comment": "tflab workspace bob ssh"},
        {
            "port": 28002,
            "proto": "tcp",
            "cidrs": ["192.168.1.0/24"],
            "comment": "tflab workspace bob jupyter",
        },
        {"port": 22004, "proto": "tcp", "cidrs": [], "comment": "tflab workspace dave ssh"},
        {"port": 28004, "proto": "tcp", "cidrs": [], "comment": "tflab workspace dave jupyter"},
    ]


def test_firewall_rules_pass_port_settings_through() -> None:
    rules = tw.tf_workspace_firewall_rules(
        [ws("alice", 5001)], [], uid_base=5000, ssh_base=30000, jupyter_base=31000
    )
    assert [r["port"] for r in rules] == [30001, 31001]


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
        "tf_workspace_dataset_mounts",
    }
