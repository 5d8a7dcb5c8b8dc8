"""Measurement helpers for bench/run.py: timed runs, A/B alternation, process-tree memory, machine facts.

Every figure the bench reports is a ratio of medians taken in one session, with the two sides
alternated (A B, B A, A B, ...), so slow drift of a shared machine's load hits both sides alike.
The parsers here are pure functions so tests/unit/test_bench_lib.py can check them offline.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")


def parse_recap(text: str) -> dict[str, dict[str, int]]:
    """Per-host counts from the PLAY RECAP of plain ansible-playbook output."""
    hosts: dict[str, dict[str, int]] = {}
    in_recap = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        if not in_recap:
            continue
        if not line.strip():
            if hosts:
                break
            continue
        match = RECAP_LINE.match(line)
        if not match:
            break
        counts = dict(pair.split("=") for pair in match["counts"].split())
        hosts[match["host"]] = {key: int(value) for key, value in counts.items()}
    return hosts


def total(hosts: Mapping[str, Mapping[str, int]], key: str) -> int:
    return sum(int(counts.get(key, 0)) for counts in hosts.values())


def parse_kv_kb(text: str, key: str) -> int | None:
    """A `Key:   1234 kB` value from /proc/PID/status or /proc/meminfo, in kB."""
    match = re.search(rf"^{re.escape(key)}:\s+(\d+)\s*kB", text, re.M)
    return int(match.group(1)) if match else None


def parse_cpu_model(cpuinfo: str) -> str:
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def parse_stat_ppid(stat: str) -> int:
    """The parent pid from /proc/PID/stat (the command name may hold spaces and parens)."""
    return int(stat[stat.rindex(")") + 2:].split()[1])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


class TreeSampler:
    """Samples the RSS of a process and all its descendants until stopped.

    `tree_peak_kb` is the largest sum of RSS seen (it counts pages shared by forked workers once
    per process, so it over-states real use); `hwm_kb` keeps each process' own high-water mark
    (VmHWM, exact for any process alive at a sample) keyed by a short label.
    """

    def __init__(self, root_pid: int, label: Callable[[int, str], str], interval_s: float = 0.2) -> None:
        self.root_pid = root_pid
        self.label = label
        self.interval_s = interval_s
        self.tree_peak_kb = 0
        self.hwm_kb: dict[str, int] = {}
        self.max_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _descendants(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            stat = _read(f"/proc/{entry.name}/stat")
            if stat:
                children.setdefault(parse_stat_ppid(stat), []).append(int(entry.name))
        found, todo = [], [self.root_pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def sample(self) -> None:
        rss_total = 0
        pids = self._descendants()
        for pid in pids:
            status = _read(f"/proc/{pid}/status")
            rss = parse_kv_kb(status, "VmRSS")
            if rss is None:
                continue
            rss_total += rss
            hwm = parse_kv_kb(status, "VmHWM") or 0
            cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ")
            key = self.label(pid, cmdline)
            if key:
                self.hwm_kb[key] = max(self.hwm_kb.get(key, 0), hwm)
        self.tree_peak_kb = max(self.tree_peak_kb, rss_total)
        self.max_processes = max(self.max_processes, len(pids))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)


@dataclass
class Run:
    """One timed command: wall seconds from fork to exit, as the user would wait for it."""

    label: str
    argv: list[str]
    wall_s: float
    rc: int
    stdout: str
    stderr: str
    memory: dict[str, int] = field(default_factory=dict)
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)
    cpu_s: float = 0.0

    def brief(self) -> dict[str, Any]:
        return {"label": self.label, "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                "rc": self.rc, **self.memory}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(label: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path,
              sampler: Callable[[int], TreeSampler] | None = None, timeout_s: float = 900) -> Run:
    """Run argv to completion and time it; optionally sample its process tree's memory.

    `cpu_s` is the CPU time of the whole tree (the command, ansible-playbook, its workers), from
    RUSAGE_CHILDREN before and after: runs are sequential, so the difference is this run's.
    """
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    memory: dict[str, int] = {}
    if sampler:
        with sampler(proc.pid) as tree:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        memory = {"tree_peak_rss_kb": tree.tree_peak_kb, "max_processes": tree.max_processes,
                  **{f"hwm_{k}_kb": v for k, v in tree.hwm_kb.items()}}
    else:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    wall = time.perf_counter() - started
    return Run(label, list(argv), wall, proc.returncode, stdout, stderr, memory,
               cpu_s=_children_cpu_s() - cpu_before)


def alternate(rounds: int, arms: Mapping[str, Callable[[], Run]], *, warmup: bool = True,
              check: Callable[[Run], None] | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, list[Run]]:
    """Run every arm `rounds` times, reversing the order each round (AB BA AB ...).

    One untimed warm-up run per arm first fills SSH ControlPersist masters, fact caches and the
    page cache for both sides. `check` raises on a run whose outcome makes its time meaningless.
    """
    names = list(arms)
    if warmup:
        for name in names:
            run = arms[name]()
            if check:
                check(run)
    results: dict[str, list[Run]] = {name: [] for name in names}
    for index in range(rounds):
        order = names if index % 2 == 0 else list(reversed(names))
        for name in order:
            run = arms[name]()
            if check:
                check(run)
            results[name].append(run)
            if progress:
                progress(f"  round {index + 1}/{rounds} {name}: {run.wall_s:.2f} s")
    return results


def slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares line through (xs, ys): (slope, intercept). Needs two distinct xs."""
    if len(xs) != len(ys) or len(set(xs)) < 2:
        raise ValueError("a slope needs at least two distinct x values, one y each")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return k, my - k * mx


