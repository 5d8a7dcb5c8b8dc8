"""Reading and validating an inventory before any host is contacted.

Two passes. Per file (so every error names its file): `tflab_*` settings against the schema in
config.py, role variables against the roles' meta/argument_specs.yml, unknown names (typos)
with a suggestion. Per host, on the variables as Ansible itself merges them: port collisions,
duplicate users and UIDs, GPU indices beyond what the host has (from the fact cache, once
known), dataset mounts outside the allowed roots.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from .config import TFLAB_KEYS, TflabSettings, is_template


@dataclass(frozen=True)
class Problem:
    """One finding: where, which field, what is wrong and how to fix it."""

    source: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.field}: {self.message}"


class InventoryInvalid(ValueError):
    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# libyaml's parser where PyYAML has it: reading the role specs is most of a validation's cost.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[misc,valid-type]
    """YAML with Ansible's tags kept opaque (vault values are not ours to read)."""


def _opaque(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    return "{{ opaque }}"


_Loader.add_constructor("!vault", _opaque)
_Loader.add_constructor("!unsafe", _opaque)


def _load_yaml(path: Path) -> Any:
    text = path.read_text()
    if text.startswith("$ANSIBLE_VAULT"):
        return None  # an encrypted file: Ansible validates it at run time
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass


# --- role argument specs --------------------------------------------------------------------

@cache
def role_specs(roles_dir: Path) -> dict[str, dict[str, Any]]:
    """Every role input: variable name → its argument spec (type, choices, elements)."""
    specs: dict[str, dict[str, Any]] = {}
    for spec_file in sorted(roles_dir.glob("*/meta/argument_specs.yml")):
        data = yaml.load(spec_file.read_text(), Loader=_SafeLoader) or {}
        for entry in (data.get("argument_specs") or {}).values():
            for name, option in (entry.get("options") or {}).items():
                specs[name] = dict(option or {})
    return specs


def role_prefixes(roles_dir: Path) -> tuple[str, ...]:
    """Prefixes of roles that declare their inputs (only those can call a name unknown)."""
    return tuple(sorted(f"{p.parent.parent.name}_" for p in roles_dir.glob("*/meta/argument_specs.yml")))


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "path": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
    "list": (list,), "dict": (dict,),
}


def check_against_spec(name: str, value: Any, spec: Mapping[str, Any]) -> str | None:
    """Why a literal value does not fit its argument spec, or None."""
    if is_template(value) or value is None:
        return None
    kind = str(spec.get("type", "str"))
    allowed = _TYPES.get(kind)
    if allowed and (not isinstance(value, allowed) or (kind == "int" and isinstance(value, bool))):
        return f"must be of type {kind}, got {type(value).__name__} {value!r}"
    choices = spec.get("choices")
    if choices and kind != "list" and value not in choices:
        return f"must be one of {', '.join(map(str, choices))}; got {value!r}"
    if choices and kind == "list":
        bad = [v for v in value if v not in choices]
        if bad:
            return f"items {bad!r} are not among {', '.join(map(str, choices))}"
    return None


# --- inventory files ----------------------------------------------------------------------

def inventory_files(sources: Sequence[Path], every_file: bool = False) -> Iterator[Path]:
    """The files of the inventory sources that hold variables (YAML), or with every_file all
    files Ansible could read from them, whatever their format (what a verdict depends on)."""
    for source in sources:
        base = source if source.is_dir() else source.parent
        if source.is_file():
            yield source
        elif every_file:
            yield from sorted(p for p in source.rglob("*") if p.is_file())
            continue  # group_vars/ and host_vars/ are inside it
        else:
            yield from sorted(p for p in source.glob("*.y*ml") if p.is_file())
        for sub in ("group_vars", "host_vars"):
            folder = base / sub
            if folder.is_dir():
                yield from sorted(p for p in folder.rglob("*")
                                  if p.is_file() and (every_file or p.suffix in (".yml", ".yaml", "")))


