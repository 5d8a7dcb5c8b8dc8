"""status.yml's live-use filters, on Prometheus answers of the shape its HTTP API returns."""

from __future__ import annotations

from pathlib import Path

from pathload import load_module

ROOT = Path(__file__).resolve().parents[2]
status = load_module("tflab_status", ROOT / "playbooks/filter_plugins/tflab_status.py")


def answer(key: str, values: dict[str, str], status_code: int = 200) -> dict[str, object]:
    return {"item": {"key": key, "value": "query"}, "status": status_code,
            "json": {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"workspace": ws, "node": "gpu01"}, "value": [1796190000.1, v]}
                for ws, v in values.items()]}}}


def test_usage_is_grouped_per_workspace_and_skips_what_did_not_answer() -> None:
    results = [
        answer("memory_bytes", {"bob": "536870912", "alice": "1610612736"}),
        answer("memory_limit_bytes", {"alice": "2147483648"}),
        answer("cpu_cores", {"alice": "0.25"}),
        answer("gpu_utilization", {"alice": "0.5"}, status_code=503),
        {"item": {"key": "cpu_cores"}, "skipped": True},
        {"item": {"key": "cpu_cores"}, "status": -1, "msg": "Connection refused"},
    ]
    usage = status.tflab_usage_by_workspace(results)
    assert list(usage) == ["alice", "bob"]
    assert usage["alice"] == {"memory_bytes": 1610612736.0, "memory_limit_bytes": 2147483648.0,
                              "cpu_cores": 0.25}
    assert status.tflab_usage_line(usage["alice"]) == "CPU 0.25 cores · memory 1.5/2.0 GiB"
    assert status.tflab_usage_line(usage["bob"]) == "memory 0.5 GiB"
    assert status.tflab_usage_line({"gpu_utilization": 0.344}) == "GPU 34%"
    assert status.tflab_usage_line({}) == "no figures yet"
    assert status.tflab_usage_by_workspace(None) == {}
