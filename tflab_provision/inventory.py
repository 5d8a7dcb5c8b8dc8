"""Reading and validating an inventory before any host is contacted.

Two passes. Per file (so every error names its file): `tflab_*` settings against the schema in
config.py, role variables against the roles' meta/argument_specs.yml (and the values the roles
would only refuse on the host), unknown names (typos) with a suggestion. Per host, on the
variables as Ansible itself merges them, `-e` vars files last (extra vars win): port collisions
and ports the host needs itself, duplicate users and UIDs, names of system accounts, keys the
workspace sshd refuses, GPU indices beyond what the host has (from the fact cache, once known),
dataset mounts outside the allowed roots. The workspace rules are the playbook's own filter
(playbooks/filter_plugins/tf_workspace.py), so tflab and the role refuse the same things.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .config import HTTP_PORT_DEFAULT, HTTPS_PORT_DEFAULT, TFLAB_KEYS, TflabSettings, check_cidr, is_template


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
        number = kind in ("str", "path") and isinstance(value, int | float)
        quote = f' (quote it: "{value}")' if number else ""
        return f"must be of type {kind}, got {type(value).__name__} {value!r}{quote}"
    choices = spec.get("choices")
    if choices and kind != "list" and value not in choices:
        return f"must be one of {', '.join(map(str, choices))}; got {value!r}"
    if choices and kind == "list":
        bad = [v for v in value if v not in choices]
        if bad:
            return f"items {bad!r} are not among {', '.join(map(str, choices))}"
    return None


def _branch_problem(value: Any) -> str | None:
    if value in ("", None) or re.fullmatch(r"[0-9]{3,4}", str(value)):
        return None
    return (f"{value!r} is not a driver branch: use its major version such as \"535\" or \"570\" "
            "(quoted), or leave it empty for the OS default")


def _apt_version_problem(value: Any) -> str | None:
    if value in ("", None) or re.fullmatch(r"([0-9]+:)?[0-9][A-Za-z0-9.+~-]*", str(value)):
        return None
    return (f"{value!r} is not an apt package version such as \"535.261.03-1\" "
            "(`apt-cache policy nvidia-kernel-dkms` lists them); leave it empty for the candidate")


def _port_problem(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= 65535:
        return f"{value} is not a TCP port (1-65535)"
    return None


def _inbound_problem(value: Any) -> str | None:
    """firewall_allowed_inbound: the role checks its items only on the host."""
    if not isinstance(value, list):
        return None
    for i, rule in enumerate(value):
        if not isinstance(rule, Mapping) or "port" not in rule:
            return f"[{i}] must be a dict {{port, proto, cidrs, comment}}"
        port = rule["port"]
        if not is_template(port) and (isinstance(port, bool) or not isinstance(port, int)
                                      or not 1 <= port <= 65535):
            return f"[{i}].port {port!r} is not a port (1-65535)"
        if rule.get("proto", "tcp") not in ("tcp", "udp"):
            return f"[{i}].proto {rule.get('proto')!r} must be tcp or udp"
        for cidr in rule.get("cidrs") or []:
            if is_template(cidr):
                continue
            try:
                check_cidr(str(cidr))
            except ValueError as exc:
                return f"[{i}].cidrs: {exc}"
    return None


# Values a role would refuse only on the host, after changing things: refused here, before.
ROLE_VALUE_RULES: dict[str, Callable[[Any], str | None]] = {
    "nvidia_driver_branch": _branch_problem,
    "nvidia_driver_version": _apt_version_problem,
    "sshd_hardening_port": _port_problem,
    "firewall_ssh_port": _port_problem,
    "firewall_allowed_inbound": _inbound_problem,
}


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
    failed: set[tuple[str | int, ...]] = set()
    try:
        TflabSettings.model_validate(known)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            failed.add(loc[:2] if loc[0] == "tflab_workspaces" and len(loc) > 1 else loc[:1])
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
        if not why and key in ROLE_VALUE_RULES and not is_template(value):
            why = ROLE_VALUE_RULES[key](value)
        if why:
            problems.append(Problem(source, prefix + key, why))
    rules = _workspace_filters(roles_dir.parent)
    return problems + [Problem(source, prefix + field, why)
                       for field, why in _rule_problems(block, rules, failed)]


def _has_template(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return is_template(value)


def _rule_problems(block: Mapping[str, Any], rules: Any,
                   failed: set[tuple[str | int, ...]]) -> Iterator[tuple[str, str]]:
    """(field, why) for what the role's filter refuses in one file's literal values: data roots,
    keys, dataset paths (the roots are a per-host matter). Fields the schema already refused
    are skipped, so each mistake is reported once."""
    for key in ("tflab_data_root", "tf_workspace_data_root"):
        value = block.get(key)
        if (key,) not in failed and isinstance(value, str) and not is_template(value):
            why = rules.data_root_problem(value)
            if why:
                yield key, why
    value = block.get("tflab_ephemeral_port_range")
    if ("tflab_ephemeral_port_range",) not in failed and value is not None and not _has_template(value):
        try:
            rules.ephemeral_range(value)
        except Exception as exc:  # AnsibleFilterError
            yield "tflab_ephemeral_port_range", str(exc)
    shared = block.get("tf_workspace_shared_datasets")
    if isinstance(shared, list):
        try:
            rules.tf_workspace_dataset_mounts([d for d in shared if not _has_template(d)])
        except Exception as exc:
            yield "tf_workspace_shared_datasets", str(exc)
    workspaces = block.get("tflab_workspaces")
    if not isinstance(workspaces, list) or ("tflab_workspaces",) in failed:
        return
    for i, ws in enumerate(workspaces):
        if not isinstance(ws, Mapping) or ("tflab_workspaces", i) in failed or ws.get("state") == "absent":
            continue
        for j, line in enumerate(ws.get("authorized_keys") or []):
            if isinstance(line, str) and not is_template(line):
                why = rules.authorized_key_problem(line)
                if why:
                    yield f"tflab_workspaces[{i}].authorized_keys[{j}]", why
        datasets = [d for d in ws.get("datasets") or [] if not _has_template(d)]
        try:
            rules.tf_workspace_dataset_mounts(datasets)
        except Exception as exc:
            yield f"tflab_workspaces[{i}].datasets", str(exc)


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


def load_vars_file(path: Path, vault_password_file: Path | None = None) -> Any:
    """A `-e` vars file's variables; a vault-encrypted one is decrypted with the run's vault
    password file, or None without one (Ansible then checks it at run time)."""
    raw = path.read_bytes()
    if raw.startswith(b"$ANSIBLE_VAULT"):
        if vault_password_file is None:
            return None
        from ansible.parsing.dataloader import DataLoader
        from ansible.parsing.vault import VaultLib, get_file_vault_secret

        secret = get_file_vault_secret(filename=str(vault_password_file), loader=DataLoader())
        secret.load()
        raw = VaultLib([("default", secret)]).decrypt(raw)
    return yaml.load(raw.decode(), Loader=_Loader)  # a SafeLoader subclass


def check_vars_files(vars_files: Sequence[Path], roles_dir: Path, vault_password_file: Path | None = None
                     ) -> tuple[list[Problem], dict[str, Any], dict[Path, list[str]]]:
    """Each vars file against the same schema as an inventory file; their variables merged in
    command-line order (a later -e wins, as in Ansible); and each file's variable names."""
    problems: list[Problem] = []
    merged: dict[str, Any] = {}
    names: dict[Path, list[str]] = {}
    for path in vars_files:
        try:
            data = load_vars_file(path, vault_password_file)
        except yaml.YAMLError as exc:
            problems.append(Problem(str(path), "(file)", f"is not valid YAML: {exc}"))
            continue
        except Exception as exc:  # AnsibleError: wrong vault password, unreadable password file
            problems.append(Problem(str(path), "(file)", f"could not be decrypted with the vault "
                                    f"password file: {exc}"))
            continue
        if data is None:
            continue
        if not isinstance(data, Mapping):
            problems.append(Problem(str(path), "(file)", "must be a mapping of variable names to values"))
            continue
        problems += check_block(str(path), "", data, roles_dir)
        merged.update(data)
        names[path] = [str(k) for k in data]
    return problems, merged, names


