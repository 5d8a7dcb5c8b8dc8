"""The accelerator changes how tasks reach a host, never what they do.

Two bare sandbox hosts get the full site.yml (every role; no workspace, whose image would cost a
1.5 GB load each: the fault and demo hosts run the workspaces under the test bed's accelerator),
one through Mitogen and one plain, at the same time, each from a state directory of its own (so
neither shares the other's lab CA or fact cache). The cold runs must agree task by task (ok,
changed, skipped), and each host is then a no-op for the *other* path: what one converged, the
other leaves alone.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, Tflab

# Its own two hosts (prefixes tflab-accm, tflab-accp) share nothing with the other sandbox-host
# tests, so it runs on the worker of the shorter Molecule group instead of lengthening theirs
# (2026-12-03 here: lab's worker idle for its last 15 minutes while the sandbox tests ran on).
pytestmark = [pytest.mark.testbed, pytest.mark.slow, pytest.mark.xdist_group("lab")]

GROUP = ROOT / "inventory" / "sandbox"
RESULTS = {"runner_on_ok": "ok", "runner_on_skipped": "skipped", "runner_on_failed": "failed",
           "runner_on_unreachable": "unreachable"}


@dataclass
class Side:
    """One host and the tflab (state dir, accelerator) that converges it."""

    tflab: Tflab
    prefix: str
    inventory: Path | None = None

    @property
    def host(self) -> str:
        return f"{self.prefix}-1"

    def apply_argv(self) -> list[str]:
        assert self.inventory is not None
        # -v: every task result is written to job_events/ (by default only changes and failures).
        return self.tflab.argv("apply", "-i", str(GROUP), "-i", str(self.inventory), "-v", "--json")


def start(side: Side, accelerator: str) -> subprocess.Popen[str]:
    return subprocess.Popen(side.apply_argv(), cwd=ROOT,
                            env=side.tflab.env({"TFLAB_ACCELERATOR": accelerator}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=1800)
    try:
        result: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON from tflab (rc {proc.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
    assert proc.returncode == 0, (result.get("failures"), err[-2000:])
    return result


def outcomes(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(task, ok|changed|skipped|...) for each task result of the run, in the order they came."""
    events = []
    for path in Path(result["private_data_dir"]).glob("artifacts/*/job_events/*.json"):
        event = json.loads(path.read_text())
        if event.get("event") in RESULTS:
            events.append(event)
    seen = []
    for event in sorted(events, key=lambda e: e["counter"]):
        data = event["event_data"]
        kind = RESULTS[event["event"]]
        if kind == "ok" and (data.get("res") or {}).get("changed"):
            kind = "changed"
        seen.append((str(data.get("task", "")).strip(), kind))
    return seen


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Side, Side]]:
    fast = Side(Tflab(tmp_path_factory.mktemp("accel-mitogen"), "mitogen"), "tflab-accm")
    plain = Side(Tflab(tmp_path_factory.mktemp("accel-none"), "none"), "tflab-accp")
    for side in (fast, plain):
        proc = side.tflab.run("sandbox", "up", "--count", "1", "--prefix", side.prefix)
        assert proc.returncode == 0, proc.stderr
        side.inventory = Path(proc.stdout.strip())
    yield fast, plain
    for side in (fast, plain):
        side.tflab.run("sandbox", "down", "--prefix", side.prefix)


def test_cold_and_no_op_site_runs_agree_task_by_task_with_and_without_mitogen(
        sides: tuple[Side, Side]) -> None:
    fast, plain = sides
    cold_fast, cold_plain = (finish(proc) for proc in [start(fast, "mitogen"), start(plain, "none")])
    assert (cold_fast["accelerator"], cold_plain["accelerator"]) == ("mitogen", "none")
    by_task_fast, by_task_plain = outcomes(cold_fast), outcomes(cold_plain)
    assert len(by_task_fast) > 150, "the full site.yml ran"
    assert ("changed" in dict(by_task_fast).values()), "a cold run changes the host"
    assert by_task_fast == by_task_plain
    assert cold_fast["hosts"][fast.host] == cold_plain["hosts"][plain.host]

    # Each host is a no-op for the other path.
    noop_plain_on_fast, noop_fast_on_plain = (finish(proc) for proc in [start(fast, "none"),
                                                                       start(plain, "mitogen")])
    assert (noop_plain_on_fast["accelerator"], noop_fast_on_plain["accelerator"]) == ("none", "mitogen")
    for result, host in ((noop_plain_on_fast, fast.host), (noop_fast_on_plain, plain.host)):
        assert result["hosts"][host]["changed"] == 0, result["changes"]
    assert outcomes(noop_plain_on_fast) == outcomes(noop_fast_on_plain)
