"""The README's commands for real servers, end to end on the sandbox fleet: `tflab init` an
inventory, edit it as the README says (hosts), `tflab check` it, and `--junit` reports.

(`scripts/dev demo`, the README's first command, is tests/test_plan_status.py's fixture.)
"""

from __future__ import annotations

import filecmp
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, Tflab, docker, hold_dpkg_lock

pytestmark = pytest.mark.testbed

HOST = "tflab-pt-1"  # stands in for the example's gpu01


def same_tree(left: Path, right: Path) -> bool:
    cmp = filecmp.dircmp(left, right)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(left / d, right / d) for d in cmp.common_dirs)


def point_at_sandbox_host(inventory: Path, fleet: Path) -> None:
    """The README's "edit hosts": gpu01 becomes the sandbox host (its address, port and admin
    login); gpu02, a documentation address, is dropped. group_vars and host_vars stay as written."""
    fleet_group = yaml.safe_load(fleet.read_text())["all"]["children"]["sandbox"]
    hosts_file = inventory / "hosts.yml"
    data = yaml.safe_load(hosts_file.read_text())
    nodes = data["all"]["children"]["gpu_nodes"]
    nodes["hosts"] = {"gpu01": fleet_group["hosts"][HOST]}
    nodes["vars"] = fleet_group["vars"]
    hosts_file.write_text(yaml.safe_dump(data, sort_keys=False))


def on_host(*argv: str) -> str:
    proc = docker("exec", HOST, *argv)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_init_then_check_reports_each_problem_of_the_host(sandbox_fleet: Path, tmp_path: Path) -> None:
    tflab = Tflab(tmp_path / "state")  # its own fact cache: gpu01's facts stay out of other tests
    lab = tmp_path / "lab"
    proc = tflab.run("init", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert f"tflab check -i {lab}" in " ".join(proc.stdout.split())
    assert same_tree(lab, ROOT / "inventory" / "example")
    again = tflab.run("init", str(lab))
    assert again.returncode == 1 and "not empty" in again.stderr  # never over an inventory
    point_at_sandbox_host(lab, sandbox_fleet)

    rc, result = tflab.run_json("check", "-i", str(lab))
    assert rc == 2, result  # problems found: exit 2, every host still reported
    report = result["reports"]["gpu01"]
    kernel = on_host("uname", "-r")
    assert report["os"] == f"Debian {on_host('cat', '/etc/debian_version')}"
    assert report["kernel"] == kernel
    assert str(report["gpus"]) == "0"
    assert int(report["free_gib"]) == int(on_host("df", "--output=avail", "--block-size=1G", "/").split()[-1])
    assert report["problems"] == ["no NVIDIA GPU found",
                                  f"kernel headers for {kernel} are not installed (needed by DKMS)"]

    # A problem that comes and goes: another package manager holding the dpkg lock is named.
    holder = hold_dpkg_lock(HOST, 15)
    try:
        table = tflab.run("check", "-i", str(lab), env={"COLUMNS": "400"})  # one line per cell
    finally:
        holder.wait(timeout=60)  # the holder inside the host ends by itself: later tests need the lock
    assert table.returncode == 2, table.stderr
    assert "gpu01" in table.stdout and "no NVIDIA GPU found" in table.stdout
    assert "apt/dpkg lock held: python3 -c import fcntl" in " ".join(table.stdout.split()), table.stdout


def test_junit_report_has_one_suite_per_host_and_names_the_failed_task(
        tflab: Tflab, sandbox_fleet: Path, tmp_path: Path) -> None:
    # tflab-pt-2 asks for more disk than any machine has, so its preflight fails (a real role).
    overrides = tmp_path / "overrides.yml"
    overrides.write_text(yaml.safe_dump({"all": {"children": {"sandbox": {"hosts": {
        "tflab-pt-2": {"preflight_min_free_gib": 10**6}}}}}}))
    junit = tmp_path / "report.xml"
    rc, result = tflab.run_json("apply", "-i", str(sandbox_fleet), "-i", str(overrides), "--limit",
                                "tflab-pt-1,tflab-pt-2", "--tags", "preflight", "--junit", str(junit))
    assert rc == 2
    [failure] = result["failures"]
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and root.get("name") == "site.yml"
    suites = {suite.get("name"): suite for suite in root.findall("testsuite")}
    assert set(suites) == set(result["hosts"]) == {"tflab-pt-1", "tflab-pt-2"}
    for name, suite in suites.items():
        cases = suite.findall("testcase")
        failures = [case.find("failure") for case in cases if case.find("failure") is not None]
        if name == "tflab-pt-2":
            assert (suite.get("tests"), suite.get("failures")) == ("1", "1")
            assert [case.get("name") for case in cases] == [failure["task"]]
            [element] = failures
            assert element is not None and element.get("message") == failure["message"]
            assert "GiB are needed" in failure["message"]
        else:
            assert (suite.get("tests"), suite.get("failures")) == ("1", "0")
            assert [case.get("name") for case in cases] == ["site.yml converged"]
            assert failures == []
