"""Workspace checks, port allocation and firewall rules, one rule for every consumer.

Why a filter: site.yml runs the firewall role before tf_workspace, so the workspace ports must be
derivable from the inventory alone, and the firewall and the containers must agree on them. Both
call these filters with the same settings instead of each computing ports its own way, and
`tflab` runs the same functions on the inventory before any host is contacted (pure Python, so
the CLI, the playbook and the role say the same words).

Rule: a port not set explicitly is ``base + (uid - uid_base)``. UIDs are unique per host, so
allocated ports never collide with each other; explicit ports are checked against everything.
A workspace port may never be a port the host itself uses: its SSH port and other listed
services, the container-internal ports, or the kernel's ephemeral range.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Accounts that exist in Debian/Ubuntu base images or on the hosts: a workspace named like one
# would log in as that system account (the entrypoint keeps an existing account), or collide
# with the admin. `tflab` refuses the same list (it calls these functions). The monitoring and log
# packages' accounts are also the front door's admin paths (/prometheus/, /alertmanager/).
RESERVED_NAMES = frozenset({
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
    "www-data", "backup", "list", "irc", "gnats", "nobody", "_apt", "systemd-network",
    "systemd-resolve", "systemd-timesync", "messagebus", "sshd", "syslog", "uuidd", "tcpdump", "tss",
    "landscape", "pollinate", "ubuntu", "debian", "admin", "docker", "tflab",
    "prometheus", "alertmanager", "grafana", "systemd-journal-remote", "systemd-journal-upload",
})
MIN_UID = 1000
PORT_KINDS = ("ssh", "jupyter")
# The allocation's settings when a caller gives none; equal to roles/tf_workspace/defaults (a
# unit test keeps them equal), so site.yml and tflab may leave unset settings out.
DEFAULT_PORT_SETTINGS: dict[str, int] = {
    "ssh_base": 22000, "jupyter_base": 28000, "uid_base": 2000, "range_size": 1000,
}
# Each workspace has a Docker network of its own (tenants apart: Docker isolates bridges from each
# other, and the firewall drops what crosses them). Its subnet is the (uid - uid_base)-th block of
# the pool, so the firewall and the front door know every address from the inventory alone. Equal
# to tf_workspace_network_pool / tf_workspace_network_prefix in roles/tf_workspace/defaults.
DEFAULT_NETWORK_POOL = "172.30.0.0/16"
DEFAULT_NETWORK_PREFIX = 28
# Bridge interfaces are "tfws<uid>" (at most 14 characters, under Linux's 15): the firewall
# matches them all as tfws+.
BRIDGE_PREFIX = "tfws"
# Ports every workspace container listens on inside (roles/tf_workspace/vars/main.yml). As host
# ports they invite direct-routing past the published-port rules, and 2222 is a common host SSH port.
CONTAINER_SSH_PORT = 2222
CONTAINER_JUPYTER_PORT = 8888
CONTAINER_TENSORBOARD_PORT = 6006
CONTAINER_PORTS = {CONTAINER_SSH_PORT: "the workspace container's internal SSH port",
                   CONTAINER_JUPYTER_PORT: "the workspace container's internal Jupyter port"}
# Linux's default net.ipv4.ip_local_port_range: ports the kernel hands to outgoing connections.
LINUX_EPHEMERAL_RANGE = (32768, 60999)
# Key types the workspace sshd accepts: ssh_crypto_policy_pubkey_accepted_algorithms' defaults.
DEFAULT_ACCEPTED_ALGORITHMS = ("ssh-ed25519", "sk-ssh-ed25519@openssh.com", "rsa-sha2-512", "rsa-sha2-256")
DEFAULT_RSA_MIN_BITS = 3072  # ssh_crypto_policy_rsa_min_bits
KEY_FIX = "generate an ed25519 key: ssh-keygen -t ed25519"


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


# --- single values ------------------------------------------------------------------------

def _ssh_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    """One SSH wire-format string (uint32 length, then the bytes) and the offset after it."""
    if offset + 4 > len(blob):
        raise ValueError("truncated")
    size = int.from_bytes(blob[offset:offset + 4], "big")
    end = offset + 4 + size
    if end > len(blob):
        raise ValueError("truncated")
    return blob[offset + 4:end], end


def authorized_key_problem(
    line: str,
    accepted_algorithms: Sequence[str] | None = None,
    rsa_min_bits: int | None = None,
) -> str | None:
    """Why the workspace sshd would refuse this authorized_keys line, or None.

    The container's OpenSSH (8.2/8.4) has no RequiredRSASize, so the RSA floor of the policy is
    enforced here, from the key blob: string "ssh-rsa", mpint e, mpint n; bits = n.bit_length().
    """
    algorithms = tuple(accepted_algorithms or DEFAULT_ACCEPTED_ALGORITHMS)
    min_bits = int(rsa_min_bits or DEFAULT_RSA_MIN_BITS)
    if not isinstance(line, str):
        return f"{line!r} is not a public key line"
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        return (f"{line[:40]!r}… is not an OpenSSH public key line "
                "(expected 'ssh-ed25519 AAAA… comment')")
    key_type, data = parts[0], parts[1]
    if key_type.startswith(("ecdsa-sha2-", "sk-ecdsa-sha2-")):
        return (f"{key_type} keys are refused: the workspace sshd policy accepts only ed25519 "
                f"(also FIDO sk-ssh-ed25519) and RSA of at least {min_bits} bits, no NIST-curve "
                f"ECDSA, so this key could never log in; {KEY_FIX}")
    if key_type == "ssh-dss":
        return f"ssh-dss (DSA) keys are refused: OpenSSH no longer accepts them; {KEY_FIX}"
    if key_type not in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com", "ssh-rsa"):
        return (f"{line[:40]!r}… is not an OpenSSH public key line "
                "(expected 'ssh-ed25519 AAAA… comment')")
    wanted = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa") if key_type == "ssh-rsa" else (key_type,)
    if not any(a in algorithms for a in wanted):
        return (f"{key_type} keys are not accepted by the workspace sshd policy "
                f"(ssh_crypto_policy_pubkey_accepted_algorithms: {', '.join(algorithms)}); {KEY_FIX}")
    try:
        blob = base64.b64decode(data, validate=True)
        blob_type, offset = _ssh_string(blob, 0)
        if blob_type.decode("ascii", "replace") != key_type:
            return (f"the key data of {key_type} {data[:20]}… is a "
                    f"{blob_type.decode('ascii', 'replace')!r} key (a damaged or mixed-up line); "
                    "copy the line from the .pub file again")
        if key_type == "ssh-rsa":
            _exponent, offset = _ssh_string(blob, offset)
            modulus, offset = _ssh_string(blob, offset)
            bits = int.from_bytes(modulus, "big").bit_length()
            if bits < min_bits:
                return (f"RSA key of {bits} bits ({data[:20]}…): the workspace sshd policy requires "
                        f"at least {min_bits} (ssh_crypto_policy_rsa_min_bits); {KEY_FIX} "
                        "(or ssh-keygen -t rsa -b 4096)")
        else:
            public, offset = _ssh_string(blob, offset)
            if len(public) != 32:
                raise ValueError("not a 32-byte ed25519 key")
    except (binascii.Error, ValueError) as exc:
        return (f"the key data of {key_type} {data[:20]}… is not a valid public key ({exc}); "
                "copy the line from the .pub file again")
    return None


def gpus_problem(value: Any) -> str | None:
    """Why a GPU request is not "all", "none" or a list of distinct GPU indices, or None."""
    if value is None or value in ("all", "none"):
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        return f"gpus must be \"all\", \"none\" or a list of GPU indices such as [0, 1]; got {value!r}"
    bad = [g for g in value if isinstance(g, bool) or not isinstance(g, int) or g < 0]
    if bad:
        return f"gpus {list(value)!r}: {bad!r} are not GPU indices (non-negative integers, e.g. [0, 1])"
    if len(set(value)) != len(value):
        return f"gpus {list(value)!r} lists a GPU twice; list each index once"
    return None


def normalise_path(path: str) -> str:
    """The absolute path as Docker and the kernel see it: '//run' and '/run/.' are '/run'.

    posixpath.normpath keeps a leading '//' (POSIX leaves it implementation-defined); Linux
    does not, so every leading slash run becomes one.
    """
    return "/" + posixpath.normpath(path).lstrip("/")


def _under(path: str, root: str) -> bool:
    """path is root or inside it (both normalised)."""
    return path == root or root == "/" or path.startswith(root.rstrip("/") + "/")


# Data roots that are system locations: exactly these paths, and anything under the second list.
SYSTEM_DATA_ROOTS = ("/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                     "/var", "/var/lib", "/boot", "/dev", "/proc", "/sys", "/run", "/tmp", "/var/tmp",
                     "/root", "/home")
SYSTEM_DATA_ROOT_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                          "/proc", "/sys", "/dev", "/run", "/boot", "/tmp", "/var/tmp")


def data_root_problem(path: Any) -> str | None:
    """Why a path cannot hold users' data (<root>/<name>/, chowned to each user), or None.

    A system directory would hand users' UIDs ownership inside it; a world-writable tree (/tmp)
    would let anyone plant the symlinks that root then follows.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        return f"{path!r} must be an absolute path (e.g. /srv/tflab)"
    if ".." in path.split("/"):
        return f"{path!r} must not contain '..'"
    norm = normalise_path(path)
    if norm in SYSTEM_DATA_ROOTS or any(_under(norm, t) for t in SYSTEM_DATA_ROOT_TREES):
        return (f"{path!r} is a system location: each user gets <root>/<name>/ owned by their UID, "
                "so use a directory of its own such as /srv/tflab")
    return None


