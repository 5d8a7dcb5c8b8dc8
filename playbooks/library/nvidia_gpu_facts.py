#!/usr/bin/python
# Copyright: tflab-provision contributors
# Apache-2.0
"""Ansible module: NVIDIA GPU facts and the driver reboot decision.

Everything is read from sysfs/procfs roots (options, so unit tests point them at fixture
trees) plus two read-only commands (dpkg-query, nvidia-smi) through an injectable runner.
Parsing and the reboot decision are pure functions, unit-tested in tests/unit/.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_gpu_facts
short_description: NVIDIA GPU, driver and reboot-decision facts
description:
  - Finds NVIDIA display-class PCI devices in sysfs (vendor 0x10de, class 0x03xxxx).
  - Reports the loaded kernel module version (/proc/driver/nvidia/version, else
    /sys/module/nvidia/version), the installed driver package version (dpkg-query),
    whether nouveau is loaded (/proc/modules), the Secure Boot state (EFI variable), the
    GPUs and compute processes nvidia-smi lists when it works, and processes holding
    /dev/nvidia* open (works even when nvidia-smi fails with a version mismatch).
  - Decides whether a reboot is needed and whether it may happen now (see RETURN).
  - Read-only; never changes the host. Supports check mode.
options:
  sysfs_root:
    description: Root of sysfs (tests point it at a fixture tree).
    type: path
    default: /sys
  procfs_root:
    description: Root of procfs (tests point it at a fixture tree).
    type: path
    default: /proc
  driver_packages:
    description:
      - dpkg package names or glob patterns carrying the driver version, in order of preference.
      - The first installed match gives C(installed_package_version).
    type: list
    elements: str
    default: [nvidia-kernel-dkms, nvidia-kernel-common-*, nvidia-dkms-*]
  query_nvidia_smi:
    description: Ask nvidia-smi for GPUs and compute processes when it is installed.
    type: bool
    default: true
  nvidia_smi_timeout:
    description: Seconds before an nvidia-smi call is given up (a wedged GPU can hang it).
    type: int
    default: 30
  ignore_processes:
    description: Process names holding /dev/nvidia* that are not GPU work (daemons).
    type: list
    elements: str
    default: [nvidia-persistenced, nv-hostengine, nvidia-smi, dcgm-exporter]
  workspace_containers:
    description: Names of running workspace containers, found by the caller; they block a reboot.
    type: list
    elements: str
    default: []
  reboot_allowed:
    description: False forbids any reboot; a needed one is reported as pending.
    type: bool
    default: true
  reboot_forced:
    description: Reboot even when GPU processes or workspace containers run.
    type: bool
    default: false
  assume_gpu:
    description:
      - Treat the host as a GPU host even when no NVIDIA device is visible
        (a forced install, e.g. an image whose GPUs attach later).
    type: bool
    default: false
author: tflab-provision maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Gather NVIDIA GPU facts
  nvidia_gpu_facts:

- name: Decide on a reboot after a driver install, never rebooting by itself
  nvidia_gpu_facts:
    workspace_containers: "{{ running_containers }}"
    reboot_allowed: false
"""

RETURN = r"""
ansible_facts:
  description: Facts under the key C(nvidia_gpu).
  returned: always
  type: dict
  contains:
    nvidia_gpu:
      description: >-
        count, devices (pci_address, vendor, device, class, subsystem_vendor,
        subsystem_device, driver), pci_ids, module_loaded, module_loaded_version,
        installed_package, installed_package_version (upstream part),
        installed_package_full_version, installed_packages, nouveau_loaded, secure_boot,
        secure_boot_state (enabled, disabled, not_efi, unknown), nvidia_smi_available,
        nvidia_smi_ok, nvidia_smi_error, smi_gpus, smi_count, compute_processes,
        device_holders, reboot (needed, reasons, blockers, action none|reboot|pending,
        message).
      type: dict
"""

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from typing import Any

