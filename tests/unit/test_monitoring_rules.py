"""The shipped alert rules, rendered by Ansible with the role's defaults, under `promtool test rules`.

promtool comes from Debian's `prometheus` package (scripts/dev installs it); without it these tests
fail instead of skipping, since the rules would otherwise ship untested.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "monitoring_server"
TEMPLATE = ROLE / "templates" / "tflab-rules.yml.j2"
TESTS = ROLE / "files" / "tests" / "tflab-rules.test.yml"
ANSIBLE = Path(sys.executable).parent / "ansible"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: install Debian's prometheus package (scripts/dev setup does)"
    return path


def render_rules(dest: Path, **overrides: object) -> Path:
    """Render the rules template exactly as the role does: Ansible's template module, the role's defaults."""
    extra = json.dumps(overrides)
    proc = subprocess.run(
        [str(ANSIBLE), "localhost", "-c", "local", "-m", "ansible.builtin.template",
         "-a", f"src={TEMPLATE} dest={dest}", "-e", f"@{ROLE / 'defaults' / 'main.yml'}", "-e", extra],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dest


def run_unit_tests(tmp_path: Path, **overrides: object) -> subprocess.CompletedProcess[str]:
    render_rules(tmp_path / "tflab-rules.yml", **overrides)
    shutil.copy(TESTS, tmp_path / TESTS.name)
    return subprocess.run([promtool(), "test", "rules", TESTS.name], cwd=tmp_path,
                          capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rules as the role's defaults render them (once: rendering runs Ansible)."""
    return render_rules(tmp_path_factory.mktemp("rules") / "tflab-rules.yml")


def alert_names(rules: Path) -> list[str]:
    groups = yaml.safe_load(rules.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rendered_rules(rules: Path) -> None:
    proc = subprocess.run([promtool(), "check", "rules", str(rules)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_names(rules))} rules found" in proc.stdout


def test_promtool_unit_tests_pass(rules: Path, tmp_path: Path) -> None:
    shutil.copy(rules, tmp_path / rules.name)
    shutil.copy(TESTS, tmp_path / TESTS.name)
    proc = subprocess.run([promtool(), "test", "rules", TESTS.name], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_firing_and_a_quiet_case(rules: Path) -> None:
    names = alert_names(rules)
    assert {"NodeDown", "DataDiskNearlyFull", "WorkspaceUnhealthy", "GpuIdle", "RebootPending",
            "FirewallDrift", "DriverMismatch", "CollectorStale"} <= set(names)
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(names) - firing == set(), "alerts without a case where they fire"
    assert set(names) - quiet == set(), "alerts without a case where they stay quiet"


def test_every_alert_names_its_node_in_summary_and_description(rules: Path) -> None:
    groups = yaml.safe_load(rules.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"] if "alert" in r):
        for key in ("summary", "description"):
            assert "$labels.node" in rule["annotations"][key], (rule["alert"], key)
        if "workspace" in rule["expr"]:
            assert "$labels.workspace" in rule["annotations"]["summary"], rule["alert"]


# The thresholds really come from the variables: other values make the shipped cases fail.
@pytest.mark.parametrize(("variable", "value", "alert"), [
    ("monitoring_server_alert_node_down_for", "10m", "NodeDown"),
    ("monitoring_server_alert_disk_free_ratio", 0.01, "DataDiskNearlyFull"),
    ("monitoring_server_alert_disk_mountpoint", "/", "DataDiskNearlyFull"),
    ("monitoring_server_alert_reboot_pending_for", "4d", "RebootPending"),
    ("monitoring_server_alert_gpu_idle_for", "30h", "GpuIdle"),
])
def test_the_thresholds_follow_the_variables(tmp_path: Path, variable: str, value: object,
                                             alert: str) -> None:
    proc = run_unit_tests(tmp_path, **{variable: value})
    assert proc.returncode != 0
    assert f"alertname: {alert}," in proc.stdout + proc.stderr
