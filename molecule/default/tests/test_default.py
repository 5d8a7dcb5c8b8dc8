"""Checks on the converged lab host (one host serves every check: see docs/architecture.md)."""

from __future__ import annotations

import json

testinfra_hosts = ["tflab-default-lab"]


def nvidia_devices_in_sysfs(host) -> int:  # type: ignore[no-untyped-def]
    """Count NVIDIA display-class PCI devices independently of the facts module."""
    out = host.check_output(
        "for d in /sys/bus/pci/devices/*; do "
        "[ \"$(cat $d/vendor)\" = 0x10de ] && case $(cat $d/class) in 0x03*) echo $d;; esac; "
        "done; true")
    return len([line for line in out.splitlines() if line.strip()])


def test_preflight_records_os_and_gpus(host) -> None:  # type: ignore[no-untyped-def]
    fact = host.file("/etc/ansible/facts.d/tflab_preflight.fact")
    assert fact.exists and fact.user == "root" and fact.mode == 0o644
    record = json.loads(fact.content_string)
    assert record["os"].startswith("Debian 12")
    assert int(record["gpu_count"]) == nvidia_devices_in_sysfs(host)
    assert len(record["gpus"]) == int(record["gpu_count"])


def test_dpkg_is_consistent(host) -> None:  # type: ignore[no-untyped-def]
    assert host.run("dpkg --audit").stdout.strip() == ""