def ephemeral_range(value: Any) -> tuple[int, int]:
    """The kernel's ephemeral port range from "32768 60999" (/proc), "32768-60999" or [lo, hi];
    empty means Linux's default."""
    if value is None or value == "" or value == []:
        return LINUX_EPHEMERAL_RANGE
    try:
        if isinstance(value, str):
            low, high = (int(p) for p in value.replace("-", " ").split())
        elif isinstance(value, Sequence) and len(value) == 2:
            low, high = int(value[0]), int(value[1])
        else:
            raise ValueError(value)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(
            f"ephemeral port range {value!r} must be 'LOW-HIGH' (e.g. '32768-60999') or [LOW, HIGH]"
        ) from exc
    if not 1 <= low <= high <= 65535:
        raise AnsibleFilterError(f"ephemeral port range {low}-{high} is not a valid port range")
    return low, high


def _reserved(reserved_ports: Any) -> dict[int, str]:
    """Port → why, from a list of ports or {port, comment} dicts."""
    if reserved_ports is None:
        return {}
    if isinstance(reserved_ports, str) or not isinstance(reserved_ports, Sequence):
        raise AnsibleFilterError("reserved_ports must be a list of ports or {port, comment} dicts")
    out: dict[int, str] = {}
    for item in reserved_ports:
        port, why = (item.get("port"), item.get("comment")) if isinstance(item, Mapping) else (item, None)
        try:
            out.setdefault(int(port), str(why or "a port the host uses itself"))
        except (TypeError, ValueError) as exc:
            raise AnsibleFilterError(f"reserved port {item!r} is not a port number") from exc
    return out


