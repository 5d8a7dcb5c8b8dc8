"""A corpus of bad inventories: each fails validation with its message and contacts no host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Tflab

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "inventories" / "bad_cases.yml").read_text())


def write_inventory(root: Path, case: dict[str, Any], port: int) -> Path:
    inv = root / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "host_vars").mkdir()
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"counted": {
        "ansible_host": "127.0.0.1", "ansible_port": port, "ansible_user": "nobody"}}}}))
    base = {"tflab_admin_cidrs": ["127.0.0.0/8"]}
    if "raw_group_vars" in case:
        (inv / "group_vars" / "all.yml").write_text(case["raw_group_vars"])
    else:
        (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump({**base, **case.get("group_vars", {})}))
    if "host_vars" in case:
        (inv / "host_vars" / "counted.yml").write_text(yaml.safe_dump(case["host_vars"]))
    return inv


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 20
    assert len({c["id"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_inventory_is_refused_before_any_connection(
        case: dict[str, Any], tmp_path: Path, connection_counter: tuple[int, list[object]]) -> None:
    port, connections = connection_counter
    inventory = write_inventory(tmp_path, case, port)
    tflab = Tflab(tmp_path / "state")
    if "facts" in case:  # what an earlier run cached about the host
        facts = tflab.state_dir / "facts"
        facts.mkdir(parents=True)
        (facts / "counted").write_text(json.dumps(case["facts"]))
    proc = tflab.run("apply", "-i", str(inventory))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    flat = " ".join(proc.stderr.split())
    assert case["expect"] in flat, proc.stderr
    assert connections == []


def test_the_example_inventory_is_valid(tflab: Tflab, project_root: Path) -> None:
    proc = tflab.run("apply", "-i", str(project_root / "inventory" / "example"), "--validate-only")
    assert proc.returncode == 0, proc.stderr
    assert "gpu01" in proc.stdout and "gpu02" in proc.stdout
