"""The pure reboot decision: needed? blocked by running work? forbidden? forced?"""

from __future__ import annotations

from typing import Any

import pytest
from nvidia_doubles import load_library_module

decide = load_library_module("nvidia_gpu_facts").decide_reboot

JOB = {"pid": 4242, "process_name": "python3", "used_memory": "30512 MiB"}


def call(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "gpu_count": 1,
        "module_loaded_version": "535.183.01",
        "installed_version": "535.183.01",
        "nouveau_loaded": False,
        "compute_processes": [],
        "workspace_containers": [],
    }
    args.update(overrides)
    result: dict[str, Any] = decide(**args)
    return result


@pytest.mark.parametrize(
    ("overrides", "needed"),
    [
        ({}, False),  # matching module: nothing to do
        ({"module_loaded_version": "535.161.08"}, True),  # upgrade under a loaded module
        ({"nouveau_loaded": True, "module_loaded_version": None}, True),
        ({"module_loaded_version": None}, True),  # installed, GPU present, nothing loaded
        ({"module_loaded_version": None, "gpu_count": 0}, False),  # no GPU: nothing would load
        ({"module_loaded_version": None, "gpu_count": 0, "assume_gpu": True}, True),  # forced
        ({"installed_version": None, "module_loaded_version": None}, False),  # no driver yet
        ({"installed_version": None, "nouveau_loaded": True}, False),  # reboot would not help
        ({"compute_processes": [JOB]}, False),  # jobs alone never need a reboot
    ],
)
def test_needed(overrides: dict[str, Any], needed: bool) -> None:
    result = call(**overrides)
    assert result["needed"] is needed
    assert bool(result["reasons"]) is needed
    if not needed:
        assert result["action"] == "none"


@pytest.mark.parametrize(
    ("overrides", "action"),
    [
        ({}, "reboot"),
        ({"compute_processes": [JOB]}, "pending"),
        ({"workspace_containers": ["tflab-ws-alice"]}, "pending"),
        ({"compute_processes": [JOB], "reboot_forced": True}, "reboot"),
        ({"workspace_containers": ["tflab-ws-alice"], "reboot_forced": True}, "reboot"),
        ({"reboot_allowed": False}, "pending"),
        # Forbidden beats forced: the admin who forbids reboots is never overridden.
        ({"reboot_allowed": False, "reboot_forced": True}, "pending"),
    ],
)
def test_action_when_needed(overrides: dict[str, Any], action: str) -> None:
    result = call(module_loaded_version="535.161.08", **overrides)
    assert result["needed"] is True
    assert result["action"] == action


def test_pending_message_names_what_runs() -> None:
    result = call(
        module_loaded_version="535.161.08",
        compute_processes=[JOB, {"pid": 99, "process_name": "jupyter-lab", "used_memory": None}],
        workspace_containers=["tflab-ws-alice"],
    )
    assert result["blockers"] == [
        "GPU process 4242 python3 (30512 MiB)",
        "GPU process 99 jupyter-lab",
        "workspace container tflab-ws-alice",
    ]
    assert result["message"].startswith("reboot pending: loaded nvidia module 535.161.08")
    for blocker in result["blockers"]:
        assert blocker in result["message"]


def test_forbidden_message() -> None:
    result = call(module_loaded_version=None, nouveau_loaded=True, reboot_allowed=False)
    assert result["message"] == (
        "reboot pending (reboots are forbidden by configuration): "
        "nouveau is loaded and holds the GPU; "
        "driver 535.183.01 is installed but no nvidia module is loaded"
    )