def tasks_run(counts: Mapping[str, int]) -> int:
    """Tasks a host went through, from its recap counts (ok holds changed and ignored ones too)."""
    return sum(int(counts.get(k, 0)) for k in ("ok", "skipped", "failed"))


def walls(runs: Sequence[Run]) -> list[float]:
    return [round(r.wall_s, 3) for r in runs]


def cpus(runs: Sequence[Run]) -> list[float]:
    return [round(r.cpu_s, 3) for r in runs]


@dataclass
class Figure:
    """One row of the results table."""

    key: str
    title: str
    value: float | None
    target: float
    unit: str = "x"
    higher_is_worse: bool = True
    passed: bool | None = None
    measured: str = ""
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def judge(self, extra_ok: bool = True) -> Figure:
        if self.value is None or self.error:
            self.passed = None
        else:
            within = self.value <= self.target if self.higher_is_worse else self.value >= self.target
            self.passed = within and extra_ok
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if isinstance(self.value, float):
            data["value"] = round(self.value, 4)
        return data


def machine_info() -> dict[str, Any]:
    """What the numbers came from: CPU, memory, load, and the software versions that matter."""
    meminfo = _read("/proc/meminfo")
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": parse_cpu_model(_read("/proc/cpuinfo")),
        "mem_total_gib": round((parse_kv_kb(meminfo, "MemTotal") or 0) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _os_release(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    for dist in ("ansible-core", "ansible-runner", "ansible", "rich", "pydantic", "mitogen"):
        info[dist] = _dist_version(dist)
    try:
        info["docker_server"] = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
            text=True, timeout=20, check=False).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["docker_server"] = None
    return info


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _os_release() -> str:
    match = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', _read("/etc/os-release"), re.M)
    return match.group(1) if match else platform.platform()


def project_info(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain")),
            "site_roles": site_roles(root / "playbooks" / "site.yml")}


def site_roles(site: Path) -> list[str]:
    """The roles site.yml applies today (the re-provision bench follows whatever it holds)."""
    import yaml

    try:
        plays = yaml.safe_load(site.read_text()) or []
    except (OSError, yaml.YAMLError):
        return []
    roles: list[str] = []
    for play in plays if isinstance(plays, list) else []:
        for role in (play or {}).get("roles", []) or []:
            roles.append(role if isinstance(role, str) else str(role.get("role") or role.get("name")))
    return roles


def write_results(results_dir: Path, payload: Mapping[str, Any], stamp: str) -> tuple[Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, default=str) + "\n"
    path = results_dir / f"{stamp}.json"
    path.write_text(text)
    latest = results_dir / "latest.json"
    latest.write_text(text)
    return path, latest


def venv_bin() -> Path:
    return Path(sys.executable).parent