# --- the workspace list ---------------------------------------------------------------------

def _validate(
    workspaces: Sequence[Mapping[str, Any]],
    reserved_names: Sequence[str] | None = None,
    accepted_algorithms: Sequence[str] | None = None,
    rsa_min_bits: int | None = None,
) -> None:
    """Fail on what would make ports or identities ambiguous, naming the field to fix."""
    if not isinstance(workspaces, Sequence) or isinstance(workspaces, str | bytes):
        raise AnsibleFilterError("workspaces must be a list of dicts")
    extra_reserved = {str(n) for n in (reserved_names or []) if n}
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
            raise AnsibleFilterError(
                f"workspace {name!r}: that name is an account of the OS image or host (system and "
                "distribution accounts are reserved); pick the user's own name, e.g. their login"
            )
        if name in extra_reserved:
            raise AnsibleFilterError(
                f"workspace {name!r}: that name is the admin account this run logs in as "
                "(sshd_hardening_admin_user / ansible_user); pick another name"
            )
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
        if not _present(ws):
            continue
        if uid in uids:
            raise AnsibleFilterError(f"workspaces {uids[uid]!r} and {name!r} share uid {uid}")
        uids[uid] = name
        why = gpus_problem(ws.get("gpus"))
        if why:
            raise AnsibleFilterError(f"workspace {name!r}: {why}")
        keys = ws.get("authorized_keys") or []
        if isinstance(keys, str) or not isinstance(keys, Sequence):
            raise AnsibleFilterError(f"workspace {name!r}: authorized_keys must be a list of key lines")
        for number, key in enumerate(keys):
            why = authorized_key_problem(key, accepted_algorithms, rsa_min_bits)
            if why:
                raise AnsibleFilterError(f"workspace {name!r}: authorized_keys[{number}]: {why}")


