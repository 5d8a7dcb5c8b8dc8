"""Editing a host's workspace list in the inventory (comments and order preserved).

`tflab workspace add|remove` change `host_vars/<host>.yml` of the first inventory directory,
validate the whole inventory with the change, and restore the file if it does not validate.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from .runner import ConfigError


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold SSH keys
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def host_vars_file(inventory_dir: Path, host: str, hosts: Sequence[str]) -> Path:
    """host_vars/<host>.yml for a host of the inventory. Refused before anything is written: a
    host the inventory does not have (a typo would leave an orphan file that validates and an
    apply that matches nothing), and any name that would leave host_vars/."""
    if not inventory_dir.is_dir():
        raise ConfigError(f"{inventory_dir} is not an inventory directory; `tflab workspace` edits "
                          "host_vars/ inside one (create it with `tflab init`)")
    if host not in hosts:
        close = difflib.get_close_matches(host, hosts, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"{host!r} is not a host of the inventory; {hint}add it to the inventory "
                          f"first (hosts: {', '.join(hosts) or 'none'})")
    folder = inventory_dir / "host_vars"
    path = folder / f"{host}.yml"
    if "/" in host or "\\" in host or "\0" in host or host.startswith(".") \
            or path.resolve().parent != folder.resolve():
        raise ConfigError(f"host name {host!r} cannot name a file in {folder}; "
                          "edit that host's variables by hand")
    return path


def load_host_vars(path: Path) -> Any:
    if not path.exists():
        return _yaml().load("---\n{}\n") or {}
    data = _yaml().load(path.read_text())
    return data if data is not None else {}


def dump(data: Any) -> str:
    stream = io.StringIO()
    _yaml().dump(data, stream)
    text = stream.getvalue()
    return text if text.startswith("---") else "---\n" + text


@contextmanager
def edited(path: Path) -> Iterator[Any]:
    """Yield the host's vars for editing; write them back (the caller validates afterwards)."""
    data = load_host_vars(path)
    yield data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(data))


def add_workspace(data: Any, workspace: Mapping[str, Any]) -> None:
    workspaces = data.setdefault("tflab_workspaces", [])
    for existing in workspaces:
        if existing.get("name") == workspace["name"]:
            if existing.get("state", "present") == "absent":
                existing.clear()
                existing.update(workspace)
                return
            raise ConfigError(f"workspace {workspace['name']!r} already exists on this host; "
                              "edit host_vars to change it, or remove it first")
    workspaces.append(dict(workspace))


def remove_workspace(data: Any, name: str, purge: bool) -> None:
    """Mark absent (the role archives the data, or deletes it with purge) — never drop silently."""
    for existing in data.get("tflab_workspaces") or []:
        if existing.get("name") == name:
            existing["state"] = "absent"
            if purge:
                existing["purge"] = True
            return
    raise ConfigError(f"no workspace {name!r} in this host's inventory")


def workspace_rows(hosts: Mapping[str, Mapping[str, Any]],
                   port_filter: Any, port_settings: Mapping[str, Mapping[str, Any]],
                   ca_fingerprint: str | None = None) -> list[dict[str, Any]]:
    """Every workspace of every host with its effective ports (the playbook's own allocation)
    and its HTTPS URL through the host's nginx (the Jupyter port itself is not published)."""
    from .inventory import workspace_url

    rows: list[dict[str, Any]] = []
    for host, hostvars in sorted(hosts.items()):
        workspaces: Sequence[Mapping[str, Any]] = hostvars.get("tflab_workspaces") or []
        if not workspaces:
            continue
        address = str(hostvars.get("ansible_host") or host)
        for ws in port_filter([dict(w) for w in workspaces], **port_settings.get(host, {})):
            state = ws.get("state", "present")
            rows.append({"host": host, "address": address, "name": ws["name"], "uid": ws["uid"],
                         "state": state, "gpus": ws.get("gpus", "default"),
                         "ssh_port": ws["ssh_port"], "jupyter_port": ws["jupyter_port"],
                         "ssh": f"ssh -p {ws['ssh_port']} {ws['name']}@{address}",
                         "url": workspace_url(host, hostvars, ws["name"]) if state == "present" else None,
                         "ca_fingerprint": ca_fingerprint})
    return rows