def _var_blocks(data: Any, path: Path) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, vars) pairs of a file: a vars file is one block; an inventory has many."""
    if not isinstance(data, Mapping):
        return
    vars_dirs = ("group_vars", "host_vars")
    if path.parent.name in vars_dirs or path.parent.parent.name in vars_dirs:
        yield "", data
        return

    def walk(group: str, node: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
        if not isinstance(node, Mapping):
            return
        if isinstance(node.get("vars"), Mapping):
            yield f"{group}.vars.", node["vars"]
        for host, hvars in (node.get("hosts") or {}).items():
            if isinstance(hvars, Mapping):
                yield f"{group}.hosts.{host}.", hvars
        for child, cnode in (node.get("children") or {}).items():
            yield from walk(f"{group}.children.{child}", cnode)

    for name, node in data.items():
        yield from walk(str(name), node)


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def check_block(source: str, prefix: str, block: Mapping[str, Any], roles_dir: Path) -> list[Problem]:
    problems: list[Problem] = []
    specs = role_specs(roles_dir)
    prefixes = role_prefixes(roles_dir)
    tflab_vars = {k: v for k, v in block.items() if str(k).startswith("tflab_")}
    for key in tflab_vars:
        if key not in TFLAB_KEYS:
            problems.append(Problem(source, prefix + key, "unknown tflab setting" +
                                    _suggest(key, sorted(TFLAB_KEYS))))
    known = {k: v for k, v in tflab_vars.items() if k in TFLAB_KEYS}
    try:
        TflabSettings.model_validate(known)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"])
            where = where.replace(".[", "[")
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                field_name = str(err["loc"][-1])
                message = "unknown key" + _suggest(field_name, _workspace_keys())
            problems.append(Problem(source, prefix + where, message))
    for key, value in block.items():
        key = str(key)
        if key.startswith("tflab_") or not key.startswith(prefixes):
            continue
        if key not in specs:
            role_vars = [k for k in specs if k.startswith(key.split("_")[0])]
            problems.append(Problem(source, prefix + key, "not a variable of any role" +
                                    _suggest(key, role_vars or list(specs))))
            continue
        why = check_against_spec(key, value, specs[key])
        if why:
            problems.append(Problem(source, prefix + key, why))
    return problems


@cache
def _workspace_keys() -> list[str]:
    from .config import Workspace

    return sorted(Workspace.model_fields)


def check_files(sources: Sequence[Path], roles_dir: Path) -> list[Problem]:
    problems: list[Problem] = []
    for path in inventory_files(sources):
        try:
            data = _load_yaml(path)
        except yaml.YAMLError as exc:
            problems.append(Problem(str(path), "(file)", f"is not valid YAML: {exc}"))
            continue
        for prefix, block in _var_blocks(data, path):
            problems += check_block(str(path), prefix, block, roles_dir)
    return problems


# --- merged, per host ---------------------------------------------------------------------

def _workspace_filters(project_root: Path) -> Any:
    """The playbook's own port allocation (one rule for tflab, the firewall and the containers)."""
    path = project_root / "playbooks" / "filter_plugins" / "tf_workspace.py"
    spec = importlib.util.spec_from_file_location("tf_workspace_filters", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def merged_host_vars(sources: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Host → variables exactly as Ansible merges them (no host contacted, no facts)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(s) for s in sources])
    manager = VariableManager(loader=loader, inventory=inventory)
    return {h.name: dict(manager.get_vars(host=h)) for h in inventory.get_hosts()}