def _settings(ssh_base: Any, jupyter_base: Any, uid_base: Any, range_size: Any) -> dict[str, int]:
    given = {"ssh_base": ssh_base, "jupyter_base": jupyter_base, "uid_base": uid_base,
             "range_size": range_size}
    try:
        return {k: DEFAULT_PORT_SETTINGS[k] if v is None or v == "" else int(v) for k, v in given.items()}
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"port settings must be integers, got {given!r}") from exc


def workspace_network(uid: int, uid_base: int, pool: Any = None, prefix: Any = None) -> dict[str, str]:
    """The workspace's own network: {bridge, subnet, gateway, address} for the uid's block of the pool.

    The container always has the block's second host address (the first is the bridge, the
    host's side), so the front door can reach its Jupyter without any published port.
    """
    try:
        net = ipaddress.IPv4Network(str(pool or DEFAULT_NETWORK_POOL))
    except ValueError as exc:
        raise AnsibleFilterError(
            f"tf_workspace_network_pool {pool!r} is not an IPv4 network (e.g. 172.30.0.0/16)") from exc
    length = DEFAULT_NETWORK_PREFIX if prefix in (None, "") else int(prefix)
    if not net.prefixlen <= length <= 29:
        raise AnsibleFilterError(
            f"tf_workspace_network_prefix {length} must be between the pool's /{net.prefixlen} and /29")
    capacity = 2 ** (length - net.prefixlen)
    index = uid - uid_base
    if not 0 <= index < capacity:
        raise AnsibleFilterError(
            f"uid {uid} has no network in tf_workspace_network_pool {net} (/{length} blocks hold uids "
            f"{uid_base}..{uid_base + capacity - 1}); use a larger pool or a smaller block "
            "(tf_workspace_network_prefix), or move tf_workspace_uid_base")
    subnet = ipaddress.IPv4Network((int(net.network_address) + index * 2 ** (32 - length), length))
    return {"network_bridge": f"{BRIDGE_PREFIX}{uid}", "network_subnet": str(subnet),
            "network_gateway": str(subnet.network_address + 1),
            "network_address": str(subnet.network_address + 2)}


