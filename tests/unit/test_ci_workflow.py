"""The GitHub workflow runs what .ci/run runs: the same tiers and selections, every Molecule
scenario on Debian 12, Ubuntu 22.04 and 24.04, and a timeout on every job."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
JOBS = WORKFLOW["jobs"]


def ci_tiers() -> dict[str, list[str]]:
    """.ci/run's `tier NAME COMMAND...` and `tier_run NAME COMMAND...` lines (a tier run beside
    another), as argument lists (continuation lines joined, shell expansions and redirections dropped)."""
    tiers = {}
    script = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")
    for line in script.splitlines():
        line = line.strip()
        if line.startswith(("tier ", "tier_run ")) and not line.startswith("tier_run() "):
            words = shlex.split(re.sub(r"\$\{[^}]*\}|[0-9]?>\S*|&$", "", line))
            if not words[1].startswith("$"):  # not tier()'s own call of tier_run
                tiers[words[1]] = words[2:]
    return tiers


def job_commands(job: dict[str, object]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])  # type: ignore[attr-defined]


def marker_of(argv: list[str]) -> str:
    return argv[argv.index("-m") + 1]


def test_every_tier_of_ci_run_has_its_job() -> None:
    tiers = ci_tiers()
    assert set(tiers) == {"setup", "unit", "package", "testbed"}, tiers
    # Every job's scripts/dev test runs the same set-up itself.
    assert "scripts/dev setup" in tiers["setup"][-1]
    assert tiers["unit"][0] == ".ci/fresh-rootfs-check" and "bookworm" in tiers["unit"]
    assert "--suite \"${{ matrix.os.suite }}\"" in job_commands(JOBS["fresh-rootfs"])
    suites = {os_["suite"] for os_ in JOBS["fresh-rootfs"]["strategy"]["matrix"]["os"]}
    assert "bookworm" in suites
    assert f'-m {marker_of(tiers["package"])}' in job_commands(JOBS["package"])
    # The test-bed tier is split in the workflow: sandbox-host tests, and one job per scenario and OS.
    assert marker_of(tiers["testbed"]) == "testbed and not package"
    assert '-m "testbed and not molecule and not package"' in job_commands(JOBS["testbed"])
    assert "-m molecule" in job_commands(JOBS["molecule"])


def test_the_molecule_matrix_is_every_scenario_on_three_systems() -> None:
    matrix = JOBS["molecule"]["strategy"]["matrix"]
    scenarios = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    assert sorted(matrix["scenario"]) == scenarios
    assert {os_["suite"] for os_ in matrix["os"]} == {"bookworm", "jammy", "noble"}
    assert "test_scenario[${{ matrix.scenario }}]" in job_commands(JOBS["molecule"])


def test_every_job_has_a_timeout() -> None:
    assert all(isinstance(job.get("timeout-minutes"), int) for job in JOBS.values()), JOBS.keys()
