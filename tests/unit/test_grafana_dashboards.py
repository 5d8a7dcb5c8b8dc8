"""The Grafana dashboards the monitoring_server role ships, checked without Grafana (it cannot be
installed here): structure, the data source variable, and every query parsed by Prometheus' own
PromQL parser (each expression becomes a recording rule under `promtool check rules`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "roles" / "monitoring_server" / "files" / "grafana").glob("*.json"))
GRAFANA_TASKS = ROOT / "roles" / "monitoring_server" / "tasks" / "grafana.yml"

# Series the dashboards may read, with their labels: the issue-14 contract's tflab metrics (written by
# roles/node_metrics), node_exporter's and Prometheus' own; every scraped series also has job, instance, node.
SCRAPE_LABELS = {"job", "instance", "node"}
WS = {"workspace", "user"}
GPU = {"gpu", "uuid", "workspace"}
METRICS: dict[str, set[str]] = {
    "up": set(),
    "node_filesystem_avail_bytes": {"device", "fstype", "mountpoint"},
    "node_filesystem_size_bytes": {"device", "fstype", "mountpoint"},
    "tflab_workspace_info": WS | {"uid", "container"},
    "tflab_workspace_up": WS, "tflab_workspace_healthy": WS,
    "tflab_workspace_cpu_seconds_total": WS, "tflab_workspace_cpu_limit_cores": WS,
    "tflab_workspace_memory_bytes": WS, "tflab_workspace_memory_limit_bytes": WS,
    "tflab_workspace_pids": WS, "tflab_workspace_pids_limit": WS, "tflab_workspace_data_bytes": WS,
    "tflab_workspace_gpu_info": WS | {"gpu", "uuid"},
    "tflab_gpu_info": GPU | {"name"}, "tflab_gpu_utilization_ratio": GPU,
    "tflab_gpu_memory_used_bytes": GPU, "tflab_gpu_memory_total_bytes": GPU,
    "tflab_node_driver_info": {"installed", "loaded"}, "tflab_node_driver_mismatch": set(),
    "tflab_node_reboot_pending": set(), "tflab_node_reboot_pending_since_timestamp_seconds": set(),
    "tflab_node_firewall_in_sync": set(), "tflab_node_docker_default_runtime_info": {"runtime"},
    "tflab_collector_last_success_timestamp_seconds": set(), "tflab_collector_duration_seconds": set(),
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
                "and", "or", "unless", "rate", "irate", "increase", "sum", "max", "min", "avg", "count",
                "label_values", "time", "max_over_time", "min_over_time", "avg_over_time", "topk"}
# Grafana's own variables, replaced the way Grafana would before the query reaches Prometheus.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def targets(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(panel, target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def as_prometheus_query(expr: str, variables: set[str]) -> str:
    for name, value in GRAFANA_VARS.items():
        expr = expr.replace(name, value)
    for name in variables:
        expr = expr.replace(f"${name}", ".*" if f'=~"${name}"' in expr else "x")
    assert "$" not in expr, f"unknown variable in {expr}"
    return expr


def test_there_are_dashboards() -> None:
    assert DASHBOARDS, "no dashboard JSON in roles/monitoring_server/files/grafana"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dashboard = load(path)
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dashboard["panels"], "a dashboard without panels"
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["type"] in {"stat", "timeseries", "table", "gauge", "bargauge"}
        grid = panel["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"} and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_uids_are_unique() -> None:
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_parses_as_promql(path: Path, tmp_path: Path) -> None:
    """promtool has no offline query parser, but `check rules` parses every rule's expression."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install Debian's prometheus package (scripts/dev setup does)"
    dashboard = load(path)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    rules = [{"record": f"dashboard:panel{panel['id']}:{target['refId']}",
              "expr": as_prometheus_query(target["expr"], variables)}
             for panel, target in targets(dashboard)]
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(rules_file)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_queries_and_legends_use_only_known_metrics_and_labels(path: Path) -> None:
    dashboard = load(path)
    for panel, target in targets(dashboard):
        expr = re.sub(r'"[^"]*"', '""', target["expr"])
        expr = re.sub(r"\[[^\]]*\]", "", expr)
        names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL_WORDS
        metrics = {n for n in names if n in METRICS or n.startswith(("tflab_", "node_"))}
        assert metrics, (panel["title"], target["expr"])
        unknown = metrics - set(METRICS)
        assert not unknown, f"{panel['title']}: metrics outside the contract: {unknown}"
        labels = set().union(*(METRICS[m] for m in metrics)) | SCRAPE_LABELS
        matchers = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", target["expr"]))
        assert matchers <= labels, f"{panel['title']}: unknown label matchers {matchers - labels}"
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert legend <= labels, f"{panel['title']}: legend uses labels {legend - labels} the series lack"


def test_the_role_installs_every_shipped_dashboard() -> None:
    tasks = yaml.safe_load(GRAFANA_TASKS.read_text())
    installed = next(t for t in tasks if t["name"].endswith("Install the tflab dashboards"))["loop"]
    assert sorted(installed) == [path.name for path in DASHBOARDS]
