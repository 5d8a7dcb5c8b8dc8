"""The runner core against real sandbox hosts over SSH (no mocks of ansible-runner)."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, Tflab, docker

pytestmark = pytest.mark.testbed


def vars_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "vars.yml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_failing_task_on_one_host_exits_2_and_names_it(tflab: Tflab, sandbox_fleet: Path,
                                                       tmp_path: Path) -> None:
    extra = vars_file(tmp_path, "testbed_failing_host: tflab-pt-2\n")
    rc, result = tflab.run_json("apply", "-i", str(sandbox_fleet), "--limit", "tflab-pt-1,tflab-pt-2",
                                "--playbook", "tests/playbooks/fail_on_one.yml", "-e", str(extra))
    assert rc == 2
    assert result["hosts"]["tflab-pt-1"]["failed"] == 0
    assert result["hosts"]["tflab-pt-2"]["failed"] == 1
    assert result["failures"] == [{"host": "tflab-pt-2", "task": "Break on the chosen host",
                                   "message": "deliberate failure on tflab-pt-2",
                                   "unreachable": False, "hint": None}]


def test_unreachable_host_exits_3(tflab: Tflab, sandbox_fleet: Path, tmp_path: Path) -> None:
    extra = vars_file(tmp_path, "testbed_failing_host: none\n")
    assert docker("stop", "tflab-pt-3").returncode == 0
    try:
        rc, result = tflab.run_json("apply", "-i", str(sandbox_fleet), "--playbook",
                                    "tests/playbooks/fail_on_one.yml", "-e", str(extra))
    finally:
        docker("start", "tflab-pt-3")
    assert rc == 3
    assert result["hosts"]["tflab-pt-3"]["unreachable"] == 1
    assert result["hosts"]["tflab-pt-1"]["failed"] == 0
    [failure] = result["failures"]
    assert failure["host"] == "tflab-pt-3" and failure["unreachable"] is True
    assert "ssh" in failure["message"].lower() or "connect" in failure["message"].lower()


def ansible_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "ansible" in line and marker in line]


def test_sigint_cancels_cleanly_and_reports_what_finished(tflab: Tflab, sandbox_fleet: Path) -> None:
    proc = subprocess.Popen(tflab.argv("apply", "-i", str(sandbox_fleet), "--limit", "tflab-pt-1",
                                       "--playbook", "tests/playbooks/slow.yml", "--json"),
                            cwd=ROOT, env=tflab.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the long task is running on the host
        if subprocess.run(["pgrep", "-fx", "sleep 117"], capture_output=True).returncode == 0:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the slow task never started")
    assert ansible_processes("slow.yml"), "expected ansible-playbook to be running"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 4, stderr
    result = json.loads(stdout)
    assert result["status"] == "canceled"
    assert result["hosts"]["tflab-pt-1"]["ok"] == 1  # the quick first step had finished
    time.sleep(1)
    assert ansible_processes("slow.yml") == []


def test_secret_in_vars_file_leaks_nowhere(tflab: Tflab, sandbox_fleet: Path, tmp_path: Path) -> None:
    secret = "tflab-secret-" + secrets.token_hex(16)
    extra = vars_file(tmp_path, f"testbed_secret: {secret}\n")
    seen_in_ps: list[str] = []
    done = threading.Event()

    def sample_ps() -> None:
        while not done.is_set():
            out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
            seen_in_ps.extend(line for line in out.splitlines() if secret in line)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample_ps)
    sampler.start()
    try:
        # A credential in the controller's environment must not reach the artifacts either.
        rc, result = tflab.run_json("apply", "-i", str(sandbox_fleet), "--limit", "tflab-pt-1",
                                    "--playbook", "tests/playbooks/secret.yml", "-e", str(extra),
                                    env={"TFLAB_TEST_CONTROLLER_TOKEN": secret})
    finally:
        done.set()
        sampler.join()
    assert rc == 0, result
    # The secret really reached the host (so its absence elsewhere means something).
    on_host = docker("exec", "tflab-pt-1", "cat", "/root/tflab-test-secret").stdout.strip()
    assert on_host == secret
    assert seen_in_ps == []
    run_dir = Path(str(result["private_data_dir"]))
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert files, "the run left no artifacts to inspect"
    leaks = [str(p) for p in files if secret.encode() in p.read_bytes()]
    assert leaks == []
    assert not (run_dir / "env" / "extravars").exists()


def test_world_readable_vars_file_is_refused_before_any_host(
        tflab: Tflab, tmp_path: Path, connection_counter: tuple[int, list[object]]) -> None:
    extra = vars_file(tmp_path, "testbed_secret: x\n", mode=0o644)
    port, connections = connection_counter
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(f"all:\n  hosts:\n    counted:\n      ansible_host: 127.0.0.1\n"
                     f"      ansible_port: {port}\n")
    runs = tflab.state_dir / "runs"
    before = sorted(runs.iterdir()) if runs.exists() else []
    proc = tflab.run("apply", "-i", str(hosts), "-e", str(extra))
    assert proc.returncode == 1
    assert "chmod 600" in proc.stderr and str(extra) in proc.stderr
    assert connections == []
    assert (sorted(runs.iterdir()) if runs.exists() else []) == before
