"""Workspace port allocation and firewall rules, one rule for every consumer.

Why a filter: site.yml runs the firewall role before tf_workspace, so the workspace ports must be
derivable from the inventory alone, and the firewall and the containers must agree on them. Both
call these filters with the same settings instead of each computing ports its own way.

Rule: a port not set explicitly is ``base + (uid - uid_base)``. UIDs are unique per host, so
allocated ports never collide with each other; explicit ports are checked against everything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
RESERVED_NAMES = frozenset({"root", "daemon", "bin", "sys", "sshd", "nobody", "www-data"})
MIN_UID = 1000
PORT_KINDS = ("ssh", "jupyter")


def _present(ws: Mapping[str, Any]) -> bool:
    return str(ws.get("state", "present")) == "present"


def _int(ws: Mapping[str, Any], key: str) -> int | None:
    value = ws.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise AnsibleFilterError(f"workspace {ws.get('name')!r}: {key} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(
            f"workspace {ws.get('name')!r}: {key} must be an integer, got {value!r}"
        ) from exc


def _validate(workspaces: Sequence[Mapping[str, Any]]) -> None:
    """Fail on what would make ports or identities ambiguous, naming the field to fix."""
    if not isinstance(workspaces, Sequence) or isinstance(workspaces, str | bytes):
        raise AnsibleFilterError("workspaces must be a list of dicts")
    names: dict[str, int] = {}
    uids: dict[int, str] = {}
    for index, ws in enumerate(workspaces):
        if not isinstance(ws, Mapping):
            raise AnsibleFilterError(f"workspace #{index} must be a dict, got {type(ws).__name__}")
        name = ws.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise AnsibleFilterError(
                f"workspace #{index}: name {name!r} must be a Linux user name (^[a-z_][a-z0-9_-]{{0,31}}$)"
            )
        if name in RESERVED_NAMES:
            raise AnsibleFilterError(f"workspace {name!r}: that name is reserved for a system account")
        if name in names:
            raise AnsibleFilterError(f"workspace {name!r} is listed twice (#{names[name]} and #{index})")
        names[name] = index
        state = str(ws.get("state", "present"))
        if state not in ("present", "absent"):
            raise AnsibleFilterError(f"workspace {name!r}: state must be present or absent, got {state!r}")
        uid = _int(ws, "uid")
        if uid is None:
            raise AnsibleFilterError(f"workspace {name!r}: uid is required")
        if uid < MIN_UID:
            raise AnsibleFilterError(f"workspace {name!r}: uid {uid} is below {MIN_UID} (system accounts)")
        gid = _int(ws, "gid")
        if gid is not None and gid < MIN_UID:
            raise AnsibleFilterError(f"workspace {name!r}: gid {gid} is below {MIN_UID} (system groups)")
        if _present(ws):
            if uid in uids:
                raise AnsibleFilterError(f"workspaces {uids[uid]!r} and {name!r} share uid {uid}")
            uids[uid] = name


def tf_workspace_ports(
    workspaces: Sequence[Mapping[str, Any]],
    ssh_base: int = 22000,
    jupyter_base: int = 28000,
    uid_base: int = 2000,
    range_size: int = 1000,
    defaults: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Return copies of the workspaces with ssh_port, jupyter_port, gid and state always set.

    Explicit ports are kept; missing ones are allocated by UID. Any clash between ports of present
    workspaces (explicit or allocated, SSH or Jupyter) is an error that names both owners.
    Keys missing (or null) in a workspace are taken from ``defaults``; gid defaults to the uid.
    """
    _validate(workspaces)
    ssh_base, jupyter_base = int(ssh_base), int(jupyter_base)
    uid_base, range_size = int(uid_base), int(range_size)
    if range_size < 1:
        raise AnsibleFilterError("range_size must be at least 1")
    bases = {"ssh": ssh_base, "jupyter": jupyter_base}
    for kind, base in bases.items():
        if base < 1 or base + range_size - 1 > 65535:
            raise AnsibleFilterError(f"{kind} port range {base}..{base + range_size - 1} is not valid")
    if abs(ssh_base - jupyter_base) < range_size:
        raise AnsibleFilterError(
            f"the SSH ({ssh_base}) and Jupyter ({jupyter_base}) port ranges overlap "
            f"(each spans {range_size} ports)"
        )

    result: list[dict[str, Any]] = []
    owners: dict[int, str] = {}
    for ws in workspaces:
        own = {key: value for key, value in ws.items() if value is not None}
        out = {**dict(defaults or {}), **own}
        name = str(ws["name"])
        uid = int(ws["uid"])
        out["uid"] = uid
        out["gid"] = _int(ws, "gid") or uid
        out["state"] = str(ws.get("state") or "present")
        for kind in PORT_KINDS:
            key = f"{kind}_port"
            port = _int(ws, key)
            if port is None:
                offset = uid - uid_base
                if not 0 <= offset < range_size:
                    raise AnsibleFilterError(
                        f"workspace {name!r}: uid {uid} is outside the allocatable range "
                        f"{uid_base}..{uid_base + range_size - 1}; set {key} explicitly"
                    )
                port = bases[kind] + offset
            if not 1 <= port <= 65535:
                raise AnsibleFilterError(f"workspace {name!r}: {key} {port} is not a valid port")
            out[key] = port
            if _present(ws):
                owner = f"{name}.{key}"
                if port in owners:
                    raise AnsibleFilterError(f"port {port} is used twice: {owners[port]} and {owner}")
                owners[port] = owner
        result.append(out)
    return result


