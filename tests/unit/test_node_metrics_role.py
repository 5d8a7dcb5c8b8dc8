"""The node_metrics role's inputs and its boundary with the collector: they say the same."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pathload import load_module

ROLE = Path(__file__).resolve().parents[2] / "roles" / "node_metrics"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
SPEC = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
nm = load_module("tflab_node_metrics", ROLE / "files" / "tflab_node_metrics.py")


def test_every_default_is_in_the_spec_with_the_same_value() -> None:
    assert set(DEFAULTS) == set(SPEC)
    for name, value in DEFAULTS.items():
        assert SPEC[name].get("default") == value, name
        assert name.startswith("node_metrics_")


def test_every_default_has_a_comment() -> None:
    lines = (ROLE / "defaults" / "main.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^node_metrics_\w+:", line):
            assert lines[i - 1].startswith("#"), line


def test_the_readme_lists_every_variable_in_spec_order() -> None:
    readme = (ROLE / "README.md").read_text()
    assert re.findall(r"^\| `(node_metrics_\w+)` \|", readme, flags=re.M) == list(SPEC)


def test_the_settings_file_the_role_writes_uses_only_settings_the_collector_knows() -> None:
    assert set(VARS["_node_metrics_config"]) <= set(nm.DEFAULTS)
    # The role's defaults for what the collector also defaults must agree.
    assert DEFAULTS["node_metrics_textfile_dir"] == nm.DEFAULTS["textfile_dir"]
    assert DEFAULTS["node_metrics_data_root"] == nm.DEFAULTS["data_root"]
    assert DEFAULTS["node_metrics_driver_packages"] == nm.DEFAULTS["driver_packages"]
    assert DEFAULTS["node_metrics_config_file"] == nm.DEFAULT_CONFIG


def test_the_contract_metric_names_are_all_declared() -> None:
    """Names fixed by the issue 14 contract (rules, dashboards and `tflab status` read them)."""
    contract = [
        "tflab_workspace_info", "tflab_workspace_up", "tflab_workspace_healthy",
        "tflab_workspace_cpu_seconds_total", "tflab_workspace_cpu_limit_cores",
        "tflab_workspace_memory_bytes", "tflab_workspace_memory_limit_bytes", "tflab_workspace_pids",
        "tflab_workspace_pids_limit", "tflab_workspace_data_bytes", "tflab_workspace_gpu_info",
        "tflab_gpu_info", "tflab_gpu_utilization_ratio", "tflab_gpu_memory_used_bytes",
        "tflab_gpu_memory_total_bytes", "tflab_node_driver_info", "tflab_node_driver_mismatch",
        "tflab_node_reboot_pending", "tflab_node_reboot_pending_since_timestamp_seconds",
        "tflab_node_firewall_in_sync", "tflab_node_docker_default_runtime_info",
        "tflab_collector_last_success_timestamp_seconds", "tflab_collector_duration_seconds",
    ]
    declared = {name for name, _kind, _help in nm.METRICS}
    assert set(contract) <= declared
    readme = (ROLE / "README.md").read_text()
    assert all(f"`{name}" in readme for name in declared)