NVIDIA_VENDOR_ID = 0x10DE
# PCI base class 0x03 = display controller (0x0300 VGA, 0x0302 3D controller).
DISPLAY_BASE_CLASS = 0x03
SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
COMPUTE_APPS_QUERY = [
    "--query-compute-apps=pid,process_name,used_memory",
    "--format=csv,noheader",
]
GPU_QUERY = ["--query-gpu=index,pci.bus_id,name,driver_version", "--format=csv,noheader"]
DEFAULT_DRIVER_PACKAGES = ("nvidia-kernel-dkms", "nvidia-kernel-common-*", "nvidia-dkms-*")
DEFAULT_IGNORED_PROCESSES = ("nvidia-persistenced", "nv-hostengine", "nvidia-smi", "dcgm-exporter")
# dpkg "current status" letters that mean the package's files are in place.
_DPKG_INSTALLED = {"i", "W", "t"}
_VERSION_RE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)")

Runner = Callable[[list[str]], tuple[int, str, str]]
Which = Callable[[str], "str | None"]


def read_text(path: str) -> str | None:
    """File content stripped, or None when absent/unreadable (sysfs attributes come and go)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def is_nvidia_display(vendor: str | None, pci_class: str | None) -> bool:
    """True for vendor 0x10de with PCI base class 0x03; audio/USB functions are excluded."""
    try:
        return (
            int(vendor or "", 16) == NVIDIA_VENDOR_ID
            and (int(pci_class or "", 16) >> 16) == DISPLAY_BASE_CLASS
        )
    except ValueError:
        return False


def scan_pci_devices(sysfs_root: str) -> list[dict[str, Any]]:
    """NVIDIA display devices under <sysfs>/bus/pci/devices, sorted by PCI address."""
    base = os.path.join(sysfs_root, "bus", "pci", "devices")
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return []
    devices: list[dict[str, Any]] = []
    for address in entries:
        path = os.path.join(base, address)
        vendor = read_text(os.path.join(path, "vendor"))
        pci_class = read_text(os.path.join(path, "class"))
        if not is_nvidia_display(vendor, pci_class):
            continue
        driver_link = os.path.join(path, "driver")
        driver = os.path.basename(os.readlink(driver_link)) if os.path.islink(driver_link) else None
        devices.append(
            {
                "pci_address": address.lower(),
                "vendor": (vendor or "").lower(),
                "device": (read_text(os.path.join(path, "device")) or "").lower(),
                "class": (pci_class or "").lower(),
                "subsystem_vendor": (read_text(os.path.join(path, "subsystem_vendor")) or "").lower(),
                "subsystem_device": (read_text(os.path.join(path, "subsystem_device")) or "").lower(),
                "driver": driver,
            }
        )
    return devices


def parse_module_version(text: str | None) -> str | None:
    """Version from /proc/driver/nvidia/version (proprietary and open kernel module wording)."""
    if not text:
        return None
    match = _VERSION_RE.search(text)
    return match.group(1) if match else None


def loaded_module_version(sysfs_root: str, procfs_root: str) -> str | None:
    """Loaded nvidia.ko version: /proc/driver/nvidia/version, else /sys/module/nvidia/version."""
    version = parse_module_version(read_text(os.path.join(procfs_root, "driver", "nvidia", "version")))
    if version:
        return version
    fallback = read_text(os.path.join(sysfs_root, "module", "nvidia", "version"))
    return fallback or None


def parse_proc_modules(text: str | None) -> set[str]:
    """Module names from /proc/modules (first field of each line)."""
    return {line.split()[0] for line in (text or "").splitlines() if line.strip()}


def secure_boot_state(sysfs_root: str) -> str:
    """enabled/disabled from the EFI variable (4 attribute bytes, then 1 data byte).

    not_efi: legacy BIOS boot (no /sys/firmware/efi); unknown: EFI but variable unreadable.
    """
    efi_dir = os.path.join(sysfs_root, "firmware", "efi")
    if not os.path.isdir(efi_dir):
        return "not_efi"
    try:
        with open(os.path.join(efi_dir, "efivars", SECURE_BOOT_VAR), "rb") as handle:
            data = handle.read()
    except OSError:
        return "unknown"
    if len(data) < 5:
        return "unknown"
    return "enabled" if data[-1] == 1 else "disabled"


def upstream_version(debian_version: str) -> str:
    """'1:535.183.01-1~deb12u1' -> '535.183.01': drop the epoch and the Debian revision."""
    version = debian_version.split(":", 1)[1] if ":" in debian_version else debian_version
    return version.rsplit("-", 1)[0] if "-" in version else version


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def parse_dpkg_query(output: str) -> list[dict[str, str]]:
    """Installed packages from dpkg-query -W with Package, Version, db:Status-Abbrev (tabs).

    Not-installed and config-files entries are dropped; dpkg lists them for glob patterns.
    """
    packages = []
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or len(fields[2]) < 2 or fields[2][1] not in _DPKG_INSTALLED:
            continue
        packages.append({"package": fields[0], "version": fields[1], "status": fields[2].strip()})
    return packages


def pick_driver_package(installed: list[dict[str, str]], patterns: Iterable[str]) -> dict[str, str] | None:
    """First pattern with an installed match wins; within a pattern the highest version."""
    from fnmatch import fnmatchcase

    for pattern in patterns:
        matches = [pkg for pkg in installed if fnmatchcase(pkg["package"], pattern)]
        if matches:
            return max(matches, key=lambda pkg: _version_key(upstream_version(pkg["version"])))
    return None


def normalize_pci_address(address: str) -> str:
    """nvidia-smi's '00000000:3B:00.0' -> sysfs' '0000:3b:00.0'."""
    address = address.strip().lower()
    domain, _sep, rest = address.partition(":")
    if rest and len(domain) > 4:
        domain = domain[-4:]
    return f"{domain}:{rest}" if rest else address


def parse_smi_gpus(output: str) -> list[dict[str, Any]]:
    """GPUs from nvidia-smi --query-gpu=index,pci.bus_id,name,driver_version (csv, noheader)."""
    gpus = []
    for line in output.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4 or not fields[0].isdigit():
            continue
        gpus.append(
            {
                "index": int(fields[0]),
                "pci_bus_id": normalize_pci_address(fields[1]),
                "name": ", ".join(fields[2:-1]),
                "driver_version": fields[-1],
            }
        )
    return gpus


def parse_compute_apps(output: str) -> list[dict[str, Any]]:
    """Processes from `nvidia-smi --query-compute-apps=pid,process_name,used_memory ...`."""
    processes = []
    for line in output.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 3 or not fields[0].isdigit():
            continue  # blank lines, "No running processes found"
        processes.append(
            {
                "pid": int(fields[0]),
                "process_name": ", ".join(fields[1:-1]),
                "used_memory": fields[-1],
            }
        )
    return processes


def scan_device_holders(procfs_root: str, ignore: Iterable[str]) -> list[dict[str, Any]]:
    """Processes with /dev/nvidia* open, from /proc/<pid>/fd; needs no working NVML."""
    ignored = set(ignore)
    holders = []
    try:
        pids = sorted((entry for entry in os.listdir(procfs_root) if entry.isdigit()), key=int)
    except OSError:
        return []
    for pid in pids:
        fd_dir = os.path.join(procfs_root, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # process gone or not ours to read
        devices = set()
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith("/dev/nvidia"):
                devices.add(target)
        if not devices:
            continue
        name = read_text(os.path.join(procfs_root, pid, "comm")) or "?"
        if name in ignored:
            continue
        holders.append({"pid": int(pid), "process_name": name, "devices": sorted(devices)})
    return holders


def decide_reboot(
    *,
    gpu_count: int,
    module_loaded_version: str | None,
    installed_version: str | None,
    nouveau_loaded: bool,
    compute_processes: list[dict[str, Any]],
    workspace_containers: list[str],
    reboot_allowed: bool = True,
    reboot_forced: bool = False,
    assume_gpu: bool = False,
) -> dict[str, Any]:
    """Whether the installed driver needs a reboot, and whether it may happen now.

    A reboot only helps once a driver is installed: then it is needed when the loaded module
    differs from the package, when nouveau holds the GPU, or when no nvidia module is loaded
    on a GPU host (or a forced install). Running GPU work blocks it unless forced; a forbidding
    setting turns it into "pending". action: none | reboot | pending.
    """
    reasons: list[str] = []
    if installed_version:
        if nouveau_loaded:
            reasons.append("nouveau is loaded and holds the GPU")
        if module_loaded_version and module_loaded_version != installed_version:
            reasons.append(
                f"loaded nvidia module {module_loaded_version} differs from "
                f"installed driver {installed_version}"
            )
        elif not module_loaded_version and (gpu_count > 0 or assume_gpu):
            reasons.append(f"driver {installed_version} is installed but no nvidia module is loaded")
    blockers = [
        f"GPU process {proc['pid']} {proc.get('process_name', '?')}"
        + (f" ({proc['used_memory']})" if proc.get("used_memory") else "")
        for proc in compute_processes
    ] + [f"workspace container {name}" for name in workspace_containers]

    if not reasons:
        action, message = "none", "no reboot needed"
    elif not reboot_allowed:
        action = "pending"
        message = "reboot pending (reboots are forbidden by configuration): " + "; ".join(reasons)
    elif blockers and not reboot_forced:
        action = "pending"
        message = (
            "reboot pending: " + "; ".join(reasons) + ". Not rebooting while running: " + ", ".join(blockers)
        )
    else:
        action = "reboot"
        message = "reboot needed: " + "; ".join(reasons)
        if blockers:
            message += " (forced despite: " + ", ".join(blockers) + ")"
    return {
        "needed": bool(reasons),
        "reasons": reasons,
        "blockers": blockers,
        "action": action,
        "message": message,
    }


def _merge_processes(smi: list[dict[str, Any]], holders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """nvidia-smi's list plus device holders it did not name (e.g. when NVML is broken)."""
    seen = {proc["pid"] for proc in smi}
    merged = list(smi)
    for holder in holders:
        if holder["pid"] not in seen:
            merged.append({"pid": holder["pid"], "process_name": holder["process_name"], "used_memory": None})
    return merged


