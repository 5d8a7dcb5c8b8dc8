"""Fleet operations on three sandbox hosts: unreachable hosts, --retry-failed, rolling batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import Tflab, docker

pytestmark = pytest.mark.testbed


def test_unreachable_host_then_retry_failed_converges_only_it(
        tflab: Tflab, sandbox_fleet: Path) -> None:
    assert docker("stop", "tflab-pt-3").returncode == 0
    try:
        rc, first = tflab.run_json("apply", "-i", str(sandbox_fleet), "--tags", "preflight")
    finally:
        assert docker("start", "tflab-pt-3").returncode == 0
    assert rc == 3
    assert first["hosts"]["tflab-pt-1"]["failed"] == 0 and first["hosts"]["tflab-pt-1"]["ok"] > 3
    assert first["hosts"]["tflab-pt-2"]["failed"] == 0 and first["hosts"]["tflab-pt-2"]["ok"] > 3
    assert first["hosts"]["tflab-pt-3"]["unreachable"] == 1
    # The restarted host needs its key again (sandbox up is idempotent and re-installs it).
    assert tflab.run("sandbox", "up", "--count", "3", "--prefix", "tflab-pt").returncode == 0
    rc, retry = tflab.run_json("apply", "-i", str(sandbox_fleet), "--tags", "preflight",
                               "--retry-failed")
    assert rc == 0, retry["failures"]
    assert set(retry["hosts"]) == {"tflab-pt-3"}
    assert retry["hosts"]["tflab-pt-3"]["ok"] > 3


def test_rolling_run_stops_at_the_failing_batch(tflab: Tflab, sandbox_fleet: Path,
                                                tmp_path: Path) -> None:
    # tflab-pt-2 asks for more disk than any machine has, so its preflight fails.
    overrides = tmp_path / "overrides.yml"
    # (Declared in the sandbox group, so the hosts keep their inventory order.)
    overrides.write_text(yaml.safe_dump({"all": {"children": {"sandbox": {"hosts": {
        "tflab-pt-2": {"preflight_min_free_gib": 10**6}}}}}}))
    rc, result = tflab.run_json("apply", "-i", str(sandbox_fleet), "-i", str(overrides),
                                "--tags", "preflight", "--serial", "1", "--max-fail-percent", "0")
    assert rc == 2
    assert result["batches"] == [["tflab-pt-1"], ["tflab-pt-2"]]
    assert "tflab-pt-3" not in result["hosts"]
    [failure] = result["failures"]
    assert failure["host"] == "tflab-pt-2"
    assert "GiB are needed" in failure["message"]
