"""The nvidia_driver role on this GPU-less machine: skip, fail on demand, decide when forced.

Runs the real role against localhost with installing, configuring and rebooting switched off,
so it only reads the host (and writes its state file to a temporary directory).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nvidia_doubles import REPO, load_library_module

facts_mod = load_library_module("nvidia_gpu_facts")
# The venv's own ansible-playbook first, so a run via venv/bin/python finds it without PATH.
ANSIBLE_PLAYBOOK = shutil.which(
    "ansible-playbook", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
)

pytestmark = [
    pytest.mark.skipif(ANSIBLE_PLAYBOOK is None, reason="ansible-playbook is not installed"),
    pytest.mark.skipif(
        facts_mod.scan_pci_devices("/sys") != [],
        reason="this machine has an NVIDIA GPU; tests/gpu/run-gpu-checks.sh covers it",
    ),
]


def run_role(tmp_path: Path, **role_vars: object) -> subprocess.CompletedProcess[str]:
    play = [
        {
            "name": "nvidia_driver, read-only",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": True,
            "roles": [
                {
                    "role": "nvidia_driver",
                    "vars": {
                        "nvidia_driver_install": False,
                        "nvidia_driver_configure": False,
                        "nvidia_driver_verify": False,
                        "nvidia_driver_reboot_allowed": False,
                        "nvidia_driver_state_file": str(tmp_path / "nvidia_driver.fact"),
                        **role_vars,
                    },
                }
            ],
        }
    ]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(play))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_LIBRARY=str(REPO / "playbooks" / "library"),
        ANSIBLE_ROLES_PATH=str(REPO / "roles"),
        ANSIBLE_CACHE_PLUGIN="memory",
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_NOCOLOR="1",
    )
    return subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )


def test_skips_a_host_without_gpu(tmp_path: Path) -> None:
    done = run_role(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No NVIDIA GPU found on localhost: skipping the NVIDIA driver" in done.stdout
    assert not (tmp_path / "nvidia_driver.fact").exists()  # nothing after detection ran


def test_require_gpu_turns_the_skip_into_a_failure(tmp_path: Path) -> None:
    done = run_role(tmp_path, nvidia_driver_require_gpu=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "nvidia_driver_require_gpu is true" in done.stdout


def test_forced_host_records_a_decision(tmp_path: Path) -> None:
    done = run_role(tmp_path, nvidia_driver_force_install=True)
    assert done.returncode == 0, done.stdout + done.stderr
    state = json.loads((tmp_path / "nvidia_driver.fact").read_text())
    assert state["gpu_count"] == 0
    # No driver package on this machine: a reboot would not help, so none is asked for.
    assert state["installed_version"] is None
    assert state["reboot_action"] == "none"
