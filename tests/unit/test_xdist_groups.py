"""The test-bed tier's grouping (tests/conftest.py, .ci/run -n 3 --dist loadgroup) really groups.

pytest-xdist's loadgroup rewrites node ids, which pytest 9.2 ignores (pytest-xdist issue #1386):
the tests are then spread over the workers without any error, and sandbox-host tests that share
a module's host run on several workers at once. This runs a probe under xdist and checks that each
group stayed on one worker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "unit" / "fixtures" / "xdist" / "probe_groups.py"


def test_each_group_runs_on_one_worker(tmp_path: Path) -> None:
    record = tmp_path / "workers.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(PROBE), "-n", "3", "--dist", "loadgroup", "-q",
         "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "TFLAB_XDIST_PROBE_RECORD": str(record)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workers: dict[str, set[str]] = defaultdict(set)
    runs = record.read_text().split("\n")
    for line in filter(None, runs):
        kind, worker = line.split()
        workers[kind].add(worker)
    assert len([r for r in runs if r]) == 12, runs
    assert {kind: len(ws) for kind, ws in workers.items()} == {"sandboxes": 1, "lab": 1, "roles": 1}, workers
    assert "none" not in set().union(*workers.values()), "the probe did not run under xdist"