# --- merged, per host ---------------------------------------------------------------------

def filter_plugin(project_root: Path, name: str) -> Path:
    """One of our filter plugin files: playbooks/filter_plugins/ in a checkout, plugins/filter/ in
    the tflab.provision collection (tflab_provision/collection.py)."""
    for folder in (project_root / "playbooks" / "filter_plugins", project_root / "plugins" / "filter"):
        if (folder / name).is_file():
            return folder / name
    return project_root / "playbooks" / "filter_plugins" / name


@cache
def _workspace_filters(project_root: Path) -> Any:
    """The playbook's own workspace rules (one rule for tflab, the firewall and the containers)."""
    path = filter_plugin(project_root, "tf_workspace.py")
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


def inventory_hosts(sources: Sequence[Path]) -> list[str]:
    """The inventory's host names (no variables read, no host contacted)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    return sorted(h.name for h in InventoryManager(loader=DataLoader(),
                                                   sources=[str(s) for s in sources]).get_hosts())


def cached_gpu_count(facts_dir: Path | None, host: str) -> int | None:
    if facts_dir is None or not (facts_dir / host).is_file():
        return None
    try:
        facts = json.loads((facts_dir / host).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    gpu = facts.get("nvidia_gpu") or facts.get("ansible_nvidia_gpu")
    return int(gpu["count"]) if isinstance(gpu, Mapping) and "count" in gpu else None


# The port allocation's settings, as the playbook hands them to the filter.
PORT_SETTINGS = {"ssh_base": "tf_workspace_ssh_port_base", "jupyter_base": "tf_workspace_jupyter_port_base",
                 "uid_base": "tf_workspace_uid_base", "range_size": "tf_workspace_port_range_size"}


def port_settings(hostvars: Mapping[str, Any]) -> dict[str, Any]:
    return {arg: hostvars[var] for arg, var in PORT_SETTINGS.items()
            if var in hostvars and not is_template(hostvars[var])}


def workspace_ports(project_root: Path) -> Any:
    """The `tf_workspace_ports` filter: workspaces → workspaces with their ports set."""
    return _workspace_filters(project_root).tf_workspace_ports


def _literal(value: Any) -> Any:
    """A value with Jinja expressions left out (Ansible resolves them on the host)."""
    if isinstance(value, Mapping):
        return {k: _literal(v) for k, v in value.items() if not is_template(v)}
    if isinstance(value, list):
        return [_literal(v) for v in value if not is_template(v)]
    return value


def _literal_workspaces(workspaces: Sequence[Any]) -> list[Any]:
    """Workspaces as far as they are literal: a templated name or uid leaves the entry out."""
    out = []
    for ws in workspaces:
        if isinstance(ws, Mapping) and (is_template(ws.get("name")) or is_template(ws.get("uid"))):
            continue
        literal = _literal(ws)
        if isinstance(literal, dict):
            literal["datasets"] = [d for d in literal.get("datasets") or [] if not _has_template(d)]
        out.append(literal)
    return out


def _site_value(hostvars: Mapping[str, Any], extra: Mapping[str, Any], role_var: str,
                tflab_var: str, default: Any) -> Any:
    """What site.yml hands a role: its mapping from tflab_var, unless an extra var (-e) sets
    the role variable itself (extra vars beat the play's role vars)."""
    if role_var in extra:
        return extra[role_var]
    merged = {**hostvars, **extra}
    return merged[tflab_var] if merged.get(tflab_var) is not None else default


def https_port(hostvars: Mapping[str, Any]) -> int | None:
    """The host's HTTPS front-door port (tflab_https_port, default 443); None while templated."""
    return _front_door_port(hostvars, "tflab_https_port", HTTPS_PORT_DEFAULT)


def _front_door_port(hostvars: Mapping[str, Any], key: str, default: int) -> int | None:
    value = hostvars.get(key)
    if value is None:
        return default
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def front_door_ports(hostvars: Mapping[str, Any]) -> list[tuple[str, int, str]]:
    """(setting, port, what) of the ports nginx listens on: HTTPS, and the redirect unless 0."""
    ports = [("tflab_https_port", https_port(hostvars), "the HTTPS front door"),
             ("tflab_http_port", _front_door_port(hostvars, "tflab_http_port", HTTP_PORT_DEFAULT),
              "the front door's redirect to HTTPS")]
    return [(key, port, what) for key, port, what in ports if port]


def public_name(host: str, hostvars: Mapping[str, Any]) -> str:
    """The name in the host's URLs and certificate: tflab_public_name, ansible_host, the host."""
    for key in ("tflab_public_name", "ansible_host"):
        value = hostvars.get(key)
        if isinstance(value, str) and value and not is_template(value):
            return value
    return host


def https_base(name: str, port: int | None) -> str:
    """https://NAME[:PORT] (no port for 443; IPv6 addresses in brackets)."""
    host = f"[{name}]" if ":" in name else name
    return f"https://{host}" if port in (None, HTTPS_PORT_DEFAULT) else f"https://{host}:{port}"


def workspace_url(host: str, hostvars: Mapping[str, Any], workspace: str) -> str:
    """A workspace's Jupyter behind the host's nginx: https://<public name>[:port]/<name>/."""
    return f"{https_base(public_name(host, hostvars), https_port(hostvars))}/{workspace}/"


def _https_port_problems(hostvars: Mapping[str, Any], specs: Mapping[str, Mapping[str, Any]],
                         source: str) -> list[Problem]:
    """The front door's ports against each other and the host's own services (workspace
    ports: the filter, which gets them as reserved ports)."""
    ssh_default = (specs.get("sshd_hardening_port") or {}).get("default", 22)
    taken: list[tuple[Any, str]] = [(hostvars.get("sshd_hardening_port", ssh_default),
                                     "the host's SSH port (sshd_hardening_port)")]
    inbound = hostvars.get("firewall_allowed_inbound")
    for i, rule in enumerate(inbound if isinstance(inbound, list) else []):
        if isinstance(rule, Mapping) and rule.get("proto", "tcp") == "tcp":
            note = f" ({rule['comment']})" if rule.get("comment") else ""
            taken.append((rule.get("port"), f"firewall_allowed_inbound[{i}]{note}"))
    defaults = {"tflab_https_port": HTTPS_PORT_DEFAULT, "tflab_http_port": HTTP_PORT_DEFAULT}
    problems: list[Problem] = []
    for key, port, what in front_door_ports(hostvars):
        for owner_port, owner in taken:
            if owner_port == port:
                problems.append(Problem(source, key, f"{port} is {owner}; {what} and that service cannot "
                                        f"share the port: choose another {key} (default {defaults[key]})"))
        taken.append((port, f"{what} ({key})"))
    return problems


def _rule_settings(hostvars: Mapping[str, Any], specs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The filter's arguments as site.yml builds them for this host (see _tflab_* in site.yml)."""
    def literal(name: str, default: Any = None) -> Any:
        value = hostvars.get(name, default)
        return default if _has_template(value) else value

    ssh_port = literal("sshd_hardening_port", (specs.get("sshd_hardening_port") or {}).get("default", 22))
    reserved: list[dict[str, Any]] = [{"port": ssh_port,
                                       "comment": "the host's SSH port (sshd_hardening_port)"}]
    for i, rule in enumerate(literal("firewall_allowed_inbound", []) or []):
        if isinstance(rule, Mapping) and isinstance(rule.get("port"), int):
            note = f" ({rule['comment']})" if rule.get("comment") else ""
            reserved.append({"port": rule["port"], "comment": f"firewall_allowed_inbound[{i}]{note}"})
    for key, port, what in front_door_ports(hostvars):
        reserved.append({"port": port, "comment": f"{what} ({key})"})
    names = [n for n in (literal("sshd_hardening_admin_user"), literal("ansible_user"))
             if isinstance(n, str) and n]
    return {**port_settings(hostvars), "reserved_ports": reserved, "reserved_names": names,
            "ephemeral_ports": literal("tflab_ephemeral_port_range"),
            "accepted_algorithms": literal("ssh_crypto_policy_pubkey_accepted_algorithms"),
            "rsa_min_bits": literal("ssh_crypto_policy_rsa_min_bits")}


def check_host(host: str, hostvars: Mapping[str, Any], project_root: Path,
               facts_dir: Path | None, extra_vars: Mapping[str, Any] | None = None,
               source: str | None = None) -> list[Problem]:
    """The playbook's own checks on one host's merged variables (the role refuses the same)."""
    source = source or f"host {host}"
    extra = dict(extra_vars or {})
    effective = {**hostvars, **extra}
    problems = _https_port_problems(effective, role_specs(project_root / "roles"), f"host {host}")
    workspaces = _site_value(hostvars, extra, "tf_workspace_users", "tflab_workspaces", [])
    if is_template(workspaces) or not isinstance(workspaces, list):
        return problems
    rules = _workspace_filters(project_root)
    data_root = _site_value(hostvars, extra, "tf_workspace_data_root", "tflab_data_root", "/srv/tflab")
    roots = _site_value(hostvars, extra, "tf_workspace_dataset_roots", "tflab_dataset_roots",
                        ["/srv/datasets"])
    private = [p for p in (data_root, effective.get("tf_workspace_state_dir"),
                           effective.get("tf_workspace_archive_dir"))
               if isinstance(p, str) and not is_template(p)]
    shared = effective.get("tf_workspace_shared_datasets") or []
    for why in rules.tf_workspace_problems(
            _literal_workspaces(workspaces),
            data_root=None if is_template(data_root) else data_root,
            shared_datasets=[d for d in shared if not _has_template(d)] if isinstance(shared, list) else [],
            dataset_roots=_literal(roots) if isinstance(roots, list) else None,
            private_sources=private, **_rule_settings(effective, role_specs(project_root / "roles"))):
        field = ("tflab_data_root" if why.startswith("tf_workspace_data_root")
                 else "tf_workspace_users" if "tf_workspace_users" in extra else "tflab_workspaces")
        problems.append(Problem(source, field, why))
    gpu_count = cached_gpu_count(facts_dir, host)
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
    branch, version = effective.get("nvidia_driver_branch"), effective.get("nvidia_driver_version")
    if (branch not in (None, "") and version not in (None, "") and not _has_template([branch, version])
            and not str(version).split(":")[-1].startswith(f"{branch}.")):
        problems.append(Problem(source, "nvidia_driver_version",
                                f"{version!r} is not a version of branch {branch!r} (nvidia_driver_branch); "
                                "make them agree, or leave nvidia_driver_version empty"))
    return problems


def origin(host: str, key: str, sources: Sequence[Path], vars_files: Sequence[Path] = (),
           extra_keys: Mapping[Path, Sequence[str]] | None = None) -> str:
    """The file a host's value of `key` most likely comes from, for messages: the last -e file
    that sets it, else the host's host_vars file, else the host itself."""
    for path in reversed(vars_files):
        if key in (extra_keys or {}).get(path, ()):
            return f"{path} (host {host})"
    for source in sources:
        folder = (source if source.is_dir() else source.parent) / "host_vars"
        for candidate in (folder / f"{host}.yml", folder / f"{host}.yaml", folder / host):
            try:
                data = _load_yaml(candidate) if candidate.is_file() else None
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(data, Mapping) and key in data:
                return f"{candidate} (host {host})"
    return f"host {host}"


def validation_key(sources: Sequence[Path], project_root: Path, facts_dir: Path | None = None,
                   vars_files: Sequence[Path] = (), vault_password_file: Path | None = None) -> str:
    """A hash of everything a verdict depends on: the inventory's files (all of them, whatever
    their format) and -e vars files, the role specs and workspace rules, this package's code,
    Ansible's version and ANSIBLE_* settings, and the fact cache's state (GPU counts). Equal
    keys, equal verdicts."""
    from ansible.release import __version__ as ansible_version

    digest = hashlib.sha256(ansible_version.encode())
    inputs = list(inventory_files(sources, every_file=True))
    inputs += sorted((project_root / "roles").glob("*/meta/argument_specs.yml"))
    inputs.append(filter_plugin(project_root, "tf_workspace.py"))
    inputs += sorted(Path(__file__).parent.glob("*.py"))
    for path in inputs:
        digest.update(f"\0{path.resolve()}\0".encode())
        digest.update(path.read_bytes())
    for path in vars_files:  # in order: a later -e wins
        digest.update(f"\0-e {path.resolve()}\0".encode())
        digest.update(path.read_bytes())
    if vault_password_file is not None:
        digest.update(f"\0vault:{vault_password_file.resolve()}".encode())
    for name in sorted(k for k in os.environ if k.startswith("ANSIBLE_")):
        digest.update(f"\0{name}={os.environ[name]}".encode())
    if facts_dir is not None and facts_dir.is_dir():
        for fact_file in sorted(facts_dir.iterdir()):
            stat = fact_file.stat()
            digest.update(f"\0{fact_file.name}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()


def validate_inventory(sources: Sequence[Path], project_root: Path,
                       facts_dir: Path | None = None, vars_files: Sequence[Path] = (),
                       vault_password_file: Path | None = None) -> dict[str, dict[str, Any]]:
    """Raise InventoryInvalid with every problem found; return the merged host vars (without the
    vars files' variables). Vars files (-e) are checked like inventory files, then merged over
    every host's variables, where they win."""
    problems = check_files(sources, project_root / "roles")
    vars_problems, extra, extra_keys = check_vars_files(vars_files, project_root / "roles",
                                                        vault_password_file)
    problems += vars_problems
    if problems:
        raise InventoryInvalid(problems)
    try:
        hosts = merged_host_vars(sources)
    except Exception as exc:  # AnsibleError: unreadable inventory, missing vault secret
        raise InventoryInvalid([Problem(", ".join(map(str, sources)), "(inventory)", str(exc))]) from exc
    for host, hostvars in sorted(hosts.items()):
        key = "tf_workspace_users" if "tf_workspace_users" in extra else "tflab_workspaces"
        problems += check_host(host, hostvars, project_root, facts_dir, extra,
                               origin(host, key, sources, vars_files, extra_keys))
    if problems:
        raise InventoryInvalid(problems)
    return hosts


def settings_of(key: str, sources: Sequence[Path], vars_files: Sequence[Path] = (),
                vault_password_file: Path | None = None) -> list[tuple[str, Any]]:
    """(where, value) of every place the inventory files and -e files set `key`, -e files last.
    Cheap (no Ansible import): for controller settings that must be one value for the inventory."""
    found: list[tuple[str, Any]] = []
    for path in inventory_files(sources):
        try:
            data = _load_yaml(path)
        except (OSError, yaml.YAMLError):
            continue  # validation reports it
        for prefix, block in _var_blocks(data, path):
            if key in block:
                found.append((f"{path}: {prefix}{key}", block[key]))
    for path in vars_files:
        try:
            data = load_vars_file(path, vault_password_file)
        except Exception:  # unreadable or undecryptable: validation reports it
            continue
        if isinstance(data, Mapping) and key in data:
            found.append((f"{path}: {key}", data[key]))
    return found
