"""Shared fixtures: the project, the tflab CLI as a subprocess, and sandbox hosts.

Sandbox hosts are real systemd containers reached over SSH (see tflab_provision/sandbox.py);
`scripts/testbed all` must have run (the CI does it) so a Docker engine answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TFLAB = [sys.executable, "-m", "tflab_provision.cli"]


@dataclass
class Tflab:
    """Runs `tflab` with a private state dir, as a user would."""

    state_dir: Path

    def argv(self, *args: str) -> list[str]:
        return [*TFLAB, *args, "--state-dir", str(self.state_dir)]

    def run(self, *args: str, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, check=False, env={**os.environ, **(env or {})})

    def run_json(self, *args: str, timeout: float = 600,
                 env: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
        proc = self.run(*args, "--json", timeout=timeout, env=env)
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"no JSON from tflab (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc.returncode, data


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def sandbox_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tflab-state")


@pytest.fixture(scope="session")
def tflab(sandbox_state: Path) -> Tflab:
    return Tflab(sandbox_state)


@pytest.fixture(scope="session")
def sandbox_fleet(tflab: Tflab) -> Iterator[Path]:
    """Three bare sandbox hosts (tflab-pt-1..3) and their inventory; removed afterwards."""
    privileged = ["--privileged"] if os.environ.get("TFLAB_TESTBED_PRIVILEGED") == "true" else []
    proc = tflab.run("sandbox", "up", "--count", "3", "--prefix", "tflab-pt", *privileged)
    assert proc.returncode == 0, proc.stderr
    yield Path(proc.stdout.strip())
    tflab.run("sandbox", "down", "--prefix", "tflab-pt")


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def connection_counter() -> Iterator[tuple[int, list[object]]]:
    """A loopback port that records every connection: proof that nothing was contacted."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except OSError:
                continue
            accepted.append(addr)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


# Holds the dpkg frontend lock the way apt does (a POSIX record lock), then exits.
HOLD_LOCK = ("import fcntl, os, time; fd = os.open('/var/lib/dpkg/lock-frontend', os.O_RDWR | os.O_CREAT); "
             "fcntl.lockf(fd, fcntl.LOCK_EX); time.sleep({seconds})")

# Exits non-zero while someone else holds that lock.
PROBE_LOCK = ("import fcntl, os; fd = os.open('/var/lib/dpkg/lock-frontend', os.O_RDWR | os.O_CREAT); "
              "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)")


def hold_dpkg_lock(host: str, seconds: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["docker", "exec", host, "python3", "-c", HOLD_LOCK.format(seconds=seconds)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until the lock is really held
        if docker("exec", host, "python3", "-c", PROBE_LOCK).returncode != 0:
            return proc
        time.sleep(0.2)
    proc.kill()
    pytest.fail("could not take the dpkg lock in the test host")
