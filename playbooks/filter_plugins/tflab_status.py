"""Filters for status.yml: live use per workspace from Prometheus query answers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

GIB = 1024**3


def tflab_usage_by_workspace(results: Iterable[Mapping[str, Any]] | None) -> dict[str, dict[str, float]]:
    """{workspace: {figure: value}} from a loop of uri results over {key: figure, value: query}
    (Prometheus instant vectors with a `workspace` label); failed or skipped queries add nothing."""
    usage: dict[str, dict[str, float]] = {}
    for result in results or []:
        answer = result.get("json") or {}
        if result.get("skipped") or result.get("status") != 200 or answer.get("status") != "success":
            continue
        figure = str(result["item"]["key"])
        for series in answer.get("data", {}).get("result", []):
            workspace = series.get("metric", {}).get("workspace")
            if workspace:
                usage.setdefault(str(workspace), {})[figure] = float(series["value"][1])
    return dict(sorted(usage.items()))


def tflab_usage_line(figures: Mapping[str, float]) -> str:
    """One workspace's use for the status table, e.g. 'CPU 0.25 cores · memory 1.2/2.0 GiB · GPU 34%'."""
    parts = []
    if "cpu_cores" in figures:
        parts.append(f"CPU {figures['cpu_cores']:.2f} cores")
    if "memory_bytes" in figures:
        limit = figures.get("memory_limit_bytes", 0.0)
        of = f"/{limit / GIB:.1f}" if limit > 0 else ""
        parts.append(f"memory {figures['memory_bytes'] / GIB:.1f}{of} GiB")
    if "gpu_utilization" in figures:
        parts.append(f"GPU {figures['gpu_utilization'] * 100:.0f}%")
    return " · ".join(parts) or "no figures yet"


class FilterModule:
    """Registers the status filters."""

    def filters(self) -> dict[str, Any]:
        return {"tflab_usage_by_workspace": tflab_usage_by_workspace, "tflab_usage_line": tflab_usage_line}
