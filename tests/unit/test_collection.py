"""The collection generator's rewrites and tflab's project lookup outside a checkout (issue 16)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tflab_provision import collection, runner
from tflab_provision.runner import ConfigError, Project

from conftest import ROOT

NAMES = ["tflab_cidrs", "tflab_cidr_contains", "tf_workspace_ports"]


@pytest.mark.parametrize(("text", "expected"), [
    ("{{ x | tflab_cidrs(4) }}", "{{ x | tflab.provision.tflab_cidrs(4) }}"),
    ("{{ x|tflab_cidrs }}", "{{ x|tflab.provision.tflab_cidrs }}"),
    ("{{ x\n   | tf_workspace_ports(d) }}", "{{ x\n   | tflab.provision.tf_workspace_ports(d) }}"),
    ("{{ l | map('tflab_cidr_contains', a) }}", "{{ l | map('tflab.provision.tflab_cidr_contains', a) }}"),
    ('{{ l | select("tflab_cidrs") }}', '{{ l | select("tflab.provision.tflab_cidrs") }}'),
    # Longest name first: tflab_cidr_contains is not tflab_cidrs with a tail.
    ("{{ a | tflab_cidr_contains(b) }}", "{{ a | tflab.provision.tflab_cidr_contains(b) }}"),
])
def test_filters_get_their_fqcn(text: str, expected: str) -> None:
    assert collection.fqcn_filters(text, NAMES) == expected


@pytest.mark.parametrize("text", [
    "tflab_cidrs: [10.0.0.0/8]",                        # a variable of the same name
    "{{ x | tflab.provision.tflab_cidrs }}",            # already qualified
    "{{ x | tflab_cidrs_extra }}",                      # another filter
    "{{ x | ansible.builtin.tflab_cidrs }}",            # someone else's
    "# the tflab_cidrs filter checks CIDRs",             # prose
])
def test_other_text_is_left_alone(text: str) -> None:
    assert collection.fqcn_filters(text, NAMES) == text


def test_filter_names_come_from_the_plugins_filters_mapping() -> None:
    names = collection.filter_names(ROOT / "playbooks" / "filter_plugins" / "tflab_net.py")
    assert names[:3] == ["tflab_cidrs", "tflab_cidr_contains", "tflab_rules_allow"]


def test_collection_ansible_cfg_drops_only_the_checkout_paths() -> None:
    cfg = collection.collection_ansible_cfg((ROOT / "ansible.cfg").read_text())
    assert "library" not in cfg and "filter_plugins" not in cfg and "roles_path" not in cfg
    for kept in ("forks = 25", "pipelining = true", "fact_caching = jsonfile", "[ssh_connection]"):
        assert kept in cfg


def test_version_is_pyprojects() -> None:
    assert collection.project_version(ROOT) == "0.1.0"


def test_build_refuses_a_directory_that_is_not_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(collection.BuildError, match="roles is missing"):
        collection.build_tree(tmp_path, tmp_path / "out")


def test_host_scripts_get_a_shebang_ignore(tmp_path: Path) -> None:
    tree = collection.build_tree(ROOT, tmp_path)
    ignores = (tree / "tests" / "sanity" / "ignore-2.19.txt").read_text().splitlines()
    line = "roles/tf_workspace/files/tflab-healthcheck shebang # a script the role installs on hosts"
    assert line in ignores
    assert not [line for line in ignores if "tflab-firewall.sh.j2" in line]  # #!/bin/sh is allowed


# --- Project outside a checkout -----------------------------------------------------------------------

def fake_collection(base: Path) -> Path:
    root = base / "ansible_collections" / "tflab" / "provision"
    (root / "playbooks").mkdir(parents=True)
    (root / "playbooks" / "site.yml").write_text("---\n")
    (root / "galaxy.yml").write_text("namespace: tflab\n")
    return root


def test_a_collection_project_points_ansible_at_itself(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANSIBLE_COLLECTIONS_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    project = Project(fake_collection(tmp_path / "site-packages"))
    assert project.is_collection
    assert project.workdir == tmp_path  # the default inventory is the user's, not site-packages'
    paths = project.envvars()["ANSIBLE_COLLECTIONS_PATH"].split(os.pathsep)
    assert paths[0] == str(tmp_path / "site-packages") and "~/.ansible/collections" in paths
    monkeypatch.setenv("ANSIBLE_COLLECTIONS_PATH", "/opt/collections")
    assert project.envvars()["ANSIBLE_COLLECTIONS_PATH"].endswith(f"{os.pathsep}/opt/collections")


def test_a_checkout_project_is_unchanged() -> None:
    project = Project(ROOT)
    assert not project.is_collection and project.workdir == ROOT and project.envvars() == {}


def test_locate_falls_back_to_the_collection_beside_the_package(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel install: no checkout above the package, none in cwd, the collection beside it."""
    site = tmp_path / "site-packages"
    root = fake_collection(site)
    (site / "tflab_provision").mkdir()
    monkeypatch.setattr(runner, "__file__", str(site / "tflab_provision" / "runner.py"))
    monkeypatch.delenv("TFLAB_PROJECT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Project.locate().root == root.resolve()
    (root / "playbooks" / "site.yml").unlink()
    with pytest.raises(ConfigError, match="install the tflab-provision wheel"):
        Project.locate()