def tf_workspace_ports(
    workspaces: Sequence[Mapping[str, Any]],
    ssh_base: int | None = None,
    jupyter_base: int | None = None,
    uid_base: int | None = None,
    range_size: int | None = None,
    defaults: Mapping[str, Any] | None = None,
    reserved_ports: Sequence[Any] | None = None,
    ephemeral_ports: Any = None,
    reserved_names: Sequence[str] | None = None,
    accepted_algorithms: Sequence[str] | None = None,
    rsa_min_bits: int | None = None,
    network_pool: Any = None,
    network_prefix: Any = None,
) -> list[dict[str, Any]]:
    """Return copies of the workspaces with ssh_port, jupyter_port, gid, state and their network
    (network_bridge, network_subnet, network_gateway, network_address) always set.

    Explicit ports are kept; missing ones are allocated by UID. Any clash between ports of present
    workspaces (explicit or allocated, SSH or Jupyter), or with a port the host needs (reserved
    ports, the container-internal ports, the ephemeral range), is an error that names the owner.
    Unset (None) settings are DEFAULT_PORT_SETTINGS. Keys missing (or null) in a workspace are
    taken from ``defaults``; gid defaults to the uid.
    """
    _validate(workspaces, reserved_names, accepted_algorithms, rsa_min_bits)
    settings = _settings(ssh_base, jupyter_base, uid_base, range_size)
    ssh_base, jupyter_base = settings["ssh_base"], settings["jupyter_base"]
    uid_base, range_size = settings["uid_base"], settings["range_size"]
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
    why = gpus_problem((defaults or {}).get("gpus"))
    if why:
        raise AnsibleFilterError(f"tf_workspace_default_gpus (tflab_workspace_defaults.gpus): {why}")
    host_ports = _reserved(reserved_ports)
    low, high = ephemeral_range(ephemeral_ports)

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
            offset = uid - uid_base
            allocated = bases[kind] + offset if 0 <= offset < range_size else None
            if port is None:
                if allocated is None:
                    raise AnsibleFilterError(
                        f"workspace {name!r}: uid {uid} is outside the allocatable range "
                        f"{uid_base}..{uid_base + range_size - 1}; set {key} explicitly"
                    )
                port = allocated
            if not 1 <= port <= 65535:
                raise AnsibleFilterError(f"workspace {name!r}: {key} {port} is not a valid port")
            out[key] = port
            if _present(ws):
                _check_host_port(name, key, port, explicit=_int(ws, key) is not None,
                                 allocated=allocated, host_ports=host_ports, ephemeral=(low, high))
                owner = f"{name}.{key}"
                if port in owners:
                    raise AnsibleFilterError(f"port {port} is used twice: {owners[port]} and {owner}")
                owners[port] = owner
        if _present(ws):
            out.update(workspace_network(uid, uid_base, network_pool, network_prefix))
        result.append(out)
    return result


def _check_host_port(name: str, key: str, port: int, explicit: bool, allocated: int | None,
                     host_ports: Mapping[int, str], ephemeral: tuple[int, int]) -> None:
    """Refuse a workspace port that the host or the container needs for something else."""
    kind = key.removesuffix("_port")
    if explicit:
        where = f"{key} {port}"
        fix = (f"remove {key} to use the allocated port {allocated}, or choose another free port"
               if allocated is not None and allocated != port else "choose another free port")
    else:
        where = f"{key} {port} (allocated: tf_workspace_{kind}_port_base + uid - tf_workspace_uid_base)"
        fix = f"move tf_workspace_{kind}_port_base, or set {key} explicitly"
    if port < 1024:
        raise AnsibleFilterError(f"workspace {name!r}: {where} is a privileged port (below 1024, the "
                                 f"host's own services); {fix}")
    if port in CONTAINER_PORTS:
        raise AnsibleFilterError(f"workspace {name!r}: {where} is {CONTAINER_PORTS[port]}, which must "
                                 f"not be a host port (traffic routed straight to containers would "
                                 f"match it); {fix}")
    if port in host_ports:
        raise AnsibleFilterError(f"workspace {name!r}: {where} is used by the host: {host_ports[port]} "
                                 f"(publishing it would take that service down); {fix}")
    low, high = ephemeral
    if low <= port <= high:
        raise AnsibleFilterError(
            f"workspace {name!r}: {where} is in the host's ephemeral port range {low}-{high} "
            f"(net.ipv4.ip_local_port_range: the kernel gives these ports to outgoing connections, "
            f"so it may be taken when the container starts); {fix} outside {low}-{high}, or set "
            "tflab_ephemeral_port_range if the host uses another range"
        )


def _allowed_cidrs(ws: Mapping[str, Any], default_cidrs: Sequence[str] | None) -> list[str]:
    cidrs = ws.get("allowed_cidrs")
    if cidrs is None:
        cidrs = default_cidrs or []
    if isinstance(cidrs, str) or not isinstance(cidrs, Sequence):
        raise AnsibleFilterError(f"workspace {ws['name']!r}: allowed_cidrs must be a list")
    return [str(c) for c in cidrs]