def subprocess_runner(timeout: int) -> Runner:
    """A runner for real hosts: no shell, bounded time, C locale for stable output."""

    def run(argv: list[str]) -> tuple[int, str, str]:
        env = dict(os.environ, LC_ALL="C")
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
        except subprocess.TimeoutExpired:
            return 124, "", f"{argv[0]} timed out after {timeout}s"
        except OSError as exc:
            return 127, "", str(exc)
        return done.returncode, done.stdout, done.stderr

    return run


def gather(
    *,
    sysfs_root: str = "/sys",
    procfs_root: str = "/proc",
    run: Runner,
    which: Which = shutil.which,
    driver_packages: Iterable[str] = DEFAULT_DRIVER_PACKAGES,
    query_nvidia_smi: bool = True,
    ignore_processes: Iterable[str] = DEFAULT_IGNORED_PROCESSES,
    workspace_containers: list[str] | None = None,
    reboot_allowed: bool = True,
    reboot_forced: bool = False,
    assume_gpu: bool = False,
) -> dict[str, Any]:
    """All facts; commands go through `run`/`which` so tests substitute doubles."""
    patterns = list(driver_packages)
    devices = scan_pci_devices(sysfs_root)
    modules = parse_proc_modules(read_text(os.path.join(procfs_root, "modules")))
    module_version = loaded_module_version(sysfs_root, procfs_root)

    installed: list[dict[str, str]] = []
    if which("dpkg-query"):
        _rc, out, _err = run(
            ["dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n", *patterns]
        )
        installed = parse_dpkg_query(out)  # rc 1 only means "some pattern matched nothing"
    chosen = pick_driver_package(installed, patterns)

    smi_path = which("nvidia-smi") if query_nvidia_smi else None
    smi_ok = False
    smi_error = None
    smi_gpus: list[dict[str, Any]] = []
    smi_processes: list[dict[str, Any]] = []
    if smi_path:
        rc, out, err = run([smi_path, *GPU_QUERY])
        if rc == 0:
            smi_gpus = parse_smi_gpus(out)
            rc, out, err = run([smi_path, *COMPUTE_APPS_QUERY])
        if rc == 0:
            smi_ok = True
            smi_processes = parse_compute_apps(out)
        else:
            smi_error = (err or out).strip() or f"nvidia-smi exited {rc}"

    holders = scan_device_holders(procfs_root, ignore_processes)
    processes = _merge_processes(smi_processes, holders)
    containers = list(workspace_containers or [])
    installed_version = upstream_version(chosen["version"]) if chosen else None
    secure_boot = secure_boot_state(sysfs_root)
    return {
        "count": len(devices),
        "devices": devices,
        "pci_ids": [f"{d['vendor'][2:]}:{d['device'][2:]}" for d in devices],
        "module_loaded": "nvidia" in modules,
        "module_loaded_version": module_version,
        "installed_package": chosen["package"] if chosen else None,
        "installed_package_version": installed_version,
        "installed_package_full_version": chosen["version"] if chosen else None,
        "installed_packages": installed,
        "nouveau_loaded": "nouveau" in modules,
        "secure_boot": secure_boot == "enabled",
        "secure_boot_state": secure_boot,
        "nvidia_smi_available": bool(smi_path),
        "nvidia_smi_ok": smi_ok,
        "nvidia_smi_error": smi_error,
        "smi_gpus": smi_gpus,
        "smi_count": len(smi_gpus) if smi_ok else None,
        "compute_processes": processes,
        "device_holders": holders,
        "reboot": decide_reboot(
            gpu_count=len(devices),
            module_loaded_version=module_version,
            installed_version=installed_version,
            nouveau_loaded="nouveau" in modules,
            compute_processes=processes,
            workspace_containers=containers,
            reboot_allowed=reboot_allowed,
            reboot_forced=reboot_forced,
            assume_gpu=assume_gpu,
        ),
    }


