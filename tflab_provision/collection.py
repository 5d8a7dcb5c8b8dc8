"""Build the `tflab.provision` Ansible collection from the checkout (issue 16).

The checkout stays the source of truth: `roles/`, `playbooks/library` (modules),
`playbooks/filter_plugins` (filters), `playbooks/*.yml` and the example inventories are copied
into `<dest>/ansible_collections/tflab/provision/` at build time, never kept twice by hand.
What only the collection has (`galaxy.yml`, `meta/runtime.yml`, its README) lives in
`collection/`; the version comes from pyproject.toml.

Two rewrites make the copied content resolve inside a collection:
- Filters: a role inside a collection searches its own collection first for *modules and
  actions* (so `docker_daemon_json:` still resolves), but filters are found by short name only
  in ansible.builtin/legacy paths; `| tf_workspace_ports` becomes `| tflab.provision.tf_workspace_ports`.
  Role-embedded filters (`roles/https_front_door/filter_plugins`) move to `plugins/filter/`:
  Ansible loads a role's own plugin dirs only for roles outside collections.
- ansible.cfg: the checkout's, without the paths that point into the checkout
  (library, filter_plugins, roles_path); `tflab` uses it when it runs the packaged collection.

Standard library only: setup.py imports this module inside pip's isolated build environment,
where neither Ansible nor PyYAML is installed.

    python -m tflab_provision.collection build [--dest build/collection] [--tarball dist/]
"""

from __future__ import annotations

import argparse
import configparser
import io
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

NAMESPACE = "tflab"
NAME = "provision"
FQCN = f"{NAMESPACE}.{NAME}"
# Files copied into the collection as they are, relative to the checkout.
SOURCE_FILES = ("CHANGELOG.md", "LICENSE")
# Paths in the checkout's ansible.cfg that point into the checkout; in the collection, roles and
# plugins are found through the collection itself.
CHECKOUT_ONLY_SETTINGS = ("library", "filter_plugins", "roles_path")
# Rewritten in YAML and Jinja files only.
TEXT_SUFFIXES = (".yml", ".yaml", ".j2")
# Role dirs whose files go to hosts as they are (scripts there keep their interpreter line).
HOST_FILE_DIRS = ("files", "templates")
# The non-module interpreter lines ansible-test 2.19's shebang test accepts (code-smell/shebang.py).
ANSIBLE_TEST_SHEBANGS = frozenset({
    b"#!/bin/bash -eu", b"#!/bin/bash -eux", b"#!/bin/sh", b"#!/usr/bin/env bash",
    b"#!/usr/bin/env fish", b"#!/usr/bin/env pwsh", b"#!/usr/bin/env python", b"#!/usr/bin/make -f",
})
SANITY_IGNORES_DEFAULT = Path("ignore-2.19.txt")
ROLE_FILTER_DIR = "filter_plugins"
ROLE_PLUGIN_DIR_SUFFIXES = ("_plugins", "library", "module_utils")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


class BuildError(RuntimeError):
    """The checkout lacks what the collection is built from."""


def collection_dir(dest: Path) -> Path:
    """Where the collection tree sits under DEST (ansible-test needs exactly this shape)."""
    return dest / "ansible_collections" / NAMESPACE / NAME


def project_version(source: Path) -> str:
    """The package version from pyproject.toml: the collection has the same one."""
    text = (source / "pyproject.toml").read_text()
    match = re.search(r'^\[project\]\s*$.*?^version\s*=\s*"([^"]+)"', text, re.M | re.S)
    if not match:
        raise BuildError(f"no [project] version in {source / 'pyproject.toml'}")
    return match.group(1)


def filter_names(plugin: Path) -> list[str]:
    """The names a FilterModule exposes, read from its `filters()` mapping without importing it."""
    text = plugin.read_text()
    body = text.split("def filters(", 1)[-1] if "def filters(" in text else ""
    return re.findall(r'^\s*"([a-z][a-z0-9_]*)"\s*:', body, re.M)


def fqcn_filters(text: str, names: Iterable[str]) -> str:
    """`| name` and `map('name'` (select, reject, ...) by their FQCN; other words untouched."""
    alternatives = "|".join(sorted((re.escape(n) for n in names), key=len, reverse=True))
    if not alternatives:
        return text
    text = re.sub(rf"(\|\s*)({alternatives})\b(?!\.)", rf"\g<1>{FQCN}.\g<2>", text)
    return re.sub(rf"(\b(?:map|select|reject|selectattr|rejectattr)\(\s*['\"])({alternatives})(['\"])",
                  rf"\g<1>{FQCN}.\g<2>\g<3>", text)


