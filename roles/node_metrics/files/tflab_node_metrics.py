#!/usr/bin/python3
"""tflab node metrics: workspace and node facts for node_exporter's textfile collector.

Installed by the node_metrics role as /usr/local/sbin/tflab-node-metrics and run by a systemd
timer. Writes <textfile dir>/tflab.prom atomically (a hidden temp file in the same directory,
then rename), so node_exporter never serves half a file. Python 3 standard library only.

  tflab-node-metrics [--config FILE] [--output FILE|-]      collect (what the timer runs)
  tflab-node-metrics [--config FILE] --data-sizes           measure the data directories (du)

Cost per run: three docker calls whatever the number of workspaces (ps, one inspect for all
of them, info), one nvidia-smi, one dpkg-query, one firewall check, and a few small cgroup
files per workspace; the data-directory sizes (du, costly on big trees) are measured by a
slower timer of their own and read here from its cache file.

One failing source never stops the others: what works is written, and each source's failures
are counted in tflab_collector_errors{source}. Nothing from a container's environment, and no
label other than tflab's own, is ever read into the output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

DEFAULT_CONFIG = "/etc/tflab/node-metrics.json"
DEFAULTS: dict[str, Any] = {
    "textfile_dir": "/var/lib/prometheus/node-exporter",
    "output_name": "tflab.prom",
    "state_dir": "/var/lib/tflab/node-metrics",
    "data_root": "/srv/tflab",
    "data_size_interval": "15min",
    "data_size_timeout_seconds": 3600,
    "cgroup_root": "/sys/fs/cgroup",
    "proc_root": "/proc",
    "sys_root": "/sys",
    "path": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "docker": "docker",
    "nvidia_smi": "nvidia-smi",
    "gpu_metrics": True,
    "dpkg_query": "dpkg-query",
    "dpkg_info_dir": "/var/lib/dpkg/info",
    "driver_packages": ["nvidia-kernel-dkms", "nvidia-kernel-common-*", "nvidia-dkms-*"],
    "firewall_script": "/usr/local/sbin/tflab-firewall",
    "reboot_required_file": "/run/reboot-required",
    "nvidia_driver_state_file": "/etc/ansible/facts.d/nvidia_driver.fact",
    "command_timeout_seconds": 20,
    "managed_by_label": "io.tflab.managed-by=tflab-provision",
}
SOURCES = ("docker", "cgroup", "data_size", "gpu", "driver", "reboot", "firewall", "runtime")
GPU_QUERY = "--query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total"
GPU_DEVICE_LIST_DIR = "/var/run/nvidia-container-devices/"
# cgroup limits at or above this mean "no limit" (v1 writes PAGE_COUNTER_MAX pages as bytes).
NO_LIMIT = 1 << 62
MIB = 1024 * 1024
WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_VERSION_RE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)")


# --- exposition ---------------------------------------------------------------------------------

def escape_label(value: str) -> str:
    """Label value escaping of the Prometheus text format: backslash, double quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return repr(float(value))


@dataclass
class Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