def tf_workspace_firewall_rules(
    workspaces: Sequence[Mapping[str, Any]],
    default_cidrs: Sequence[str] | None = None,
    **port_settings: Any,
) -> list[dict[str, Any]]:
    """Rules {port, proto, cidrs, comment, bridge, container_port} opening each present workspace's
    published SSH port to its CIDRs.

    Jupyter is not published: the HTTPS front door reaches it on the workspace's network
    (tf_workspace_web_routes). bridge and container_port let the firewall accept only what Docker
    really DNATed to that workspace. A workspace's own allowed_cidrs win over default_cidrs; an
    empty list yields a rule with no CIDRs (the firewall then admits nobody extra), so the port is
    still known to be a workspace's.
    """
    return [
        {"port": ws["ssh_port"], "proto": "tcp", "cidrs": _allowed_cidrs(ws, default_cidrs),
         "comment": f"tflab workspace {ws['name']} ssh", "bridge": ws["network_bridge"],
         "container_port": CONTAINER_SSH_PORT}
        for ws in tf_workspace_ports(workspaces, **port_settings) if _present(ws)
    ]


def tf_workspace_web_routes(
    workspaces: Sequence[Mapping[str, Any]],
    default_cidrs: Sequence[str] | None = None,
    **port_settings: Any,
) -> list[dict[str, Any]]:
    """The front door's routes: {name, upstream, tensorboard_upstream, allowed_cidrs} per present
    workspace: its Jupyter at https://<host>/<name>/ and its TensorBoard at /<name>/tensorboard/,
    proxied to the container's address on the workspace network."""
    return [
        {"name": ws["name"], "upstream": f"http://{ws['network_address']}:{CONTAINER_JUPYTER_PORT}",
         "tensorboard_upstream": f"http://{ws['network_address']}:{CONTAINER_TENSORBOARD_PORT}",
         "allowed_cidrs": _allowed_cidrs(ws, default_cidrs)}
        for ws in tf_workspace_ports(workspaces, **port_settings) if _present(ws)
    ]


# --- datasets -----------------------------------------------------------------------------

# Host paths a dataset may not come from, nor contain: the container runtime's sockets and state
# (root on the host), kernel interfaces, and the system's configuration and secrets.
DENIED_SOURCES = ("/run", "/var/run", "/var/lib/docker", "/var/lib/containerd", "/proc", "/sys", "/dev",
                  "/etc", "/boot", "/root")
# Container paths a dataset may not cover or sit inside: the system, and what the workspace itself
# mounts (the home /home/<name>, sshd and Jupyter configuration under /etc/tflab and /etc/ssh).
PROTECTED_DESTS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
)


