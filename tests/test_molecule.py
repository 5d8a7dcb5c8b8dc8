"""Molecule scenarios (create, converge, idempotence, verify, destroy) as pytest cases.

Each scenario's full log goes to .molecule-logs/<scenario>.log; a failure shows its tail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.molecule, pytest.mark.testbed, pytest.mark.slow]

SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
# With pytest-xdist (`-n 2 --dist loadgroup`, .ci/run's Molecule tier) the scenarios run on two
# workers, in two groups of about equal length: the long lab scenario with the short docker one,
# the workspace scenario with the firewall and driver ones. Each scenario has its own container
# names and subnets, so two can share the engine.
WORKER_GROUPS = {"default": "lab", "docker": "lab", "workspace": "roles", "firewall": "roles",
                 "gpu-driver": "roles"}


@pytest.mark.parametrize("scenario", [
    pytest.param(s, marks=pytest.mark.xdist_group(WORKER_GROUPS.get(s, s))) for s in SCENARIOS])
def test_scenario(scenario: str) -> None:
    logs = ROOT / ".molecule-logs"
    logs.mkdir(exist_ok=True)
    log_path = logs / f"{scenario}.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PY_COLORS": "0", "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1"}
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.run(["molecule", "test", "-s", scenario], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, check=False, timeout=2400)
    print(f"molecule {scenario}: rc={proc.returncode} in {time.monotonic() - started:.0f} s")
    tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-120:])
    assert proc.returncode == 0, f"molecule test -s {scenario} failed; log {log_path}:\n{tail}"