def main() -> None:
    """Ansible entry point (imports Ansible only here so unit tests need no Ansible)."""
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "sysfs_root": {"type": "path", "default": "/sys"},
            "procfs_root": {"type": "path", "default": "/proc"},
            "driver_packages": {
                "type": "list",
                "elements": "str",
                "default": list(DEFAULT_DRIVER_PACKAGES),
            },
            "query_nvidia_smi": {"type": "bool", "default": True},
            "nvidia_smi_timeout": {"type": "int", "default": 30},
            "ignore_processes": {
                "type": "list",
                "elements": "str",
                "default": list(DEFAULT_IGNORED_PROCESSES),
            },
            "workspace_containers": {"type": "list", "elements": "str", "default": []},
            "reboot_allowed": {"type": "bool", "default": True},
            "reboot_forced": {"type": "bool", "default": False},
            "assume_gpu": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    params = module.params
    facts = gather(
        sysfs_root=params["sysfs_root"],
        procfs_root=params["procfs_root"],
        run=subprocess_runner(params["nvidia_smi_timeout"]),
        which=module.get_bin_path,
        driver_packages=params["driver_packages"],
        query_nvidia_smi=params["query_nvidia_smi"],
        ignore_processes=params["ignore_processes"],
        workspace_containers=params["workspace_containers"],
        reboot_allowed=params["reboot_allowed"],
        reboot_forced=params["reboot_forced"],
        assume_gpu=params["assume_gpu"],
    )
    module.exit_json(changed=False, ansible_facts={"nvidia_gpu": facts})


if __name__ == "__main__":
    main()
