"""Issue 16: tflab as Ansible users consume content, checked from outside the checkout.

The wheel and the tflab.provision collection are built from this checkout, installed into a fresh
virtualenv, and used from an empty directory: `tflab init` and validation (no checkout found, so
the collection the wheel carries is the project), `ansible-doc` by FQCN, the tarball installed with
ansible-galaxy, `ansible-test sanity` on the collection tree, `ansible-builder create` for the EE,
and (on the test bed) a playbook that uses only `tflab.provision.firewall` converging a sandbox host.

CI runs these as their own tier (.ci/run `package`, `-m package`); the converge test is also
marked testbed (it needs the Docker engine), and the other tiers exclude `package`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tflab_provision import collection

from conftest import ROOT, Tflab, docker

pytestmark = pytest.mark.package

VERSION = collection.project_version(ROOT)
MODULES = sorted(p.stem for p in (ROOT / "playbooks" / "library").glob("*.py"))
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
PKG_PREFIX = "tflab-pkg"  # this file's own sandbox hosts (no other test uses the prefix)


@dataclass(frozen=True)
class Artifacts:
    wheel: Path
    wheel_log: str
    tarball: Path
    tree: Path  # .../ansible_collections/tflab/provision


def run(argv: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def outside_env(venv: Path, **extra: str) -> dict[str, str]:
    """An environment that knows nothing of the checkout: the fresh venv first on PATH, no
    ANSIBLE_*, TFLAB_* or PYTHONPATH (pip keeps the machine's own settings: proxy CA, mirrors)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANSIBLE_", "TFLAB_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    return {**env, **extra}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """The wheel (pip's isolated PEP 517 build, as a user's `pip install` does) and the collection
    tarball (`ansible-galaxy collection build` of the generated tree) in dist/, where
    execution-environment.yml picks it up."""
    out = tmp_path_factory.mktemp("wheel")
    proc = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(ROOT)])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    wheel = next(out.glob("tflab_provision-*.whl"))
    tree = collection.build_tree(ROOT, tmp_path_factory.mktemp("tree"))
    tarball = collection.build_tarball(tree, ROOT / "dist")
    return Artifacts(wheel, proc.stdout + proc.stderr, tarball, tree)


def make_venv(path: Path, *requirements: str) -> Path:
    proc = run([sys.executable, "-m", "venv", str(path)])
    assert proc.returncode == 0, proc.stderr
    proc = run([str(path / "bin" / "pip"), "install", "-q", *requirements], env=outside_env(path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return path


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, artifacts: Artifacts) -> Iterator[tuple[Path, Path]]:
    """A fresh venv with only the wheel (and its PyPI dependencies), and an empty directory."""
    venv = make_venv(tmp_path_factory.mktemp("venv") / "v", str(artifacts.wheel))
    yield venv, tmp_path_factory.mktemp("empty")
    shutil.rmtree(venv, ignore_errors=True)  # up to 600 MB once the converge test added `ansible`


# --- what is built -------------------------------------------------------------------------------

def test_wheel_builds_without_deprecation_warnings_and_carries_the_collection(artifacts: Artifacts) -> None:
    noise = [line for line in artifacts.wheel_log.splitlines() if re.search(r"deprecat", line, re.I)]
    assert not noise, "\n".join(noise)
    with zipfile.ZipFile(artifacts.wheel) as whl:
        names = set(whl.namelist())
        metadata = whl.read(f"tflab_provision-{VERSION}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Requires-Python: >=3.11" in metadata
    base = "ansible_collections/tflab/provision"
    assert f"{base}/galaxy.yml" in names and f"{base}/meta/runtime.yml" in names
    assert {f"{base}/plugins/modules/{m}.py" for m in MODULES} <= names
    role_entries = {p.relative_to(ROOT).as_posix() for p in (ROOT / "roles").glob("*/tasks/main.yml")}
    assert {f"{base}/{entry}" for entry in role_entries} <= names
    assert {f"{base}/inventory/example/hosts.yml", f"{base}/inventory/sandbox/hosts.yml"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_collection_is_generated_from_the_checkout(artifacts: Artifacts) -> None:
    tree = artifacts.tree
    galaxy = yaml.safe_load((tree / "galaxy.yml").read_text())
    assert (galaxy["namespace"], galaxy["name"], galaxy["version"]) == ("tflab", "provision", VERSION)
    runtime = yaml.safe_load((tree / "meta" / "runtime.yml").read_text())
    assert runtime["requires_ansible"] == ">=2.19.0,<2.20.0"
    assert sorted(p.name for p in (tree / "roles").iterdir()) == ROLES
    for module in MODULES:
        assert (tree / "plugins" / "modules" / f"{module}.py").read_bytes() == \
            (ROOT / "playbooks" / "library" / f"{module}.py").read_bytes()
    # Every filter reached by FQCN: Ansible finds filters by short name only outside collections.
    filters = [*(ROOT / "playbooks" / "filter_plugins").glob("*.py"),
               *(ROOT / "roles").glob("*/filter_plugins/*.py")]
    names = [n for f in filters for n in collection.filter_names(f)]
    assert {"tf_workspace_ports", "tflab_cidrs", "https_front_door_urls"} <= set(names)
    short = re.compile(rf"(\|\s*|map\(\s*['\"])({'|'.join(names)})\b")
    leftovers = [f"{p.relative_to(tree)}: {m.group(0)}" for p in tree.rglob("*")
                 if p.suffix in (".yml", ".j2") for m in short.finditer(p.read_text())]
    assert not leftovers
    assert not list(tree.glob("roles/*/filter_plugins"))
    assert "library" not in (tree / "ansible.cfg").read_text()
    with_manifest = run(["tar", "-tzf", str(artifacts.tarball)])
    assert "MANIFEST.json" in with_manifest.stdout.split()


# --- the collection's own checks ---------------------------------------------------------------------

OFFLINE_GET_PIP = '''"""Stand-in for ansible-test's get-pip bootstrap script (tests/test_package.py):
the CI machines cannot reach ci-files.testing.ansible.com, so pip runs from a pip wheel beside
this file, downloaded from PyPI. It takes get-pip's arguments."""
import glob
import os
import sys

sys.path.insert(0, sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "{wheel}")))[-1])
from pip._internal.cli.main import main  # noqa: E402