def _dataset_path(value: Any, what: str, src: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        where = "an absolute path on the host" if what == "src" else "an absolute path below /"
        raise AnsibleFilterError(f"dataset {src!r}: {what} {value!r} must be {where}")
    if ".." in value.split("/"):
        raise AnsibleFilterError(f"dataset {src!r}: {what} {value!r} must not contain '..' "
                                 f"(it is {normalise_path(value)})")
    return normalise_path(value)


def tf_workspace_dataset_mounts(
    datasets: Sequence[Any],
    roots: Sequence[str] | None = None,
    private_sources: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Turn dataset entries into read-only bind mounts for community.docker.docker_container.

    An entry is a host path (mounted at /datasets/<basename>) or {src, dest}; both paths are
    normalised as Docker would ('//run', '/run/.' are '/run'). Why refused: a source that is or
    holds the Docker socket, the runtime's state, kernel interfaces or system secrets would hand
    the user root on the host; a source outside ``roots`` (tflab_dataset_roots; empty: anywhere
    else) or overlapping ``private_sources`` (other users' data, tflab's state and secrets) is
    not a dataset; a destination over system or workspace paths would break the container or
    replace its sshd configuration; equal or nested destinations are ambiguous.
    """
    if isinstance(datasets, str) or not isinstance(datasets, Sequence):
        raise AnsibleFilterError("datasets must be a list")
    allowed = [normalise_path(r) for r in roots or [] if isinstance(r, str) and r]
    private = [normalise_path(p) for p in private_sources or [] if isinstance(p, str) and p]
    mounts: list[dict[str, Any]] = []
    for entry in datasets:
        if isinstance(entry, str):
            raw_src, raw_dest = entry, ""
        elif isinstance(entry, Mapping) and isinstance(entry.get("src"), str):
            raw_src, raw_dest = entry["src"], entry.get("dest") or ""
        else:
            raise AnsibleFilterError(f"dataset {entry!r} must be a path or a dict with src (and dest)")
        src = _dataset_path(raw_src, "src", raw_src)
        for denied in DENIED_SOURCES:
            if _under(src, denied) or _under(denied, src):
                what = "is" if src == denied else "is inside" if _under(src, denied) else "contains"
                raise AnsibleFilterError(
                    f"dataset {raw_src!r}: the source {what} {denied}, which would expose the Docker "
                    "socket or runtime, kernel interfaces or system secrets to the user; mount a "
                    "dataset directory of its own (e.g. under /srv/datasets)"
                )
        for path in private:
            if _under(src, path) or _under(path, src):
                raise AnsibleFilterError(
                    f"dataset {raw_src!r}: the source overlaps {path} (users' data and tflab's state "
                    "and secrets); keep datasets outside the data root"
                )
        if allowed and not any(_under(src, r) for r in allowed):
            raise AnsibleFilterError(
                f"dataset {raw_src!r}: {src} is outside the allowed dataset roots ({', '.join(allowed)}); "
                "move it or extend tflab_dataset_roots"
            )
        dest = _dataset_path(raw_dest, "dest", raw_src) if raw_dest else "/datasets/" + src.rsplit("/", 1)[-1]
        if dest in ("/", "/datasets"):
            raise AnsibleFilterError(f"dataset {raw_src!r}: dest {dest!r} must be an absolute path below / "
                                     "(e.g. /datasets/<name>)")
        if any(_under(dest, p) or _under(p, dest) for p in PROTECTED_DESTS):
            raise AnsibleFilterError(
                f"dataset {raw_src!r}: dest {dest!r} covers a system path or the workspace's own mounts "
                "(the home, /etc/tflab, /etc/ssh); mount it under /datasets/ or /data/"
            )
        for mount in mounts:
            if mount["target"] == dest:
                raise AnsibleFilterError(f"two datasets are mounted at {dest!r}")
            if _under(dest, mount["target"]) or _under(mount["target"], dest):
                raise AnsibleFilterError(
                    f"dataset destinations {mount['target']!r} and {dest!r} are nested (one would hide "
                    "or split the other); give each dataset its own directory"
                )
        mounts.append({"type": "bind", "source": src, "target": dest, "read_only": True})
    return mounts


# --- everything at once, for an assert that can show the reason -------------------------------

def tf_workspace_problems(
    workspaces: Sequence[Mapping[str, Any]],
    data_root: Any = None,
    shared_datasets: Sequence[Any] | None = None,
    dataset_roots: Sequence[str] | None = None,
    private_sources: Sequence[str] | None = None,
    **port_settings: Any,
) -> list[str]:
    """What tf_workspace_ports, tf_workspace_dataset_mounts and the data-root rule refuse, as
    messages (empty when all is well). The role asserts on this list before the set_fact tasks
    that carry password hashes (no_log there would hide the reason)."""
    problems: list[str] = []
    if data_root is not None:
        why = data_root_problem(data_root)
        if why:
            problems.append(f"tf_workspace_data_root (tflab_data_root): {why}")
    try:
        tf_workspace_ports(workspaces, **port_settings)
    except AnsibleFilterError as exc:
        problems.append(str(exc))
        if not isinstance(workspaces, Sequence) or isinstance(workspaces, str | bytes):
            return problems
    for ws in workspaces:
        if not isinstance(ws, Mapping) or not _present(ws):
            continue
        try:
            datasets = list(shared_datasets or []) + list(ws.get("datasets") or [])
            tf_workspace_dataset_mounts(datasets, dataset_roots, private_sources)
        except AnsibleFilterError as exc:
            problems.append(f"workspace {ws.get('name')!r}: {exc}")
    return problems


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {
            "tf_workspace_ports": tf_workspace_ports,
            "tf_workspace_firewall_rules": tf_workspace_firewall_rules,
            "tf_workspace_web_routes": tf_workspace_web_routes,
            "tf_workspace_dataset_mounts": tf_workspace_dataset_mounts,
            "tf_workspace_problems": tf_workspace_problems,
        }
