"""The firewall's address filters: CIDR validation and the lockout check."""

from __future__ import annotations

from pathlib import Path

import pytest
from pathload import load_module

ROOT = Path(__file__).resolve().parents[2]




net = load_module("tflab_net", ROOT / "playbooks/filter_plugins/tflab_net.py")


@pytest.mark.parametrize(
    ("values", "family", "expected"),
    [
        (["10.0.0.0/8", "10.0.0.0/8", "192.0.2.7"], None, ["10.0.0.0/8", "192.0.2.7/32"]),
        (["10.0.0.0/8", "2001:db8::/64"], 4, ["10.0.0.0/8"]),
        (["10.0.0.0/8", "2001:db8::/64"], 6, ["2001:db8::/64"]),
        ([], None, []),
        (None, 4, []),
    ],
)
def test_cidrs_normalises_and_splits_families(
    values: list[str] | None, family: int | None, expected: list[str]
) -> None:
    assert net.tflab_cidrs(values, family) == expected


@pytest.mark.parametrize("bad", ["10.0.0.1/24", "10.0.0.0/33", "example.org", "", "2001:db8::1/64"])
def test_cidrs_rejects_typos_with_a_hint(bad: str) -> None:
    with pytest.raises(Exception, match="not a valid CIDR"):
        net.tflab_cidrs([bad])


def test_cidrs_rejects_unknown_family() -> None:
    with pytest.raises(Exception, match="family must be 4 or 6"):
        net.tflab_cidrs(["10.0.0.0/8"], 5)


@pytest.mark.parametrize(
    ("cidrs", "address", "expected"),
    [
        (["10.213.20.20/32"], "10.213.20.20", True),
        (["10.213.20.20/32"], "10.213.20.30", False),
        (["10.0.0.0/8", "2001:db8::/32"], "2001:db8:1::5", True),
        (["10.0.0.0/8"], "::ffff:10.1.2.3", True),  # IPv4-mapped, as sshd may report it
        (["2001:db8::/32"], "fe80::1%eth0", False),
        ([], "10.0.0.1", False),
    ],
)
def test_cidr_contains(cidrs: list[str], address: str, expected: bool) -> None:
    assert net.tflab_cidr_contains(cidrs, address) is expected


RULES = [
    {"port": 22, "proto": "tcp", "cidrs": ["198.51.100.0/24"]},
    {"port": 2222, "proto": "tcp", "cidrs": ["203.0.113.9/32"]},
    {"port": 8888, "proto": "udp", "cidrs": ["0.0.0.0/0"]},
]


@pytest.mark.parametrize(
    ("address", "port", "proto", "expected"),
    [
        ("198.51.100.4", 22, "tcp", True),
        ("198.51.100.4", "22", "tcp", True),  # SSH_CONNECTION fields are strings
        ("203.0.113.9", 22, "tcp", False),  # allowed elsewhere, not on the port the run uses
        ("203.0.113.9", 2222, "tcp", True),
        ("192.0.2.1", 8888, "tcp", False),  # udp rule does not admit tcp
        ("192.0.2.1", 8888, "udp", True),
    ],
)
def test_rules_allow_decides_lockout(address: str, port: int | str, proto: str, expected: bool) -> None:
    assert net.tflab_rules_allow(RULES, address, port, proto) is expected


def test_filter_module_registers_all_filters() -> None:
    assert set(net.FilterModule().filters()) == {
        "tflab_cidrs",
        "tflab_cidr_contains",
        "tflab_rules_allow",
        "tflab_host_targets",
        "tflab_host_cidrs",
    }


HOSTVARS = {
    "gpu01": {"ansible_host": "192.0.2.10"},
    "gpu02": {"ansible_host": "gpu02.lab.example",
              "ansible_facts": {"default_ipv4": {"address": "192.0.2.11"}}},
    "mon": {"ansible_host": "mon.lab.example", "tflab_metrics_address": "2001:db8::5"},
    "named": {"ansible_host": "named.lab.example"},
    "bare": {},
}


def test_host_targets_prefer_the_metrics_address_then_ansible_host_then_the_name() -> None:
    assert net.tflab_host_targets(["gpu01", "mon", "bare"], HOSTVARS) == [
        {"name": "gpu01", "address": "192.0.2.10"},
        {"name": "mon", "address": "2001:db8::5"},
        {"name": "bare", "address": "bare"}]
    assert net.tflab_host_targets(None, HOSTVARS) == []


def test_host_cidrs_use_an_address_or_the_facts_and_name_the_setting_otherwise() -> None:
    assert net.tflab_host_cidrs(["gpu01", "gpu02", "mon", "gpu01"], HOSTVARS, "tflab_monitoring_cidrs") == [
        "192.0.2.10/32", "192.0.2.11/32", "2001:db8::5/128"]
    with pytest.raises(net.AnsibleFilterError, match=r"named's address.*set tflab_monitoring_cidrs"):
        net.tflab_host_cidrs(["named"], HOSTVARS, "tflab_monitoring_cidrs")
