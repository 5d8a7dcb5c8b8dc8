"""The inventory verdict cache: any change to what validation reads must change the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tflab_provision.inventory import validation_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "inventory" / "example", tmp_path / "lab")
    return tmp_path / "lab"


def key(inventory: Path, facts: Path | None = None) -> str:
    return validation_key((inventory,), ROOT, facts)


def test_same_inputs_same_key(inventory: Path) -> None:
    assert key(inventory) == key(inventory)


def test_an_edited_vars_file_changes_the_key(inventory: Path) -> None:
    before = key(inventory)
    vars_file = next((inventory / "host_vars").rglob("*.yml"))
    vars_file.write_text(vars_file.read_text() + "\ntflab_data_root: /srv/elsewhere\n")
    assert key(inventory) != before


def test_a_new_file_of_any_format_changes_the_key(inventory: Path) -> None:
    before = key(inventory)
    (inventory / "extra.ini").write_text("[gpu]\nnode9\n")
    assert key(inventory) != before


def test_ansible_settings_change_the_key(inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = key(inventory)
    monkeypatch.setenv("ANSIBLE_HASH_BEHAVIOUR", "merge")
    assert key(inventory) != before


def test_new_facts_change_the_key(inventory: Path, tmp_path: Path) -> None:
    facts = tmp_path / "facts"
    facts.mkdir()
    before = key(inventory, facts)
    (facts / "node1").write_text('{"nvidia_gpu": {"count": 2}}')
    assert key(inventory, facts) != before
