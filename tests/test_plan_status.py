"""plan and status against a converged sandbox host (SSH, the real roles)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, Tflab, docker

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

TAGS = "preflight,sshd,docker,firewall"


@pytest.fixture(scope="module")
def converged(tflab: Tflab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """One sandbox host with sshd, Docker and the firewall applied over SSH by `tflab apply`."""
    proc = tflab.run("sandbox", "up", "--count", "1", "--prefix", "tflab-plan")
    assert proc.returncode == 0, proc.stderr
    inventory = Path(proc.stdout.strip())
    group = ROOT / "inventory" / "sandbox"
    rc, result = tflab.run_json("apply", "-i", str(group), "-i", str(inventory), "--tags", TAGS,
                                timeout=1200)
    assert rc == 0, result["failures"]
    yield group, inventory
    tflab.run("sandbox", "down", "--prefix", "tflab-plan")


def test_plan_on_a_converged_host_reports_no_changes(tflab: Tflab, converged: tuple[Path, Path]) -> None:
    group, hosts = converged
    rc, result = tflab.run_json("plan", "-i", str(group), "-i", str(hosts), "--tags", TAGS)
    assert rc == 0, result["failures"]
    assert result["changes"] == {}
    assert result["hosts"]["tflab-plan-1"]["changed"] == 0


def test_plan_after_a_setting_change_names_exactly_that_and_changes_nothing(
        tflab: Tflab, converged: tuple[Path, Path], tmp_path: Path) -> None:
    group, hosts = converged
    change = tmp_path / "change.yml"
    change.write_text(yaml.safe_dump({"all": {"children": {"sandbox": {"vars": {
        "docker_engine_log_opts": {"max-size": "20m", "max-file": "3"}}}}}}))
    rc, result = tflab.run_json("plan", "-i", str(group), "-i", str(hosts), "-i", str(change),
                                "--tags", TAGS)
    assert rc == 0, result["failures"]
    [changed] = result["changes"].values()
    assert any("daemon.json" in item.lower() or "daemon" in item.lower() for item in changed), changed
    assert len(changed) <= 2, changed  # the merged file (and its restart handler), nothing else
    # Nothing was applied: a plan without the change is still empty.
    rc, again = tflab.run_json("plan", "-i", str(group), "-i", str(hosts), "--tags", TAGS)
    assert rc == 0 and again["changes"] == {}


def test_status_json_matches_the_host(tflab: Tflab, converged: tuple[Path, Path]) -> None:
    group, hosts = converged
    rc, result = tflab.run_json("status", "-i", str(group), "-i", str(hosts))
    assert rc == 0, result["failures"]
    report = result["reports"]["tflab-plan-1"]
    actual = docker("exec", "tflab-plan-1", "docker", "info", "--format",
                    "{{.DefaultRuntime}}").stdout.strip()
    assert report["docker_runtime"] == actual == "runc"
    assert report["workspaces"] == []
    assert str(report["gpus"]).strip().startswith("0")