sys.exit(main(["install", "--upgrade", "--force-reinstall",
               *[a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel", "--no-pip")]]))
'''


def offline_get_pip() -> None:
    """ansible-test bootstraps pip into each sanity venv from a script it downloads from
    ci-files.testing.ansible.com (unreachable here); it uses a cached copy when there is one."""
    import ansible_test

    source = (Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
    match = re.search(r"pip='([0-9.]+)'", source)
    assert match, "ansible-test's pip version not found"
    version = match.group(1)
    cache = Path.home() / ".ansible" / "test" / "cache"
    script = cache / f"get_pip_{version.replace('.', '_')}.py"
    if script.exists():
        return
    cache.mkdir(parents=True, exist_ok=True)
    proc = run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache),
                f"pip=={version}"])
    assert proc.returncode == 0, proc.stderr
    script.write_text(OFFLINE_GET_PIP.format(wheel=f"pip-{version}-py3-none-any.whl"))


def test_ansible_test_sanity_passes(artifacts: Artifacts) -> None:
    """Every sanity test of ansible-core 2.19 runs locally with this Python (no --docker: no
    registry here). pslint and shellcheck find nothing to check (no PowerShell, no .sh files);
    the ignores (tests/sanity/ignore-2.19.txt) are the Apache licence and the shebangs of scripts
    the roles install on hosts, each with its reason."""
    offline_get_pip()
    proc = run([str(Path(sys.executable).parent / "ansible-test"), "sanity", "--python", PY, "--color", "no"],
               cwd=artifacts.tree, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    assert "validate-modules" in proc.stdout and "pylint" in proc.stdout


def test_ansible_builder_create_makes_the_ee_build_context(artifacts: Artifacts, tmp_path: Path) -> None:
    """The context only: building the image needs the UBI base image from a registry (none here)."""
    builder = Path(sys.executable).parent / "ansible-builder"
    proc = run([str(builder), "create", "-f", str(ROOT / "execution-environment.yml"), "-c", str(tmp_path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No matches" not in proc.stdout + proc.stderr
    build = tmp_path / "_build"
    assert (build / "collections" / artifacts.tarball.name).is_file()
    galaxy = yaml.safe_load((build / "requirements.yml").read_text())
    assert "collections/tflab-provision.tar.gz" in [c["name"] for c in galaxy["collections"]]
    assert [line for line in (build / "requirements.txt").read_text().splitlines()
            if line and not line.startswith("#")] == ["cryptography>=41"]
    assert "openssh-clients [platform:rpm]" in (build / "bindep.txt").read_text()
    containerfile = (tmp_path / "Dockerfile").read_text()
    assert "python3.11" in containerfile and "ansible-galaxy collection install" in containerfile


# --- used from outside the checkout --------------------------------------------------------------------

def test_tflab_from_the_wheel_works_in_an_empty_directory(fresh: tuple[Path, Path]) -> None:
    venv, empty = fresh
    env = outside_env(venv)
    state = ["--state-dir", str(empty / ".state")]
    where = run([str(venv / "bin" / "python"), "-c", "from tflab_provision.runner import Project; "
                 "p = Project.locate(); print(p.root, p.is_collection)"], cwd=empty, env=env)
    root, is_collection = where.stdout.split()
    assert Path(root).is_relative_to(venv) and root.endswith("ansible_collections/tflab/provision"), where
    assert is_collection == "True"

    init = run([str(venv / "bin" / "tflab"), "init", "lab", *state], cwd=empty, env=env)
    assert init.returncode == 0, init.stderr
    example = ROOT / "inventory" / "example" / "hosts.yml"
    assert (empty / "lab" / "hosts.yml").read_text() == example.read_text()
    valid = run([str(venv / "bin" / "tflab"), "apply", "-i", "lab", "--validate-only", *state],
                cwd=empty, env=env)
    assert valid.returncode == 0 and "inventory valid" in valid.stdout, valid.stdout + valid.stderr
    listed = run([str(venv / "bin" / "tflab"), "workspace", "list", "-i", "lab", "--json", *state],
                 cwd=empty, env=env)
    assert listed.returncode == 0, listed.stderr
    assert {"alice", "bob"} <= {row["name"] for row in json.loads(listed.stdout)}
    # The default inventory is the working directory's inventory/lab, never one in site-packages.
    missing = run([str(venv / "bin" / "tflab"), "apply", "--validate-only", *state], cwd=empty, env=env)
    assert missing.returncode == 1 and str(empty / "inventory" / "lab") in " ".join(missing.stderr.split())


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_shows_our_modules_by_fqcn(fresh: tuple[Path, Path], module: str) -> None:
    venv, empty = fresh
    proc = run([str(venv / "bin" / "ansible-doc"), f"tflab.provision.{module}"],
               cwd=empty, env=outside_env(venv))
    assert proc.returncode == 0, proc.stderr
    assert f"tflab.provision.{module}" in proc.stdout and "OPTIONS" in proc.stdout
    assert str(venv) in proc.stdout  # the wheel's copy, not the checkout's


def test_tarball_installs_with_ansible_galaxy(fresh: tuple[Path, Path], artifacts: Artifacts) -> None:
    venv, empty = fresh
    collections = empty / "collections"
    env = outside_env(venv)
    # --force: ansible-galaxy counts the wheel's copy (on sys.path) as installed already.
    proc = run([str(venv / "bin" / "ansible-galaxy"), "collection", "install", "--no-deps", "--force",
                "-p", str(collections), str(artifacts.tarball)], cwd=empty, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    doc = run([str(venv / "bin" / "ansible-doc"), "-t", "role", "tflab.provision.firewall"],
              cwd=empty, env=env)
    assert doc.returncode == 0 and "firewall_admin_cidrs" in doc.stdout, doc.stderr
    assert str(collections) in doc.stdout  # the configured path wins over the wheel's copy
    syntax = run([str(venv / "bin" / "ansible-playbook"), "-i", "localhost,", "--syntax-check",
                  "tflab.provision.site"], cwd=empty, env=env)
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr


# --- on the test bed: one role by FQCN on a sandbox host ---------------------------------------------

FIREWALL_ONLY = """\
---
- name: Only the firewall of tflab, by its FQCN
  hosts: all
  become: true
  roles:
    - role: tflab.provision.firewall
      vars:
        # The test bed reaches the host from Docker's bridge (SSH to a published port).
        firewall_admin_cidrs: [127.0.0.0/8, 172.16.0.0/12]
"""


@pytest.fixture
def pkg_host(tmp_path: Path) -> Iterator[Path]:
    """One bare sandbox host, tflab-pkg-1 (the cached bare-host image), and its inventory."""
    tflab = Tflab(tmp_path / "sandbox-state")
    proc = tflab.run("sandbox", "up", "--count", "1", "--prefix", PKG_PREFIX)
    assert proc.returncode == 0, proc.stderr
    try:
        yield Path(proc.stdout.strip())
    finally:
        tflab.run("sandbox", "down", "--prefix", PKG_PREFIX)


@pytest.mark.testbed
def test_firewall_role_by_fqcn_converges_a_sandbox_host(tmp_path: Path, artifacts: Artifacts,
                                                        fresh: tuple[Path, Path], pkg_host: Path) -> None:
    """The user who wants only our firewall: the wheel's `collections` extra added to the fresh
    venv (the `ansible` package bundles community.general, which the role uses), the tarball
    installed by ansible-galaxy, plain ansible-playbook in an empty directory; then `tflab check`
    runs the packaged check playbook against the same host."""
    venv = fresh[0]
    env = outside_env(venv)
    extra = run([str(venv / "bin" / "pip"), "install", "-q", f"{artifacts.wheel}[collections]"], env=env)
    assert extra.returncode == 0, extra.stdout[-3000:] + extra.stderr[-3000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    collections = tmp_path / "collections"
    # --force: ansible-galaxy counts the wheel's copy (on sys.path) as installed already.
    proc = run([str(venv / "bin" / "ansible-galaxy"), "collection", "install", "--no-deps", "--force",
                "-p", str(collections), str(artifacts.tarball)], cwd=empty, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (empty / "firewall.yml").write_text(FIREWALL_ONLY)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    playbook = [str(venv / "bin" / "ansible-playbook"), "-i", str(pkg_host), "firewall.yml"]
    first = run(playbook, cwd=empty, env=env)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    again = run(playbook, cwd=empty, env=env)
    assert again.returncode == 0 and re.search(r"changed=0\s", again.stdout), again.stdout[-4000:]
    host = f"{PKG_PREFIX}-1"
    check = docker("exec", host, "/usr/local/sbin/tflab-firewall", "check")
    assert check.returncode == 0 and "in sync" in check.stdout, check.stdout + check.stderr

    del env["ANSIBLE_COLLECTIONS_PATH"]
    status = run([str(venv / "bin" / "tflab"), "check", "-i", str(pkg_host), "--json",
                  "--state-dir", str(tmp_path / "state")], cwd=empty, env=env)
    # 2: check lists what would stop provisioning; a bare sandbox host has no GPU (found by the
    # packaged nvidia_gpu_facts module, called by its short name in tflab.provision.check).
    assert status.returncode == 2, status.stdout[-3000:] + status.stderr[-3000:]
    result = json.loads(status.stdout)
    assert result["hosts"][host]["failed"] == 0 and result["hosts"][host]["unreachable"] == 0
    assert "no NVIDIA GPU found" in json.dumps(result["reports"][host])
