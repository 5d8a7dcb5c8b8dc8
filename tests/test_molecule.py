"""Molecule scenarios (create, converge, idempotence, verify, destroy) as pytest cases.

Each scenario's full log goes to .molecule-logs/<scenario>.log; a failure shows its tail.
The steps are the scenario's own test_sequence, run one `molecule <step>` at a time (as `molecule
test` does), so that the role scenarios can run converge, idempotence and verify through the
accelerator (Mitogen, tflab_provision/accelerator.py): most of their time is no-op and verify
tasks, where it saves the most (firewall's last verify play, which restarts its host, runs plain);
tests/test_accelerator.py runs the whole site.yml plain, as most admins run it, and compares the
two paths task by task. Create and destroy always run
plain: the Docker driver's async tasks never finish under Mitogen (docs/facts.md).
TFLAB_TEST_ACCELERATOR=none runs every step plain.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tflab_provision import accelerator

from conftest import ROOT, TEST_ACCELERATOR

pytestmark = [pytest.mark.molecule, pytest.mark.testbed, pytest.mark.slow]

SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
# With pytest-xdist (`-n 3 --dist loadgroup`, .ci/run's test-bed tier) the scenarios run on two
# workers, in two groups of about equal length: the long lab scenario with the short docker one,
# the workspace scenario with the firewall and driver ones. Each scenario has its own container
# names and subnets, so two can share the engine.
WORKER_GROUPS = {"default": "lab", "docker": "lab", "workspace": "roles", "firewall": "roles",
                 "gpu-driver": "roles"}
# The scenarios whose converge, idempotence and verify run through the accelerator: all of them.
# `firewall`'s verify restarts the lab host's container, which Mitogen's connection does not survive
# (wait_for_connection: "a Broker that has already exited", 2026-12-02): that play is its last and
# names Ansible's own strategy.
ACCELERATED_STEPS = frozenset({"converge", "idempotence", "verify"})
ACCELERATED_SCENARIOS = frozenset(WORKER_GROUPS)
STEP_TIMEOUT_S = 2400


def steps_of(scenario: str) -> list[str]:
    config = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text())
    return list(config["scenario"]["test_sequence"])


def accelerator_env(scenario: str) -> dict[str, str]:
    """The accelerator's settings for the steps that use it ({} when the scenario runs plain)."""
    if scenario not in ACCELERATED_SCENARIOS or TEST_ACCELERATOR == "none":
        return {}
    accel = accelerator.resolve(TEST_ACCELERATOR)
    assert accel.active, f"TFLAB_TEST_ACCELERATOR={TEST_ACCELERATOR}: {accel.note}"
    # tflab passes accel.extra_vars with -e; molecule's idempotence and verify take no -e, so the
    # scenario's inventory holds the same values: they must not drift apart.
    config = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text())
    inventory = config["provisioner"]["inventory"]
    if "group_vars" in inventory.get("links", {}):  # a directory of the scenario's own
        group_vars = ROOT / "molecule" / scenario / inventory["links"]["group_vars"] / "all.yml"
        inventory_vars = yaml.safe_load(group_vars.read_text())
    else:
        inventory_vars = inventory["group_vars"]["all"]
    assert {k: inventory_vars.get(k) for k in accel.extra_vars} == dict(accel.extra_vars), scenario
    return dict(accel.envvars)


@pytest.mark.parametrize("scenario", [
    pytest.param(s, marks=pytest.mark.xdist_group(WORKER_GROUPS.get(s, s))) for s in SCENARIOS])
def test_scenario(scenario: str) -> None:
    logs = ROOT / ".molecule-logs"
    logs.mkdir(exist_ok=True)
    log_path = logs / f"{scenario}.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PY_COLORS": "0", "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1"}
    fast = accelerator_env(scenario)
    started = time.monotonic()
    failed_step = None
    with log_path.open("w") as log:
        for step in steps_of(scenario):
            accelerated = bool(fast) and step in ACCELERATED_STEPS
            step_env = {**env, **fast} if accelerated else env
            note = " (accelerator: mitogen)" if accelerated else ""
            log.write(f"tflab: === molecule {step} -s {scenario}{note}\n")
            log.flush()
            t0 = time.monotonic()
            proc = subprocess.run(["molecule", step, "-s", scenario], cwd=ROOT, env=step_env, stdout=log,
                                  stderr=subprocess.STDOUT, check=False, timeout=STEP_TIMEOUT_S)
            log.write(f"tflab: === molecule {step}: rc={proc.returncode} in {time.monotonic() - t0:.0f} s\n")
            log.flush()
            if proc.returncode != 0:
                failed_step = step
                break
        if failed_step is not None:  # as `molecule test` does: never leave the instances behind
            subprocess.run(["molecule", "destroy", "-s", scenario], cwd=ROOT, env=env, stdout=log,
                           stderr=subprocess.STDOUT, check=False, timeout=600)
    print(f"molecule {scenario}: {'ok' if failed_step is None else 'failed at ' + failed_step} "
          f"in {time.monotonic() - started:.0f} s")
    tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-120:])
    assert failed_step is None, f"molecule {failed_step} -s {scenario} failed; log {log_path}:\n{tail}"