class Exposition:
    """Metric families in the order they were declared; rendered as Prometheus text format 0.0.4."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}

    def declare(self, name: str, kind: str, help_text: str) -> None:
        self.families.setdefault(name, Family(name, kind, help_text))

    def add(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        self.families[name].samples.append((dict(labels or {}), value))

    def render(self) -> str:
        lines: list[str] = []
        for family in self.families.values():
            if not family.samples:
                continue
            help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
            lines.append(f"# HELP {family.name} {help_text}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            for labels, value in family.samples:
                if labels:
                    body = ",".join(f'{key}="{escape_label(str(val))}"' for key, val in labels.items())
                    lines.append(f"{family.name}{{{body}}} {format_value(value)}")
                else:
                    lines.append(f"{family.name} {format_value(value)}")
        return "\n".join(lines) + "\n"


METRICS: list[tuple[str, str, str]] = [
    ("tflab_workspace_info", "gauge",
     "A tflab workspace container on this node (1), owner from tflab's labels."),
    ("tflab_workspace_up", "gauge", "1 when the workspace container is running, 0 otherwise."),
    ("tflab_workspace_healthy", "gauge", "1 when Docker reports the workspace as healthy, 0 otherwise."),
    ("tflab_workspace_cpu_seconds_total", "counter", "CPU time used by the workspace's cgroup, in seconds."),
    ("tflab_workspace_cpu_limit_cores", "gauge", "CPU limit of the workspace in cores (0 = no limit)."),
    ("tflab_workspace_memory_bytes", "gauge",
     "Memory used by the workspace's cgroup less inactive file cache (as docker stats shows it), in bytes."),
    ("tflab_workspace_memory_limit_bytes", "gauge", "Memory limit of the workspace in bytes (0 = no limit)."),
    ("tflab_workspace_pids", "gauge", "Processes and threads in the workspace's cgroup."),
    ("tflab_workspace_pids_limit", "gauge", "Process limit of the workspace (0 = no limit)."),
    ("tflab_workspace_data_bytes", "gauge",
     "Disk usage of the workspace's data directory in bytes (du -sx), measured every {interval} by "
     "tflab-node-metrics-du.timer and cached; see tflab_workspace_data_measured_timestamp_seconds."),
    ("tflab_workspace_data_measured_timestamp_seconds", "gauge",
     "When tflab_workspace_data_bytes was measured (Unix time)."),
    ("tflab_workspace_gpu_info", "gauge", "A GPU assigned to the workspace (1)."),
    ("tflab_gpu_info", "gauge",
     "A GPU of this node (1); workspace: assigned to (comma-separated if shared, empty if none)."),
    ("tflab_gpu_utilization_ratio", "gauge", "GPU utilisation over nvidia-smi's last sample period (0..1)."),
    ("tflab_gpu_memory_used_bytes", "gauge", "GPU memory allocated by active contexts, in bytes."),
    ("tflab_gpu_memory_total_bytes", "gauge", "GPU memory installed, in bytes."),
    ("tflab_node_driver_info", "gauge",
     "NVIDIA driver: installed package version and loaded kernel module version (\"none\" if none)."),
    ("tflab_node_driver_mismatch", "gauge",
     "1 when the installed NVIDIA driver differs from the loaded one."),
    ("tflab_node_reboot_pending", "gauge", "1 when the node needs a reboot (see ..._reboot_pending_reason)."),
    ("tflab_node_reboot_pending_reason", "gauge",
     "Why a reboot is pending (1 per reason): reboot-required, nvidia-driver (the nvidia_driver role's "
     "decision since this boot), driver-mismatch."),
    ("tflab_node_reboot_pending_since_timestamp_seconds", "gauge",
     "Since when a reboot is pending (Unix time; 0 if none)."),
    ("tflab_node_firewall_in_sync", "gauge",
     "1 when tflab-firewall check finds the live rules equal to the rule files, 0 otherwise or without it."),
    ("tflab_node_docker_default_runtime_info", "gauge", "Docker's default runtime (1)."),
    ("tflab_collector_workspaces", "gauge", "Workspace containers the collector found."),
    ("tflab_collector_errors", "gauge", "Failures of one source during the last run (0 = fine)."),
    ("tflab_collector_duration_seconds", "gauge", "How long the last collection took."),
    ("tflab_collector_last_success_timestamp_seconds", "gauge",
     "When the collector last wrote this file (Unix time)."),
]


# --- helpers ------------------------------------------------------------------------------------

class SourceError(Exception):
    """A source (docker, nvidia-smi, a cgroup file) could not be read; counted, never fatal."""


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


class Runner:
    """Runs the few commands the collector needs, with a fixed PATH and a timeout."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.path = str(config["path"])
        self.timeout = float(config["command_timeout_seconds"])
        # systemd gives the service a clean environment; PATH and the locale are fixed here.
        self.env = {**os.environ, "PATH": self.path, "LC_ALL": "C"}

    def which(self, name: str) -> str | None:
        if os.sep in name:
            return name if os.access(name, os.X_OK) else None
        return shutil.which(name, path=self.path)

    def run(self, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        binary = self.which(argv[0])
        if binary is None:
            raise FileNotFoundError(argv[0])
        try:
            proc = subprocess.run([binary, *argv[1:]], capture_output=True, text=True, check=False,
                                  env=self.env, timeout=timeout or self.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise SourceError(f"{argv[0]} timed out after {exc.timeout} s") from exc
        return proc.returncode, proc.stdout, proc.stderr


def log(message: str) -> None:
    print(f"tflab-node-metrics: {message}", file=sys.stderr)


# --- docker -------------------------------------------------------------------------------------

def list_containers(runner: Runner, config: dict[str, Any]) -> list[dict[str, Any]]:
    """docker inspect of every tflab workspace container: one ps and one inspect call."""
    docker = str(config["docker"])
    if runner.which(docker) is None:
        raise SourceError(f"{docker} not found")
    rc, out, err = runner.run([docker, "ps", "--all", "--quiet", "--no-trunc",
                               "--filter", f"label={config['managed_by_label']}"])
    if rc != 0:
        raise SourceError(f"docker ps failed ({rc}): {err.strip()[:200]}")
    ids = [line.strip() for line in out.splitlines() if line.strip()]
    if not ids:
        return []
    rc, out, err = runner.run([docker, "inspect", "--type", "container", *ids])
    # A container removed between ps and inspect: inspect prints the others and exits 1.
    try:
        data = json.loads(out or "[]")
    except ValueError as exc:
        raise SourceError(f"docker inspect printed no JSON ({rc}): {err.strip()[:200]}") from exc
    if not isinstance(data, list):
        raise SourceError("docker inspect printed no list")
    return [item for item in data if isinstance(item, dict)]


def docker_runtime(runner: Runner, config: dict[str, Any]) -> str:
    docker = str(config["docker"])
    if runner.which(docker) is None:
        raise SourceError(f"{docker} not found")
    rc, out, err = runner.run([docker, "info", "--format", "{{.DefaultRuntime}}"])
    runtime = out.strip()
    if rc != 0 or not runtime:
        raise SourceError(f"docker info failed ({rc}): {err.strip()[:200]}")
    return runtime


@dataclass
class Workspace:
    workspace: str
    user: str
    uid: str
    container: str
    running: bool
    healthy: bool
    pid: int
    host_config: dict[str, Any]
    gpu_ids: list[str]

    @property
    def labels(self) -> dict[str, str]:
        return {"workspace": self.workspace, "user": self.user}


def gpu_ids_of(host_config: dict[str, Any], mounts: Iterable[dict[str, Any]]) -> list[str]:
    """The GPUs a container was given, as tf_workspace assigns them.

    DeviceRequests (docker --gpus / device_requests): DeviceIDs (indices or UUIDs), or Count
    (-1 = all, n = the first n). Device-list mounts (/var/run/nvidia-container-devices/<id>),
    which tf_workspace adds for the toolkit's unprivileged isolation. NVIDIA_VISIBLE_DEVICES is
    NOT read: GPU images set it to "all" in their own environment, and the runtime ignores it
    for such containers.
    """
    ids: list[str] = []
    for request in host_config.get("DeviceRequests") or []:
        capabilities = [cap for group in request.get("Capabilities") or [] for cap in group or []]
        if request.get("Driver") != "nvidia" and "gpu" not in capabilities:
            continue
        if request.get("DeviceIDs"):
            ids.extend(str(item) for item in request["DeviceIDs"])
        elif int(request.get("Count") or 0) == -1:
            ids.append("all")
        elif int(request.get("Count") or 0) > 0:
            ids.extend(str(index) for index in range(int(request["Count"])))
    for mount in mounts:
        destination = str(mount.get("Destination") or "")
        if destination.startswith(GPU_DEVICE_LIST_DIR):
            ids.append(destination[len(GPU_DEVICE_LIST_DIR):])
    unique: list[str] = []
    for item in ids:
        for part in item.split(","):
            if part and part not in unique:
                unique.append(part)
    return unique


def workspace_of(item: dict[str, Any]) -> Workspace:
    config = item.get("Config") or {}
    labels = config.get("Labels") or {}
    state = item.get("State") or {}
    name = str(item.get("Name") or "").lstrip("/")
    health = (state.get("Health") or {}).get("Status", "")
    host_config = item.get("HostConfig") or {}
    return Workspace(
        workspace=str(labels.get("io.tflab.workspace") or name.removeprefix("tflab-ws-")),
        user=str(labels.get("io.tflab.owner", "")),
        uid=str(labels.get("io.tflab.owner-uid", "")),
        container=name,
        running=bool(state.get("Running")),
        healthy=health == "healthy",
        pid=int(state.get("Pid") or 0),
        host_config=host_config,
        gpu_ids=gpu_ids_of(host_config, item.get("Mounts") or []),
    )


# --- cgroups ------------------------------------------------------------------------------------

def cgroup_dirs(pid: int, config: dict[str, Any]) -> dict[str, str]:
    """Controller -> cgroup directory of a process, from /proc/<pid>/cgroup.

    cgroup v2: the "0::/path" line, under the cgroup2 mount (or its "unified" mount on hybrid
    hosts). cgroup v1: one line per hierarchy ("4:cpu,cpuacct:/docker/<id>"), each mounted at
    <root>/<controllers> (Debian and Ubuntu link the single names to it as well).
    """
    root = str(config["cgroup_root"])
    text = read_text(os.path.join(str(config["proc_root"]), str(pid), "cgroup"))
    if text is None:
        raise SourceError(f"/proc/{pid}/cgroup is unreadable")
    dirs: dict[str, str] = {}
    for line in text.splitlines():
        hierarchy, _sep, rest = line.partition(":")
        controllers, _sep, path = rest.partition(":")
        path = path.lstrip("/")
        if hierarchy == "0" and controllers == "":
            unified = os.path.exists(os.path.join(root, "cgroup.controllers"))
            base = root if unified else os.path.join(root, "unified")
            dirs.setdefault("v2", os.path.join(base, path))
            continue
        names = [name.removeprefix("name=") for name in controllers.split(",") if name]
        for candidate in [controllers, *names]:
            directory = os.path.join(root, candidate, path)
            if os.path.isdir(directory):
                for name in names:
                    dirs.setdefault(name, directory)
                break
    return dirs


def _int_file(directory: str, name: str) -> int | None:
    text = read_text(os.path.join(directory, name))
    if text is None or text == "":
        return None
    if text == "max":
        return 0
    return int(text.split()[0])


def _stat_file(directory: str, name: str) -> dict[str, int]:
    stats: dict[str, int] = {}
    for line in (read_text(os.path.join(directory, name)) or "").splitlines():
        key, _sep, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            stats[key] = int(value)
    return stats


def _limit(value: int | None) -> int | None:
    if value is None:
        return None
    return 0 if value <= 0 or value >= NO_LIMIT else value


def cgroup_usage(dirs: dict[str, str]) -> dict[str, float]:
    """CPU, memory and pids figures and limits from a container's cgroup (v2 or v1)."""
    figures: dict[str, float] = {}
    v2 = dirs.get("v2")
    if v2 and os.path.exists(os.path.join(v2, "memory.current")):
        current = _int_file(v2, "memory.current")
        if current is not None:
            inactive = _stat_file(v2, "memory.stat").get("inactive_file", 0)
            figures["memory"] = max(current - inactive, 0)
        limit = _limit(_int_file(v2, "memory.max"))
        if limit is not None:
            figures["memory_limit"] = limit
        usage_usec = _stat_file(v2, "cpu.stat").get("usage_usec")
        if usage_usec is not None:
            figures["cpu_seconds"] = usage_usec / 1e6
        cpu_max = (read_text(os.path.join(v2, "cpu.max")) or "").split()
        if len(cpu_max) == 2:
            figures["cpu_limit"] = 0 if cpu_max[0] == "max" else int(cpu_max[0]) / int(cpu_max[1])
        pids_dir = v2
    else:
        memory = dirs.get("memory")
        if memory:
            usage = _int_file(memory, "memory.usage_in_bytes")
            if usage is not None:
                inactive = _stat_file(memory, "memory.stat").get("total_inactive_file", 0)
                figures["memory"] = max(usage - inactive, 0)
            limit = _limit(_int_file(memory, "memory.limit_in_bytes"))
            if limit is not None:
                figures["memory_limit"] = limit
        cpuacct = dirs.get("cpuacct")
        if cpuacct:
            usage_ns = _int_file(cpuacct, "cpuacct.usage")
            if usage_ns is not None:
                figures["cpu_seconds"] = usage_ns / 1e9
        cpu = dirs.get("cpu")
        if cpu:
            quota = _int_file(cpu, "cpu.cfs_quota_us")
            period = _int_file(cpu, "cpu.cfs_period_us")
            if quota is not None and period:
                figures["cpu_limit"] = quota / period if quota > 0 else 0
        pids_dir = dirs.get("pids", "")
    if pids_dir:
        pids = _int_file(pids_dir, "pids.current")
        if pids is not None:
            figures["pids"] = pids
        pids_limit = _int_file(pids_dir, "pids.max")
        if pids_limit is not None:
            figures["pids_limit"] = pids_limit
    if "memory" not in figures and "cpu_seconds" not in figures:
        raise SourceError(f"no cgroup figures in {sorted(set(dirs.values()))}")
    return figures


def configured_limits(host_config: dict[str, Any]) -> dict[str, float]:
    """Limits Docker was told (for containers that are not running: no cgroup to read)."""
    limits: dict[str, float] = {"memory_limit": int(host_config.get("Memory") or 0)}
    nano = int(host_config.get("NanoCpus") or 0)
    quota, period = int(host_config.get("CpuQuota") or 0), int(host_config.get("CpuPeriod") or 0)
    limits["cpu_limit"] = nano / 1e9 if nano else (quota / period if quota > 0 and period else 0)
    limits["pids_limit"] = max(int(host_config.get("PidsLimit") or 0), 0)
    return limits


# --- data directory sizes -----------------------------------------------------------------------

def data_size_cache_path(config: dict[str, Any]) -> str:
    return os.path.join(str(config["state_dir"]), "data-sizes.json")


def read_data_sizes(config: dict[str, Any]) -> dict[str, dict[str, float]]:
    text = read_text(data_size_cache_path(config))
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SourceError(f"{data_size_cache_path(config)} is not JSON") from exc
    entries = data.get("workspaces") or {}
    return {str(key): value for key, value in entries.items() if isinstance(value, dict)}


def data_dir(config: dict[str, Any], workspace: str) -> str | None:
    """<data_root>/<workspace>, for names tf_workspace can produce (never a path outside the root)."""
    if not WORKSPACE_NAME.match(workspace) or workspace in (".", ".."):
        return None
    return os.path.join(str(config["data_root"]), workspace)


def measure_data_sizes(config: dict[str, Any], runner: Runner) -> int:
    """du -sx of every workspace's data directory in one call; the cache file the collector reads."""
    errors = 0
    try:
        workspaces = [workspace_of(item).workspace for item in list_containers(runner, config)]
    except (SourceError, OSError) as exc:
        log(f"docker: {exc}")
        return 1
    dirs = {ws: path for ws in workspaces if (path := data_dir(config, ws)) and os.path.isdir(path)}
    results: dict[str, dict[str, float]] = {}
    if dirs:
        rc, out, err = runner.run(["du", "--summarize", "--one-file-system", "--block-size=1", "--",
                                   *dirs.values()], timeout=float(config["data_size_timeout_seconds"]))
        if rc != 0:
            errors += 1
            log(f"du exited {rc}: {err.strip()[:300]}")
        sizes = {}
        for line in out.splitlines():
            size, _tab, path = line.partition("\t")
            if size.isdigit():
                sizes[path] = int(size)
        now = time.time()
        for workspace, path in dirs.items():
            if path in sizes:
                results[workspace] = {"bytes": sizes[path], "measured": round(now, 3)}
    write_atomic(data_size_cache_path(config), json.dumps({"workspaces": results}, sort_keys=True) + "\n")
    return 1 if errors else 0


# --- GPUs ---------------------------------------------------------------------------------------

def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def query_gpus(runner: Runner, config: dict[str, Any]) -> list[dict[str, Any]] | None:
    """GPUs from one nvidia-smi call; None when there is no nvidia-smi (a host without GPUs)."""
    smi = str(config["nvidia_smi"])
    if not config.get("gpu_metrics", True) or runner.which(smi) is None:
        return None
    rc, out, err = runner.run([smi, GPU_QUERY, "--format=csv,noheader,nounits"])
    if rc != 0:
        raise SourceError(f"nvidia-smi exited {rc}: {(err or out).strip()[:200]}")
    gpus = []
    for line in out.splitlines():
        if not line.strip():
            continue
        fields = [part.strip() for part in line.split(",")]
        if len(fields) < 6:
            raise SourceError(f"nvidia-smi printed an unexpected line: {line[:120]!r}")
        # A name may itself hold a comma: the first two and the last three fields are fixed.
        gpus.append({"index": fields[0], "uuid": fields[1], "name": ", ".join(fields[2:-3]),
                     "utilization": _number(fields[-3]), "memory_used": _number(fields[-2]),
                     "memory_total": _number(fields[-1])})
    return gpus


def resolve_gpus(ids: list[str], gpus: list[dict[str, Any]] | None) -> list[tuple[str, str]]:
    """(index, uuid) pairs for a container's GPU ids (indices, UUIDs or "all")."""
    if gpus is None:
        return [(gpu_id, "") for gpu_id in ids if gpu_id.isdigit()]
    found: list[tuple[str, str]] = []
    for gpu_id in ids:
        for gpu in gpus:
            if gpu_id in ("all", gpu["index"], gpu["uuid"]) and (gpu["index"], gpu["uuid"]) not in found:
                found.append((gpu["index"], gpu["uuid"]))
    return found


# --- node facts ---------------------------------------------------------------------------------

def upstream_version(debian_version: str) -> str:
    """'1:535.183.01-1~deb12u1' -> '535.183.01' (the nvidia_gpu_facts module's rule)."""
    version = debian_version.split(":", 1)[1] if ":" in debian_version else debian_version
    return version.rsplit("-", 1)[0] if "-" in version else version


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def installed_driver(runner: Runner, config: dict[str, Any]) -> tuple[str, str] | None:
    """(package, upstream version) of the installed driver: nvidia_driver's patterns, in order."""
    patterns = [str(pattern) for pattern in config["driver_packages"]]
    dpkg = str(config["dpkg_query"])
    if runner.which(dpkg) is None:
        raise SourceError(f"{dpkg} not found")
    # Exits 1 when a pattern matches nothing; the others are still printed.
    rc, out, err = runner.run([dpkg, "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n", *patterns])
    if rc not in (0, 1):
        raise SourceError(f"dpkg-query exited {rc}: {err.strip()[:200]}")
    installed = []
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and len(fields[2]) >= 2 and fields[2][1] in "iWt" and fields[1]:
            installed.append((fields[0], fields[1]))
    for pattern in patterns:
        matches = [pkg for pkg in installed if fnmatchcase(pkg[0], pattern)]
        if matches:
            package, version = max(matches, key=lambda pkg: _version_key(upstream_version(pkg[1])))
            return package, upstream_version(version)
    return None


def loaded_driver(config: dict[str, Any]) -> str | None:
    """Loaded nvidia.ko version: /proc/driver/nvidia/version, else /sys/module/nvidia/version."""
    text = read_text(os.path.join(str(config["proc_root"]), "driver", "nvidia", "version"))
    match = _VERSION_RE.search(text or "")
    if match:
        return match.group(1)
    return read_text(os.path.join(str(config["sys_root"]), "module", "nvidia", "version")) or None


def boot_time(config: dict[str, Any]) -> float:
    for line in (read_text(os.path.join(str(config["proc_root"]), "stat")) or "").splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise SourceError("no btime in /proc/stat")


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def reboot_reasons(config: dict[str, Any], driver: tuple[str, str] | None,
                   loaded: str | None) -> dict[str, float]:
    """reason -> since when. The driver role's recorded decision counts only if made since this boot."""
    reasons: dict[str, float] = {}
    booted = boot_time(config)
    since = _mtime(str(config["reboot_required_file"]))
    if since is not None:
        reasons["reboot-required"] = since
    state_file = str(config["nvidia_driver_state_file"])
    since = _mtime(state_file)
    if since is not None and since >= booted:
        try:
            state = json.loads(read_text(state_file) or "{}")
        except ValueError as exc:
            raise SourceError(f"{state_file} is not JSON") from exc
        if str(state.get("reboot_needed", "")).lower() == "true":
            reasons["nvidia-driver"] = since
    if driver and loaded and driver[1] != loaded:
        info_dir = str(config["dpkg_info_dir"])
        names = os.listdir(info_dir) if os.path.isdir(info_dir) else []
        lists = [name for name in names if name.endswith(".list")
                 and (name == f"{driver[0]}.list" or name.startswith(f"{driver[0]}:"))]
        times = [t for name in lists if (t := _mtime(os.path.join(info_dir, name))) is not None]
        reasons["driver-mismatch"] = max(times) if times else booted
    return reasons


def firewall_in_sync(runner: Runner, config: dict[str, Any]) -> int:
    script = str(config["firewall_script"])
    if not os.access(script, os.X_OK):
        return 0  # no tflab firewall on this node: not in sync with tflab's rules
    rc, _out, err = runner.run([script, "check"])
    if rc in (0, 3):
        return 1 if rc == 0 else 0
    raise SourceError(f"{script} check exited {rc}: {err.strip()[:200]}")


# --- the collection -----------------------------------------------------------------------------

def collect(config: dict[str, Any], runner: Runner) -> Exposition:
    started = time.monotonic()
    out = Exposition()
    interval = str(config["data_size_interval"])
    for name, kind, help_text in METRICS:
        out.declare(name, kind, help_text.replace("{interval}", interval))
    errors = dict.fromkeys(SOURCES, 0)

    def failed(source: str, exc: BaseException) -> None:
        errors[source] += 1
        log(f"{source}: {exc}")

    try:
        workspaces = [workspace_of(item) for item in list_containers(runner, config)]
    except (SourceError, OSError, ValueError, TypeError) as exc:
        failed("docker", exc)
        workspaces = []
    workspaces.sort(key=lambda ws: (ws.workspace, ws.container))

    try:
        sizes = read_data_sizes(config)
    except (SourceError, OSError) as exc:
        failed("data_size", exc)
        sizes = {}
    try:
        gpus = query_gpus(runner, config)
    except (SourceError, OSError, ValueError) as exc:
        failed("gpu", exc)
        gpus = None

    owners: dict[tuple[str, str], list[str]] = {}
    for ws in workspaces:
        labels = ws.labels
        out.add("tflab_workspace_info", 1, {**labels, "uid": ws.uid, "container": ws.container})
        out.add("tflab_workspace_up", int(ws.running), labels)
        out.add("tflab_workspace_healthy", int(ws.healthy), labels)
        figures: dict[str, float] = {}
        if ws.running and ws.pid > 0:
            try:
                figures = cgroup_usage(cgroup_dirs(ws.pid, config))
            except (SourceError, OSError, ValueError) as exc:
                failed("cgroup", exc)
        else:
            figures = configured_limits(ws.host_config)
        for key, metric in (("cpu_seconds", "tflab_workspace_cpu_seconds_total"),
                            ("cpu_limit", "tflab_workspace_cpu_limit_cores"),
                            ("memory", "tflab_workspace_memory_bytes"),
                            ("memory_limit", "tflab_workspace_memory_limit_bytes"),
                            ("pids", "tflab_workspace_pids"),
                            ("pids_limit", "tflab_workspace_pids_limit")):
            if key in figures:
                out.add(metric, figures[key], labels)
        size = sizes.get(ws.workspace)
        if size and "bytes" in size:
            out.add("tflab_workspace_data_bytes", float(size["bytes"]), labels)
            out.add("tflab_workspace_data_measured_timestamp_seconds", float(size.get("measured", 0)), labels)
        for index, uuid in resolve_gpus(ws.gpu_ids, gpus):
            out.add("tflab_workspace_gpu_info", 1, {**labels, "gpu": index, "uuid": uuid})
            owners.setdefault((index, uuid), [])
            if ws.workspace not in owners[(index, uuid)]:
                owners[(index, uuid)].append(ws.workspace)

    for gpu in gpus or []:
        owner = ",".join(sorted(owners.get((gpu["index"], gpu["uuid"]), [])))
        gpu_labels = {"gpu": gpu["index"], "uuid": gpu["uuid"]}
        out.add("tflab_gpu_info", 1, {**gpu_labels, "name": gpu["name"], "workspace": owner})
        gpu_labels["workspace"] = owner
        if gpu["utilization"] is not None:
            out.add("tflab_gpu_utilization_ratio", gpu["utilization"] / 100, gpu_labels)
        if gpu["memory_used"] is not None:
            out.add("tflab_gpu_memory_used_bytes", int(gpu["memory_used"] * MIB), gpu_labels)
        if gpu["memory_total"] is not None:
            out.add("tflab_gpu_memory_total_bytes", int(gpu["memory_total"] * MIB), gpu_labels)

    driver: tuple[str, str] | None = None
    loaded: str | None = None
    try:
        driver = installed_driver(runner, config)
        loaded = loaded_driver(config)
        out.add("tflab_node_driver_info", 1, {"installed": driver[1] if driver else "none",
                                              "loaded": loaded or "none"})
        out.add("tflab_node_driver_mismatch", int(bool(driver and loaded and driver[1] != loaded)))
    except (SourceError, OSError) as exc:
        failed("driver", exc)
    try:
        reasons = reboot_reasons(config, driver, loaded)
        out.add("tflab_node_reboot_pending", int(bool(reasons)))
        for reason in sorted(reasons):
            out.add("tflab_node_reboot_pending_reason", 1, {"reason": reason})
        out.add("tflab_node_reboot_pending_since_timestamp_seconds", min(reasons.values()) if reasons else 0)
    except (SourceError, OSError) as exc:
        failed("reboot", exc)
    try:
        out.add("tflab_node_firewall_in_sync", firewall_in_sync(runner, config))
    except (SourceError, OSError) as exc:
        failed("firewall", exc)
    try:
        out.add("tflab_node_docker_default_runtime_info", 1, {"runtime": docker_runtime(runner, config)})
    except (SourceError, OSError) as exc:
        failed("runtime", exc)

    out.add("tflab_collector_workspaces", len(workspaces))
    for source in SOURCES:
        out.add("tflab_collector_errors", errors[source], {"source": source})
    out.add("tflab_collector_duration_seconds", round(time.monotonic() - started, 6))
    out.add("tflab_collector_last_success_timestamp_seconds", round(time.time(), 3))
    return out


def write_atomic(path: str, text: str) -> None:
    """A hidden temp file in the same directory (node_exporter reads *.prom only), then rename."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_config(path: str | None) -> dict[str, Any]:
    config = dict(DEFAULTS)
    if path:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        unknown = sorted(set(data) - set(DEFAULTS))
        if unknown:
            raise SystemExit(f"tflab-node-metrics: unknown setting(s) in {path}: {', '.join(unknown)}")
        config.update(data)
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tflab-node-metrics",
                                     description="tflab metrics for node_exporter's textfile collector.")
    parser.add_argument("--config", help=f"JSON settings file (default: {DEFAULT_CONFIG} if it exists)")
    parser.add_argument("--output",
                        help="file to write, - for stdout (default: <textfile_dir>/<output_name>)")
    parser.add_argument("--data-sizes", action="store_true",
                        help="measure the data directories (du), cache them")
    args = parser.parse_args(argv)
    config = load_config(args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None))
    runner = Runner(config)
    if args.data_sizes:
        return measure_data_sizes(config, runner)
    text = collect(config, runner).render()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        default = os.path.join(str(config["textfile_dir"]), str(config["output_name"]))
        write_atomic(args.output or default, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
