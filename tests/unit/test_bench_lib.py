"""The bench's parsers and A/B bookkeeping (bench/benchlib.py), checked offline."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from benchlib import (  # bench/ holds scripts, not a package
    Figure,
    Run,
    TreeSampler,
    alternate,
    parse_cpu_model,
    parse_kv_kb,
    parse_recap,
    parse_stat_ppid,
    ratio,
    slope,
    tasks_run,
    total,
)

PLAYBOOK_OUTPUT = """\
TASK [Bench | 20 assert (controller only)] *************************************
ok: [tflab-bench-1]

PLAY RECAP *********************************************************************
tflab-bench-1   : ok=20   changed=0    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
tflab-bench-2   : ok=19   changed=1    unreachable=0    failed=1    skipped=2    rescued=0    ignored=0

TASKS RECAP ********************************************************************
Wednesday 25 November 2026  21:19:14 +0000 (0:00:04.643)       0:00:12.324 ****
===============================================================================
Bench | Print a line per host ------------------------------------------- 4.64s
"""


def test_recap_gives_counts_per_host_and_stops_at_the_next_section() -> None:
    hosts = parse_recap(PLAYBOOK_OUTPUT)
    assert set(hosts) == {"tflab-bench-1", "tflab-bench-2"}
    assert hosts["tflab-bench-2"] == {"ok": 19, "changed": 1, "unreachable": 0, "failed": 1,
                                      "skipped": 2, "rescued": 0, "ignored": 0}
    assert total(hosts, "changed") == 1 and total(hosts, "ok") == 39


def test_no_recap_means_no_hosts() -> None:
    assert parse_recap("ERROR! the playbook could not be found\n") == {}


def test_proc_parsers() -> None:
    status = "Name:\tpython3\nVmHWM:\t  81234 kB\nVmRSS:\t   70000 kB\n"
    assert parse_kv_kb(status, "VmHWM") == 81234
    assert parse_kv_kb(status, "VmSwap") is None
    assert parse_cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    # the command name may hold spaces and parentheses
    assert parse_stat_ppid("4242 (tricky ) name) S 17 4242 4242 0 -1") == 17


def test_sampler_sees_this_process() -> None:
    sampler = TreeSampler(os.getpid(), lambda pid, _cmd: "me" if pid == os.getpid() else "")
    sampler.sample()
    assert sampler.tree_peak_kb > 0 and sampler.hwm_kb["me"] > 0


def test_alternate_reverses_the_order_each_round_after_one_warm_up_per_arm() -> None:
    calls: list[str] = []

    def arm(name: str) -> Run:
        calls.append(name)
        return Run(name, [name], 1.0, 0, "", "")

    results = alternate(3, {"A": lambda: arm("A"), "B": lambda: arm("B")})
    assert calls == ["A", "B", "A", "B", "B", "A", "A", "B"]
    assert [len(v) for v in results.values()] == [3, 3]


def test_a_failed_check_stops_the_comparison() -> None:
    def check(run: Run) -> None:
        if run.rc:
            raise RuntimeError("changed")

    with pytest.raises(RuntimeError):
        alternate(1, {"A": lambda: Run("A", [], 1.0, 2, "", "")}, check=check)


@pytest.mark.parametrize(("value", "target", "extra", "passed"), [
    (1.04, 1.05, True, True), (1.06, 1.05, True, False), (0.05, 0.10, False, False), (None, 1.0, True, None),
])
def test_figure_judgement(value: float | None, target: float, extra: bool, passed: bool | None) -> None:
    assert Figure("k", "t", value, target).judge(extra_ok=extra).passed is passed


def test_ratio_of_zero_is_infinite_not_an_error() -> None:
    assert ratio(1.0, 0.0) == float("inf")


def test_slope_is_the_least_squares_line() -> None:
    k, c = slope([1, 2, 4, 8], [3.0, 4.0, 6.0, 10.0])  # y = x + 2 exactly
    assert k == pytest.approx(1.0) and c == pytest.approx(2.0)
    k, _ = slope([20, 40, 80, 160], [3.1, 3.9, 6.2, 9.8])
    assert 0.04 < k < 0.05
    with pytest.raises(ValueError, match="two distinct"):
        slope([8, 8], [1.0, 2.0])


def test_tasks_run_counts_ok_skipped_and_failed_once() -> None:
    counts = parse_recap(PLAYBOOK_OUTPUT)
    assert tasks_run(counts["tflab-bench-1"]) == 20
    assert tasks_run(counts["tflab-bench-2"]) == 22  # changed and ignored are inside ok