def collection_ansible_cfg(checkout_cfg: str) -> str:
    """The checkout's ansible.cfg without the settings that point into the checkout."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(checkout_cfg)
    for key in CHECKOUT_ONLY_SETTINGS:
        parser.remove_option("defaults", key)
    out = io.StringIO()
    out.write("# tflab's settings for running the packaged tflab.provision collection, generated from the\n"
              "# checkout's ansible.cfg (tflab_provision/collection.py) without its checkout paths.\n")
    parser.write(out)
    return out.getvalue()


def _rewrite_filters(tree: Path, names: list[str]) -> None:
    for path in sorted(tree.rglob("*")):
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            text = path.read_text()
            new = fqcn_filters(text, names)
            if new != text:
                path.write_text(new)


def build_tree(source: Path, dest: Path) -> Path:
    """Generate the collection tree from the checkout SOURCE under DEST; return its root."""
    source = source.resolve()
    for needed in ("roles", "playbooks/library", "playbooks/filter_plugins", "collection/galaxy.yml",
                   "inventory/example", "inventory/sandbox", "ansible.cfg", *SOURCE_FILES):
        if not (source / needed).exists():
            raise BuildError(f"{source / needed} is missing: build the collection from a checkout")
    root = collection_dir(dest)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)

    # Collection-only files, then galaxy.yml with the package's version.
    shutil.copytree(source / "collection", root, ignore=_IGNORED, dirs_exist_ok=True)
    galaxy = (root / "galaxy.yml").read_text()
    galaxy, count = re.subn(r"^version:.*$", f"version: {project_version(source)}", galaxy, flags=re.M)
    if count != 1:
        raise BuildError("collection/galaxy.yml needs exactly one top-level `version:` line")
    (root / "galaxy.yml").write_text(galaxy)
    for name in SOURCE_FILES:
        shutil.copy2(source / name, root / name)

    # Playbook-adjacent filters and role-embedded ones: a collection-hosted role's own plugin
    # dirs are not loaded (ansible/playbook/role/__init__.py adds them for legacy roles only).
    filters = sorted((source / "playbooks" / "filter_plugins").glob("*.py"))
    filters += sorted((source / "roles").glob(f"*/{ROLE_FILTER_DIR}/*.py"))
    for other in sorted((source / "roles").glob("*/*")):
        if other.is_dir() and other.name.endswith(ROLE_PLUGIN_DIR_SUFFIXES) and other.name != ROLE_FILTER_DIR:
            raise BuildError(f"{other}: only role-embedded filters are carried into the collection")
    names = [n for p in filters for n in filter_names(p)]
    (root / "plugins" / "modules").mkdir(parents=True)
    (root / "plugins" / "filter").mkdir(parents=True)
    for module in sorted((source / "playbooks" / "library").glob("*.py")):
        shutil.copy2(module, root / "plugins" / "modules" / module.name)
    for plugin in filters:
        shutil.copy2(plugin, root / "plugins" / "filter" / plugin.name)

    shutil.copytree(source / "roles", root / "roles",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ROLE_FILTER_DIR))
    (root / "playbooks").mkdir()
    for playbook in sorted((source / "playbooks").glob("*.yml")):
        shutil.copy2(playbook, root / "playbooks" / playbook.name)
    _rewrite_filters(root / "roles", names)
    _rewrite_filters(root / "playbooks", names)
    for group in ("example", "sandbox"):
        shutil.copytree(source / "inventory" / group, root / "inventory" / group, ignore=_IGNORED)
    (root / "ansible.cfg").write_text(collection_ansible_cfg((source / "ansible.cfg").read_text()))
    _ignore_host_script_shebangs(root)
    return root


def _ignore_host_script_shebangs(root: Path) -> None:
    """Scripts the roles install on hosts need their own interpreter line (`#!/usr/bin/env python3`),
    which ansible-test's shebang test allows only for modules: one ignore line per such file, added
    to the checked-in ignores (collection/tests/sanity/), so a new role's script needs no edit here."""
    lines = []
    for path in sorted(root.glob("roles/*/*/**/*")):
        if not path.is_file() or path.parts[len(root.parts) + 2] not in HOST_FILE_DIRS:
            continue
        with path.open("rb") as fh:
            first = fh.readline().strip()
        if first.startswith(b"#!") and first not in ANSIBLE_TEST_SHEBANGS:
            lines.append(f"{path.relative_to(root).as_posix()} shebang # a script the role installs on hosts")
    if not lines:
        return
    for ignores in sorted((root / "tests" / "sanity").glob("ignore-*.txt")) or [SANITY_IGNORES_DEFAULT]:
        path = root / "tests" / "sanity" / ignores.name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text() if path.exists() else ""
        path.write_text(text + "".join(f"{line}\n" for line in lines))


def build_tarball(tree: Path, output: Path, ansible_galaxy: str | None = None) -> Path:
    """`ansible-galaxy collection build` of TREE into OUTPUT; returns the tarball."""
    beside = Path(sys.executable).parent / "ansible-galaxy"
    galaxy = ansible_galaxy or (str(beside) if beside.exists() else "ansible-galaxy")
    output.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([galaxy, "collection", "build", "--force", "--output-path", str(output), str(tree)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"ansible-galaxy collection build failed:\n{proc.stdout}\n{proc.stderr}")
    version = re.search(r"^version:\s*(\S+)", (tree / "galaxy.yml").read_text(), re.M)
    tarball = output / f"{NAMESPACE}-{NAME}-{version.group(1) if version else ''}.tar.gz"
    if not tarball.is_file():
        raise BuildError(f"ansible-galaxy built the collection, but {tarball} is not there:\n{proc.stdout}")
    return tarball


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tflab_provision.collection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="generate the collection tree (and optionally its tarball)")
    build.add_argument("--source", type=Path, default=Path(__file__).resolve().parent.parent,
                       help="the checkout (default: the one holding this package)")
    build.add_argument("--dest", type=Path, default=Path("build/collection"),
                       help="the tree goes to DEST/ansible_collections/tflab/provision "
                            "(default build/collection)")
    build.add_argument("--tarball", type=Path, metavar="DIR",
                       help="also run ansible-galaxy collection build into DIR (e.g. dist/)")
    args = parser.parse_args(argv)
    try:
        tree = build_tree(args.source, args.dest)
        print(tree)
        if args.tarball:
            print(build_tarball(tree, args.tarball))
    except BuildError as exc:
        print(f"collection: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