def tf_workspace_firewall_rules(
    workspaces: Sequence[Mapping[str, Any]],
    default_cidrs: Sequence[str] | None = None,
    **port_settings: Any,
) -> list[dict[str, Any]]:
    """Rules {port, proto, cidrs, comment} opening each present workspace's ports to its CIDRs.

    A workspace's own allowed_cidrs win over default_cidrs; an empty list yields a rule with no
    CIDRs (the firewall then admits nobody extra), so the port is still known to be a workspace's.
    """
    rules: list[dict[str, Any]] = []
    for ws in tf_workspace_ports(workspaces, **port_settings):
        if not _present(ws):
            continue
        cidrs = ws.get("allowed_cidrs")
        if cidrs is None:
            cidrs = default_cidrs or []
        if isinstance(cidrs, str) or not isinstance(cidrs, Sequence):
            raise AnsibleFilterError(f"workspace {ws['name']!r}: allowed_cidrs must be a list")
        for kind in PORT_KINDS:
            rules.append(
                {
                    "port": ws[f"{kind}_port"],
                    "proto": "tcp",
                    "cidrs": [str(c) for c in cidrs],
                    "comment": f"tflab workspace {ws['name']} {kind}",
                }
            )
    return rules


DOCKER_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock")
# Container paths a dataset may not cover: the system, and what the workspace itself mounts.
PROTECTED_DESTS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
)


def tf_workspace_dataset_mounts(datasets: Sequence[Any]) -> list[dict[str, Any]]:
    """Turn dataset entries into read-only bind mounts for community.docker.docker_container.

    An entry is a host path (mounted at /datasets/<basename>) or {src, dest}. Why refused: a
    source that contains the Docker socket would hand the user root on the host; a destination
    over system or workspace paths would break the container; duplicates are ambiguous.
    """
    if isinstance(datasets, str) or not isinstance(datasets, Sequence):
        raise AnsibleFilterError("datasets must be a list")
    mounts: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in datasets:
        if isinstance(entry, str):
            src, dest = entry, ""
        elif isinstance(entry, Mapping) and isinstance(entry.get("src"), str):
            src, dest = entry["src"], str(entry.get("dest") or "")
        else:
            raise AnsibleFilterError(f"dataset {entry!r} must be a path or a dict with src (and dest)")
        src = src.rstrip("/") or "/"
        if not src.startswith("/"):
            raise AnsibleFilterError(f"dataset {src!r}: src must be an absolute path on the host")
        if any(sock == src or sock.startswith(src.rstrip("/") + "/") for sock in DOCKER_SOCKETS):
            raise AnsibleFilterError(f"dataset {src!r} would expose the Docker socket")
        if not dest:
            dest = "/datasets/" + src.rsplit("/", 1)[-1]
        dest = dest.rstrip("/")
        if not dest.startswith("/") or dest in ("", "/datasets"):
            raise AnsibleFilterError(f"dataset {src!r}: dest {dest!r} must be an absolute path below /")
        if any(dest == p or dest.startswith(p + "/") for p in PROTECTED_DESTS):
            raise AnsibleFilterError(f"dataset {src!r}: dest {dest!r} covers a system path")
        if dest in seen:
            raise AnsibleFilterError(f"two datasets are mounted at {dest!r}")
        seen.add(dest)
        mounts.append({"type": "bind", "source": src, "target": dest, "read_only": True})
    return mounts


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {
            "tf_workspace_ports": tf_workspace_ports,
            "tf_workspace_firewall_rules": tf_workspace_firewall_rules,
            "tf_workspace_dataset_mounts": tf_workspace_dataset_mounts,
        }
