"""Fault injection: another package manager holds the dpkg lock (as unattended-upgrades does)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import Tflab, docker

pytestmark = pytest.mark.testbed

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


def test_held_dpkg_lock_is_named_then_waited_out(tflab: Tflab, sandbox_fleet: Path, tmp_path: Path) -> None:
    host = "tflab-pt-1"
    impatient = tmp_path / "impatient.yml"
    impatient.write_text(yaml.safe_dump({"all": {"children": {"sandbox": {"hosts": {
        host: {"preflight_dpkg_lock_timeout": 3}}}}}}))
    holder = hold_dpkg_lock(host, 45)
    try:
        rc, result = tflab.run_json("apply", "-i", str(sandbox_fleet), "-i", str(impatient),
                                    "--limit", host, "--tags", "preflight")
        assert rc == 2
        [failure] = result["failures"]
        assert "apt/dpkg lock still held after 3 s by PID" in failure["message"]
        assert "python3 -c import fcntl" in failure["message"]  # names the holder's command
        # With the default patience the same run waits the holder out and converges.
        started = time.monotonic()
        rc, result = tflab.run_json("apply", "-i", str(sandbox_fleet), "--limit", host,
                                    "--tags", "preflight")
        assert rc == 0, result["failures"]
        assert holder.poll() is not None, "the run finished while the lock was still held"
        assert time.monotonic() - started > 5
    finally:
        holder.kill()
