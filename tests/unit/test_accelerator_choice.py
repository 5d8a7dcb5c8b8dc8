"""Which accelerator a command runs with, decided before any host is contacted."""

from __future__ import annotations

from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from tflab_provision import accelerator


def fake_mitogen(tmp_path: Path, with_strategy: bool = True) -> ModuleSpec:
    package = tmp_path / "ansible_mitogen"
    (package / "plugins" / "strategy").mkdir(parents=True)
    if with_strategy:
        (package / "plugins" / "strategy" / "mitogen_linear.py").write_text("")
    spec = ModuleSpec("ansible_mitogen", None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    return spec


def test_none_unless_asked() -> None:
    accel = accelerator.resolve(None, environ={})
    assert not accel.active and accel.envvars == {} and accel.note == ""


def test_the_flag_wins_over_the_environment(tmp_path: Path) -> None:
    spec = fake_mitogen(tmp_path)
    accel = accelerator.resolve("none", environ={accelerator.ENV: "mitogen"}, find_spec=lambda _: spec,
                                ansible_version=lambda: "2.19.14")
    assert not accel.active


def test_mitogen_sets_its_strategy_plugin(tmp_path: Path) -> None:
    spec = fake_mitogen(tmp_path)
    accel = accelerator.resolve(None, environ={accelerator.ENV: "mitogen"}, find_spec=lambda _: spec,
                                ansible_version=lambda: "2.19.14")
    assert accel.active and accel.note == ""
    assert accel.envvars == {"ANSIBLE_STRATEGY": "mitogen_linear",
                             "ANSIBLE_STRATEGY_PLUGINS": str(tmp_path / "ansible_mitogen/plugins/strategy")}
    # Tasks in forks of a pristine interpreter (a library installed mid-run is seen by later tasks).
    assert accel.extra_vars == {"mitogen_task_isolation": "fork"}


@pytest.mark.parametrize("version", ["2.18.3", "2.20.0rc1"])
def test_an_untested_ansible_core_runs_without_it_and_says_so(tmp_path: Path, version: str) -> None:
    spec = fake_mitogen(tmp_path)
    accel = accelerator.resolve("mitogen", find_spec=lambda _: spec, ansible_version=lambda: version)
    assert not accel.active and accel.requested == "mitogen" and accel.envvars == {}
    assert version in accel.note and "2.19" in accel.note and "without the accelerator" in accel.note


def test_missing_mitogen_names_the_extra() -> None:
    accel = accelerator.resolve("mitogen", find_spec=lambda _: None, ansible_version=lambda: "2.19.14")
    assert not accel.active and "tflab-provision[fast]" in accel.note


def test_a_mitogen_without_the_strategy_is_refused(tmp_path: Path) -> None:
    spec = fake_mitogen(tmp_path, with_strategy=False)
    accel = accelerator.resolve("mitogen", find_spec=lambda _: spec, ansible_version=lambda: "2.19.14")
    assert not accel.active and "mitogen_linear" in accel.note


def test_an_unknown_name_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match=r"TFLAB_ACCELERATOR='turbo'.*none, mitogen"):
        accelerator.resolve(None, environ={accelerator.ENV: "turbo"})

