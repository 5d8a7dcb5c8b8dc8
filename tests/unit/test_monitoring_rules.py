"""The shipped alert rules, rendered by Ansible with the role's defaults, under `promtool test rules`;
and prometheus.yml / alertmanager.yml as the role renders them, under `promtool check config` and
`amtool check-config`.

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


def render(template: Path, dest: Path, **overrides: object) -> Path:
    """Render a template exactly as the role does: Ansible's template module, the role's defaults and vars."""
    proc = subprocess.run(
        [str(ANSIBLE), "localhost", "-c", "local", "-m", "ansible.builtin.template",
         "-a", f"src={template} dest={dest}", "-e", f"@{ROLE / 'defaults' / 'main.yml'}",
         "-e", f"@{ROLE / 'vars' / 'main.yml'}", "-e", json.dumps(overrides)],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dest


def render_rules(dest: Path, **overrides: object) -> Path:
    return render(TEMPLATE, dest, **overrides)


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


@pytest.mark.parametrize("overrides", [
    {},
    {"monitoring_server_targets": [{"name": "gpu-a", "address": "10.0.0.11"},
                                   {"name": "gpu-b", "address": "fd00::12"}],
     "monitoring_server_dcgm_targets": [{"name": "gpu-a", "address": "gpu-a.lab"}],
     "monitoring_server_external_labels": {"lab": "gpu-lab-1"}, "monitoring_server_scrape_interval": "5s",
     "monitoring_server_scrape_timeout": "4s"},
    # A short interval with the default (empty) timeout: Prometheus then times out at the interval.
    {"monitoring_server_scrape_interval": "5s"},
], ids=["defaults", "targets-dcgm-ipv6", "short-interval"])
def test_prometheus_config_passes_promtool(rules: Path, tmp_path: Path, overrides: dict[str, object]) -> None:
    config = render(ROLE / "templates" / "prometheus.yml.j2", tmp_path / "prometheus.yml",
                    monitoring_server_rules_path=str(rules), **overrides)
    proc = subprocess.run([promtool(), "check", "config", str(config)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = {job["job_name"]: job for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    dcgm = {"dcgm"} if "monitoring_server_dcgm_targets" in overrides else set()
    assert set(jobs) == {"tflab-node", "prometheus", "alertmanager"} | dcgm
    assert jobs["prometheus"]["metrics_path"] == "/prometheus/metrics"
    assert jobs["alertmanager"]["metrics_path"] == "/alertmanager/metrics"
    targets: list[dict[str, str]] = overrides.get("monitoring_server_targets", [])  # type: ignore[assignment]
    for target in targets:
        entry = next(c for c in jobs["tflab-node"]["static_configs"] if c["labels"]["node"] == target["name"])
        assert entry["labels"]["instance"] == target["name"]
        host = f"[{target['address']}]" if ":" in target["address"] else target["address"]
        assert entry["targets"] == [f"{host}:9100"]


@pytest.mark.parametrize("receiver", [
    {},
    {"type": "webhook", "url": "https://hooks.example.org/tflab?token=abc"},
    {"type": "email", "to": "admins@example.org", "from": "tflab@example.org",
     "smarthost": "mail.example.org:587", "auth_username": "tflab", "auth_password": "pw"},
], ids=["none", "webhook", "email"])
def test_alertmanager_config_passes_amtool(tmp_path: Path, receiver: dict[str, str]) -> None:
    amtool = shutil.which("amtool")
    assert amtool, "amtool is missing: install Debian's prometheus-alertmanager package"
    config = render(ROLE / "templates" / "alertmanager.yml.j2", tmp_path / "alertmanager.yml",
                    monitoring_server_alert_receiver=receiver)
    proc = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (admin,) = yaml.safe_load(config.read_text())["receivers"]
    kind = {"webhook": "webhook_configs", "email": "email_configs"}.get(receiver.get("type", ""))
    assert set(admin) == {"name"} | ({kind} if kind else set())
