"""Fault injection: another package manager holds the dpkg lock (as unattended-upgrades does)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from conftest import Tflab, hold_dpkg_lock

pytestmark = pytest.mark.testbed


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