def cached_gpu_count(facts_dir: Path | None, host: str) -> int | None:
    if facts_dir is None or not (facts_dir / host).is_file():
        return None
    try:
        facts = json.loads((facts_dir / host).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    gpu = facts.get("nvidia_gpu") or facts.get("ansible_nvidia_gpu")
    return int(gpu["count"]) if isinstance(gpu, Mapping) and "count" in gpu else None


def _within(path: str, roots: Sequence[str]) -> bool:
    p = PurePosixPath(path)
    return any(p == PurePosixPath(r) or PurePosixPath(r) in p.parents for r in roots)


# The port allocation's settings, as the playbook hands them to the filter.
PORT_SETTINGS = {"ssh_base": "tf_workspace_ssh_port_base", "jupyter_base": "tf_workspace_jupyter_port_base",
                 "uid_base": "tf_workspace_uid_base", "range_size": "tf_workspace_port_range_size"}


def port_settings(hostvars: Mapping[str, Any]) -> dict[str, Any]:
    return {arg: hostvars[var] for arg, var in PORT_SETTINGS.items()
            if var in hostvars and not is_template(hostvars[var])}


def workspace_ports(project_root: Path) -> Any:
    """The `tf_workspace_ports` filter: workspaces → workspaces with their ports set."""
    return _workspace_filters(project_root).tf_workspace_ports


def check_host(host: str, hostvars: Mapping[str, Any], project_root: Path,
               facts_dir: Path | None) -> list[Problem]:
    source = f"host {host}"
    problems: list[Problem] = []
    workspaces = hostvars.get("tflab_workspaces") or []
    if is_template(workspaces) or not isinstance(workspaces, list):
        return problems
    try:
        workspace_ports(project_root)([dict(w) for w in workspaces], **port_settings(hostvars))
    except Exception as exc:  # AnsibleFilterError: the same words the playbook would say
        problems.append(Problem(source, "tflab_workspaces", str(exc)))
    gpu_count = cached_gpu_count(facts_dir, host)
    roots = hostvars.get("tflab_dataset_roots") or ["/srv/datasets"]
    for i, ws in enumerate(workspaces):
        if not isinstance(ws, Mapping):
            continue
        gpus = ws.get("gpus")
        if gpu_count is not None and isinstance(gpus, list):
            beyond = [g for g in gpus if isinstance(g, int) and g >= gpu_count]
            if beyond:
                problems.append(Problem(source, f"tflab_workspaces[{i}].gpus",
                                        f"GPU index {beyond} but {host} has {gpu_count} GPU(s) "
                                        f"(indices 0..{gpu_count - 1}); use existing indices or 'all'"))
        for j, ds in enumerate(ws.get("datasets") or []):
            src = ds.get("src") if isinstance(ds, Mapping) else None
            if isinstance(src, str) and not is_template(src) and not _within(src, roots):
                problems.append(Problem(source, f"tflab_workspaces[{i}].datasets[{j}].src",
                                        f"{src} is outside the allowed dataset roots "
                                        f"({', '.join(roots)}); move it or extend tflab_dataset_roots"))
    return problems


def validation_key(sources: Sequence[Path], project_root: Path, facts_dir: Path | None = None) -> str:
    """A hash of everything a verdict depends on: the inventory's files (all of them, whatever
    their format), the role specs and port rules, this package's code, Ansible's version and
    ANSIBLE_* settings, and the fact cache's state (GPU counts). Equal keys, equal verdicts."""
    from ansible.release import __version__ as ansible_version

    digest = hashlib.sha256(ansible_version.encode())
    inputs = list(inventory_files(sources, every_file=True))
    inputs += sorted((project_root / "roles").glob("*/meta/argument_specs.yml"))
    inputs.append(project_root / "playbooks" / "filter_plugins" / "tf_workspace.py")
    inputs += sorted(Path(__file__).parent.glob("*.py"))
    for path in inputs:
        digest.update(f"\0{path.resolve()}\0".encode())
        digest.update(path.read_bytes())
    for name in sorted(k for k in os.environ if k.startswith("ANSIBLE_")):
        digest.update(f"\0{name}={os.environ[name]}".encode())
    if facts_dir is not None and facts_dir.is_dir():
        for fact_file in sorted(facts_dir.iterdir()):
            stat = fact_file.stat()
            digest.update(f"\0{fact_file.name}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()


def validate_inventory(sources: Sequence[Path], project_root: Path,
                       facts_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Raise InventoryInvalid with every problem found; return the merged host vars."""
    problems = check_files(sources, project_root / "roles")
    if problems:
        raise InventoryInvalid(problems)
    try:
        hosts = merged_host_vars(sources)
    except Exception as exc:  # AnsibleError: unreadable inventory, missing vault secret
        raise InventoryInvalid([Problem(", ".join(map(str, sources)), "(inventory)", str(exc))]) from exc
    for host, hostvars in sorted(hosts.items()):
        problems += check_host(host, hostvars, project_root, facts_dir)
    if problems:
        raise InventoryInvalid(problems)
    return hosts
