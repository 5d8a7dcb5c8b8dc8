"""nvidia_gpu_facts on fixture sysfs/procfs trees; dpkg-query/nvidia-smi are doubles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nvidia_doubles import FIXTURES, REPO, CommandDouble, load_library_module

facts_mod = load_library_module("nvidia_gpu_facts")


def gather_case(case: str, **kwargs: Any) -> dict[str, Any]:
    double = CommandDouble(case, kwargs.pop("commands", None))
    facts: dict[str, Any] = facts_mod.gather(
        sysfs_root=str(FIXTURES / case / "sys"),
        procfs_root=str(FIXTURES / case / "proc"),
        run=double.run,
        which=double.which,
        **kwargs,
    )
    return facts


# --- parsers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "pci_class", "expected"),
    [
        ("0x10de", "0x030200", True),  # 3D controller (datacenter GPUs)
        ("0x10de", "0x030000", True),  # VGA controller
        ("0x10de", "0x040300", False),  # the card's HDMI audio function
        ("0x10de", "0x0c0330", False),  # USB controller on some cards
        ("0x8086", "0x030000", False),  # Intel iGPU
        ("0x10DE", "0x030200", True),
        (None, "0x030200", False),
        ("garbage", "0x030200", False),
    ],
)
def test_is_nvidia_display(vendor: str | None, pci_class: str, expected: bool) -> None:
    assert facts_mod.is_nvidia_display(vendor, pci_class) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  "
            "Sun May 12 19:39:15 UTC 2024\n"
            "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n",
            "535.183.01",
        ),
        (
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build"
            "  (dvs-builder@U16)  Thu Feb 22 01:25:25 UTC 2024\n",
            "550.54.14",
        ),
        ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.82  Wed Oct 13 2021\n", "470.82"),
        ("", None),
        (None, None),
        ("something else entirely", None),
    ],
)
def test_parse_module_version(text: str | None, expected: str | None) -> None:
    assert facts_mod.parse_module_version(text) == expected


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("535.261.03-1", "535.261.03"),
        ("535.183.01-1~deb12u1", "535.183.01"),
        ("535.183.01-0ubuntu0.22.04.1", "535.183.01"),
        ("1:535.104.05-1", "535.104.05"),
        ("535.104.05", "535.104.05"),
    ],
)
def test_upstream_version(version: str, expected: str) -> None:
    assert facts_mod.upstream_version(version) == expected


def test_parse_dpkg_query_keeps_installed_and_held_only() -> None:
    out = (
        "nvidia-kernel-dkms\t535.261.03-1\tii \n"
        "nvidia-kernel-common-535-server\t535.183.01-0ubuntu0.22.04.1\thi \n"
        "nvidia-kernel-common-530\t530.41.03-0ubuntu0.22.04.2\trc \n"
        "nvidia-dkms-550\t550.54.14-1\tun \n"
        "garbage line\n"
    )
    assert [p["package"] for p in facts_mod.parse_dpkg_query(out)] == [
        "nvidia-kernel-dkms",
        "nvidia-kernel-common-535-server",
    ]


def test_pick_driver_package_prefers_pattern_order_then_highest_version() -> None:
    installed = [
        {"package": "nvidia-kernel-common-535-server", "version": "535.183.01-0ubuntu1"},
        {"package": "nvidia-kernel-common-550-server", "version": "550.90.07-0ubuntu1"},
        {"package": "nvidia-dkms-535-server", "version": "535.183.01-0ubuntu1"},
    ]
    chosen = facts_mod.pick_driver_package(installed, ["nvidia-kernel-dkms", "nvidia-kernel-common-*"])
    assert chosen["package"] == "nvidia-kernel-common-550-server"
    assert facts_mod.pick_driver_package(installed, ["nvidia-kernel-dkms"]) is None


def test_parse_smi_gpus_normalizes_bus_id_and_keeps_commas_in_names() -> None:
    out = (
        "0, 00000000:3B:00.0, NVIDIA A100-PCIE-40GB, 535.183.01\n"
        "1, 00000000:AF:00.0, Quadro RTX 8000, Special, 535.183.01\n"
    )
    gpus = facts_mod.parse_smi_gpus(out)
    assert [g["pci_bus_id"] for g in gpus] == ["0000:3b:00.0", "0000:af:00.0"]
    assert gpus[1]["name"] == "Quadro RTX 8000, Special"
    assert {g["driver_version"] for g in gpus} == {"535.183.01"}


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        ("", []),
        ("No running processes found\n", []),
        (
            "4242, python3, 30512 MiB\n4343, /opt/conda/bin/python, 1024 MiB\n",
            [
                {"pid": 4242, "process_name": "python3", "used_memory": "30512 MiB"},
                {"pid": 4343, "process_name": "/opt/conda/bin/python", "used_memory": "1024 MiB"},
            ],
        ),
    ],
)
def test_parse_compute_apps(out: str, expected: list[dict[str, Any]]) -> None:
    assert facts_mod.parse_compute_apps(out) == expected


def test_parse_proc_modules() -> None:
    text = "nvidia 56467456 2 nvidia_uvm, Live 0x0 (POE)\nnouveau 2805760 0 - Live 0x0\n\n"
    assert facts_mod.parse_proc_modules(text) == {"nvidia", "nouveau"}


# --- whole fixture trees ----------------------------------------------------------------------


def test_no_gpu() -> None:
    facts = gather_case("no_gpu")
    assert facts["count"] == 0
    assert facts["devices"] == []
    assert facts["module_loaded"] is False
    assert facts["module_loaded_version"] is None
    assert facts["installed_package_version"] is None
    assert facts["nouveau_loaded"] is False
    assert facts["secure_boot_state"] == "not_efi"
    assert facts["secure_boot"] is False
    assert facts["nvidia_smi_available"] is False
    assert facts["smi_count"] is None
    assert facts["compute_processes"] == []
    assert facts["reboot"]["action"] == "none"


def test_one_gpu_matching_module() -> None:
    facts = gather_case("one_gpu_matching")
    assert facts["count"] == 1  # the card's audio function and the BMC's VGA are not counted
    assert facts["devices"] == [
        {
            "pci_address": "0000:3b:00.0",
            "vendor": "0x10de",
            "device": "0x20b0",
            "class": "0x030200",
            "subsystem_vendor": "0x10de",
            "subsystem_device": "0x134f",
            "driver": "nvidia",
        }
    ]
    assert facts["pci_ids"] == ["10de:20b0"]
    assert facts["module_loaded"] is True
    assert facts["module_loaded_version"] == "535.183.01"
    assert facts["installed_package"] == "nvidia-kernel-dkms"
    assert facts["installed_package_version"] == "535.183.01"
    assert facts["installed_package_full_version"] == "535.183.01-1~deb12u1"
    assert facts["secure_boot_state"] == "enabled"
    assert facts["secure_boot"] is True
    assert facts["nvidia_smi_ok"] is True
    assert facts["smi_count"] == 1
    assert facts["smi_gpus"][0]["pci_bus_id"] == facts["devices"][0]["pci_address"]
    # nvidia-persistenced holds /dev/nvidia0 but is a daemon, not GPU work.
    assert facts["compute_processes"] == []
    assert facts["reboot"] == {
        "needed": False,
        "reasons": [],
        "blockers": [],
        "action": "none",
        "message": "no reboot needed",
    }


def test_one_gpu_with_jobs_reported_by_nvidia_smi() -> None:
    facts = gather_case(
        "one_gpu_matching",
        commands={"--query-compute-apps": [0, "5151, python3, 30512 MiB\n", ""]},
    )
    assert facts["compute_processes"] == [
        {"pid": 5151, "process_name": "python3", "used_memory": "30512 MiB"}
    ]
    assert facts["reboot"]["action"] == "none"  # jobs alone never ask for a reboot


def test_mismatch_after_upgrade() -> None:
    facts = gather_case("mismatch_after_upgrade")
    assert facts["count"] == 2  # 3D controller and VGA controller
    assert facts["module_loaded_version"] == "535.161.08"
    assert facts["installed_package"] == "nvidia-kernel-common-535-server"  # rc package ignored
    assert facts["installed_package_version"] == "535.183.01"
    assert facts["secure_boot_state"] == "disabled"
    assert facts["nvidia_smi_available"] is True
    assert facts["nvidia_smi_ok"] is False
    assert "Driver/library version mismatch" in facts["nvidia_smi_error"]
    assert facts["smi_count"] is None
    reboot = facts["reboot"]
    assert reboot["needed"] is True
    assert reboot["action"] == "reboot"
    assert "535.161.08 differs from installed driver 535.183.01" in reboot["reasons"][0]


def test_mismatch_after_upgrade_with_reboots_forbidden() -> None:
    reboot = gather_case("mismatch_after_upgrade", reboot_allowed=False)["reboot"]
    assert reboot["action"] == "pending"
    assert reboot["message"].startswith("reboot pending")


def test_nouveau_loaded() -> None:
    facts = gather_case("nouveau_loaded")
    assert facts["count"] == 1
    assert facts["devices"][0]["driver"] == "nouveau"
    assert facts["nouveau_loaded"] is True
    assert facts["module_loaded"] is False
    assert facts["module_loaded_version"] is None
    assert facts["secure_boot_state"] == "unknown"  # EFI boot, SecureBoot variable absent
    assert "couldn't communicate" in facts["nvidia_smi_error"]
    reboot = facts["reboot"]
    assert reboot["action"] == "reboot"
    assert reboot["reasons"] == [
        "nouveau is loaded and holds the GPU",
        "driver 535.183.01 is installed but no nvidia module is loaded",
    ]


def test_gpu_jobs_running_found_without_nvml() -> None:
    facts = gather_case("gpu_jobs_running")
    assert facts["count"] == 2
    assert facts["nvidia_smi_ok"] is False
    assert [(p["pid"], p["process_name"]) for p in facts["compute_processes"]] == [
        (4242, "python3"),
        (4343, "jupyter-lab"),
    ]
    assert facts["device_holders"][0]["devices"] == [
        "/dev/nvidia-uvm",
        "/dev/nvidia0",
        "/dev/nvidiactl",
    ]
    reboot = facts["reboot"]
    assert reboot["needed"] is True
    assert reboot["action"] == "pending"
    assert "GPU process 4242 python3" in reboot["message"]
    assert "GPU process 4343 jupyter-lab" in reboot["message"]


def test_gpu_jobs_running_forced() -> None:
    reboot = gather_case("gpu_jobs_running", reboot_forced=True)["reboot"]
    assert reboot["action"] == "reboot"
    assert "forced despite" in reboot["message"]


def test_workspace_containers_block_reboot() -> None:
    reboot = gather_case("mismatch_after_upgrade", workspace_containers=["tflab-ws-alice"])["reboot"]
    assert reboot["action"] == "pending"
    assert reboot["blockers"] == ["workspace container tflab-ws-alice"]


def test_no_gpu_forced_install_counts_as_gpu_host() -> None:
    installed = {"dpkg-query": [0, "nvidia-kernel-dkms\t535.261.03-1\tii \n", ""]}
    assert gather_case("no_gpu", commands=installed)["reboot"]["action"] == "none"
    forced = gather_case("no_gpu", commands=installed, assume_gpu=True, reboot_allowed=False)
    assert forced["installed_package_version"] == "535.261.03"
    assert forced["reboot"]["needed"] is True
    assert forced["reboot"]["action"] == "pending"


def test_query_nvidia_smi_off_never_calls_it() -> None:
    double = CommandDouble("one_gpu_matching")
    facts_mod.gather(
        sysfs_root=str(FIXTURES / "one_gpu_matching" / "sys"),
        procfs_root=str(FIXTURES / "one_gpu_matching" / "proc"),
        run=double.run,
        which=double.which,
        query_nvidia_smi=False,
    )
    assert [argv[0] for argv in double.calls] == ["dpkg-query"]


def test_runs_as_an_ansible_module_against_a_fixture_tree(tmp_path: Path) -> None:
    """The real entry point (AnsibleModule argument parsing, exit_json) on the no-GPU tree."""
    args = {
        "ANSIBLE_MODULE_ARGS": {
            "sysfs_root": str(FIXTURES / "no_gpu" / "sys"),
            "procfs_root": str(FIXTURES / "no_gpu" / "proc"),
            "query_nvidia_smi": False,
            "driver_packages": ["tflab-no-such-package-*"],
        }
    }
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps(args))
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "playbooks" / "library" / "nvidia_gpu_facts.py"),
            str(args_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["changed"] is False
    assert result["ansible_facts"]["nvidia_gpu"]["count"] == 0
    assert result["ansible_facts"]["nvidia_gpu"]["reboot"]["action"] == "none"
