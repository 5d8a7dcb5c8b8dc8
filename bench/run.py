"""tflab-provision benchmarks: one command, a table, and a JSON record of the machine it ran on.

    /tmp/venv/bin/python bench/run.py [--quick] [--only NAME[,NAME]] [--repeat N]
    /tmp/venv/bin/python bench/run.py --show [FILE] [--markdown]

Every figure is a ratio measured in this one run: the two sides alternate (AB BA AB ...) and
the medians are compared, so a noisy, shared machine moves both sides alike. Sandbox hosts
(prefix `tflab-bench-`) are created fresh and removed at the end, also on failure or Ctrl-C.
Each benchmark takes the shared heavy-work lock (/tmp/tflab-heavy.lock) while it runs.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import fcntl
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    Figure,
    Run,
    TreeSampler,
    alternate,
    cpus,
    machine_info,
    median,
    parse_recap,
    project_info,
    ratio,
    run_timed,
    slope,
    tasks_run,
    total,
    venv_bin,
    walls,
    write_results,
)
from latency_proxy import LatencyProxy, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PREFIX = "tflab-bench"
BENCHES = ("reprovision", "wrapper", "accelerator", "fleet", "tuning", "latency", "controller")
FLEET_SIZES = (1, 2, 4, 8)
LATENCIES_MS = (0, 1, 10)
PROJECTED_FLEET = 50  # hosts, for the fleet figure's projection of a no-op site.yml
LOCAL_HOSTS = 200

console = Console(stderr=True, soft_wrap=True)


class BenchError(RuntimeError):
    """A run inside a benchmark failed, so its time means nothing."""


def say(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


@contextlib.contextmanager
def heavy_lock(path: str | None, what: str) -> Iterator[float]:
    """Hold the shared lock for heavy work (flock, as `flock /tmp/tflab-heavy.lock` does)."""
    if not path:
        yield 0.0
        return
    started = time.monotonic()
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for {path} ({what})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def clean_env() -> dict[str, str]:
    """The caller's environment without ANSIBLE_* settings, so both sides start equal."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}


@dataclass
class Bench:
    """Shared state of one benchmark session."""

    args: argparse.Namespace
    state: Path
    rounds: int
    lock: str | None
    inventory: Path | None = None
    converged: set[str] = field(default_factory=set)
    bin: Path = field(default_factory=venv_bin)
    site_noop_tasks: int | None = None  # tasks a host runs in a no-op site.yml, once measured

    # --- how each side is run -------------------------------------------------------------

    def hosts(self, count: int) -> list[str]:
        return [f"{PREFIX}-{i}" for i in range(1, count + 1)]

    def sandbox_inventories(self) -> list[str]:
        assert self.inventory is not None
        return ["-i", str(ROOT / "inventory" / "sandbox"), "-i", str(self.inventory)]

    def tflab(self, label: str, playbook: str, inventories: Sequence[str], limit: str | None,
              sampler: Callable[[int], TreeSampler] | None = None,
              wrap_rss: Path | None = None, accelerator: str = "none") -> Run:
        argv = [str(self.bin / "tflab"), "apply", "--playbook", playbook, *inventories,
                "--json", "--state-dir", str(self.state), "--accelerator", accelerator]
        if limit:
            argv += ["--limit", limit]
        if wrap_rss:
            argv = [str(self.bin / "python"), str(BENCH / "_peakrss.py"), str(wrap_rss), *argv]
        run = run_timed(label, argv, env=clean_env(), cwd=ROOT, sampler=sampler)
        try:
            result = json.loads(run.stdout)
        except json.JSONDecodeError as exc:
            raise BenchError(f"{label}: no JSON from tflab (rc {run.rc}): {run.stderr[-800:]}") from exc
        run.memory |= _read_rss(wrap_rss)
        run.stdout = ""  # keep memory small; what matters is parsed below
        run.hosts = result.get("hosts", {})
        return run

    def plain_env(self, playbook: str) -> dict[str, str]:
        """What tflab hands ansible-playbook (from the runner's own kwargs), minus its callback."""
        from tflab_provision.runner import Project, RunRequest, runner_kwargs
        from tflab_provision.state import StateDir

        inventories = (self.inventory,) if self.inventory else ()
        kwargs = runner_kwargs(RunRequest(playbook=playbook, inventories=inventories),
                               Project(ROOT), StateDir(self.state), self.state / "runs" / "plain")
        env = clean_env() | {k: v for k, v in kwargs["envvars"].items() if k != "TFLAB_RUN_ID"}
        env |= {"ANSIBLE_RETRY_FILES_ENABLED": "False"}
        if kwargs.get("fact_cache_type") == "jsonfile":
            env |= {"ANSIBLE_CACHE_PLUGIN": "jsonfile",
                    "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(kwargs["fact_cache"])}
        return env

    def plain_extravars(self) -> Path:
        """The extra vars tflab hands every run (the lab CA dir, here the bench state's), as the
        file ansible-runner passes with -e @: without it a plain site.yml makes a second lab CA."""
        from tflab_provision.ca import default_ca_dir

        path = self.state / "plain-extravars.json"
        path.write_text(json.dumps({"tflab_ca_dir": str(default_ca_dir(self.state))}))
        return path

    def runner_callback_env(self, env: dict[str, str]) -> dict[str, str]:
        """env plus what ansible-runner sets for its event callback (config/_base.py): awx_display
        as the stdout callback, writing each event's data to a fresh job_events/ here. Its output
        goes to a pipe, where ansible-runner gives it a pty."""
        import ansible_runner

        events = self.state / "runner-callback"
        shutil.rmtree(events, ignore_errors=True)
        events.mkdir()
        return env | {"ANSIBLE_STDOUT_CALLBACK": "awx_display", "AWX_ISOLATED_DATA_DIR": str(events),
                      "ANSIBLE_CALLBACK_PLUGINS": str(Path(ansible_runner.__file__).parent
                                                      / "display_callback" / "callback"),
                      "RUNNER_OMIT_EVENTS": "False", "RUNNER_ONLY_FAILED_EVENTS": "False"}

    def plain(self, label: str, playbook: str, inventories: Sequence[str], limit: str | None,
              env: dict[str, str], sampler: Callable[[int], TreeSampler] | None = None,
              wrap_rss: Path | None = None) -> Run:
        argv = [str(self.bin / "ansible-playbook"), *inventories, "-e", f"@{self.plain_extravars()}"]
        if limit:
            argv += ["--limit", limit]
        argv.append(str(ROOT / playbook if "/" in playbook else ROOT / "playbooks" / playbook))
        if wrap_rss:
            argv = [str(self.bin / "python"), str(BENCH / "_peakrss.py"), str(wrap_rss), *argv]
        run = run_timed(label, argv, env=env, cwd=ROOT, sampler=sampler)
        run.memory |= _read_rss(wrap_rss)
        run.hosts = parse_recap(run.stdout)
        if run.rc != 0 or not run.hosts:
            raise BenchError(f"{label}: ansible-playbook rc {run.rc}:\n"
                             f"{run.stdout[-1500:]}{run.stderr[-800:]}")
        run.stdout = ""
        return run

    # --- sandbox ---------------------------------------------------------------------------

    def sandbox_up(self, count: int) -> None:
        self.sandbox_down(quiet=True)
        with heavy_lock(self.lock, "sandbox up"):
            say(f"starting {count} sandbox host(s) {PREFIX}-1..{count}")
            run = run_timed("sandbox up", [str(self.bin / "tflab"), "sandbox", "up", "--count", str(count),
                                           "--prefix", PREFIX, "--state-dir", str(self.state)],
                            env=clean_env(), cwd=ROOT)
        if run.rc != 0:
            raise BenchError(f"tflab sandbox up failed: {run.stderr[-1500:]}")
        self.inventory = Path(run.stdout.strip().splitlines()[-1])
        say(f"sandbox up in {run.wall_s:.1f} s: {self.inventory}")

    def sandbox_down(self, quiet: bool = False) -> None:
        run = run_timed("sandbox down", [str(self.bin / "tflab"), "sandbox", "down", "--prefix", PREFIX,
                                         "--state-dir", str(self.state)], env=clean_env(), cwd=ROOT)
        if not quiet:
            removed = run.stderr.strip().replace("\n", ", ") or "nothing to remove"
            say(f"sandbox down (rc {run.rc}): {removed}")

    def converge(self, hosts: Sequence[str]) -> Run | None:
        """Run site.yml once on hosts not yet converged (untimed preparation for no-op benches)."""
        todo = [h for h in hosts if h not in self.converged]
        if not todo:
            return None
        say(f"converging {', '.join(todo)} with site.yml")
        run = self.tflab("converge", "site.yml", self.sandbox_inventories(), ",".join(todo))
        expect_ok(run)
        self.converged.update(todo)
        return run


def _read_rss(path: Path | None) -> dict[str, int]:
    if not path or not path.exists():
        return {}
    data = json.loads(path.read_text())
    path.unlink()
    return {"self_maxrss_kb": int(data["self_maxrss_kb"]), "self_cpu_ms": int(data["self_cpu_s"] * 1000)}


def expect_ok(run: Run, changed: int | None = None) -> None:
    hosts = run.hosts
    if run.rc != 0 or not hosts or total(hosts, "failed") or total(hosts, "unreachable"):
        raise BenchError(f"{run.label}: rc {run.rc}, hosts {hosts}\n{run.stderr[-1500:]}")
    if changed is not None and total(hosts, "changed") != changed:
        raise BenchError(f"{run.label}: expected changed={changed}, got {hosts}")


def expect_noop(run: Run) -> None:
    expect_ok(run, changed=0)


# --- the benchmarks -------------------------------------------------------------------------------

def bench_reprovision(b: Bench) -> list[Figure]:
    """2. A no-op re-run of site.yml (whatever it holds today) on a converged host vs the cold run."""
    cold_hosts = b.hosts(1 if b.args.quick else 3)
    colds: list[Run] = []
    noops: list[Run] = []
    for host in cold_hosts:  # cold, then its first re-run: each pair under the same load
        say(f"cold site.yml on fresh {host}")
        cold = b.tflab(f"cold {host}", "site.yml", b.sandbox_inventories(), host)
        expect_ok(cold)
        b.converged.add(host)
        colds.append(cold)
        noop = b.tflab(f"no-op {host}", "site.yml", b.sandbox_inventories(), host)
        expect_noop(noop)
        noops.append(noop)
        say(f"  cold {cold.wall_s:.2f} s, no-op {noop.wall_s:.2f} s")
    while len(noops) < b.rounds:
        noop = b.tflab(f"no-op {cold_hosts[0]}", "site.yml", b.sandbox_inventories(), cold_hosts[0])
        expect_noop(noop)
        noops.append(noop)
    t_cold, t_noop = median(walls(colds)), median(walls(noops))
    tasks = tasks_run(noops[0].hosts[cold_hosts[0]])
    b.site_noop_tasks = tasks
    per_task = t_noop / tasks if tasks else float("nan")
    changed = [total(r.hosts, "changed") for r in noops]
    fig = Figure("reprovision", "2. Re-provision: no-op ÷ cold site.yml", ratio(t_noop, t_cold), 0.10,
                 measured=f"no-op {t_noop:.2f} s vs cold {t_cold:.2f} s; changed={max(changed)}; "
                          f"{per_task:.2f} s/task ({tasks} tasks)",
                 note=f"site.yml roles today: {', '.join(project_info(ROOT)['site_roles']) or '?'}",
                 detail={"cold_s": walls(colds), "noop_s": walls(noops), "noop_changed": changed,
                         "cold_controller_cpu_s": cpus(colds), "noop_controller_cpu_s": cpus(noops),
                         "noop_tasks_per_host": tasks, "noop_s_per_task": round(per_task, 3),
                         "cold_counts": colds[0].hosts, "noop_counts": noops[0].hosts})
    return [fig.judge(extra_ok=max(changed) == 0)]


def bench_wrapper(b: Bench) -> list[Figure]:
    """1. `tflab apply` vs plain ansible-playbook: same playbook, inventory, ansible.cfg and env."""
    hosts = b.hosts(2)
    b.converge(hosts)
    return [wrapper_figure(b, "bench/playbooks/noop.yml", "wrapper_noop", hosts),
            wrapper_figure(b, "site.yml", "wrapper_site", hosts)]


def wrapper_figure(b: Bench, playbook: str, key: str, hosts: list[str]) -> Figure:
    """tflab vs plain ansible-playbook, and between them plain ansible-playbook with the event
    callback ansible-runner always installs (awx_display): what that callback costs is
    ansible-runner's, what tflab costs beyond it is ours."""
    env = b.plain_env(playbook)
    limit = ",".join(hosts)
    say(f"wrapper overhead on {playbook} ({len(hosts)} hosts), {b.rounds} rounds")
    runs = alternate(b.rounds, {
        "tflab": lambda: b.tflab("tflab", playbook, b.sandbox_inventories(), limit),
        "ansible-playbook": lambda: b.plain("plain", playbook, b.sandbox_inventories(), limit, env),
        "with-callback": lambda: b.plain("plain + awx_display", playbook, b.sandbox_inventories(), limit,
                                         b.runner_callback_env(env)),
    }, check=expect_noop, progress=say)
    t_tflab, t_plain = median(walls(runs["tflab"])), median(walls(runs["ansible-playbook"]))
    c_tflab, c_plain = median(cpus(runs["tflab"])), median(cpus(runs["ansible-playbook"]))
    note, split = callback_split(t_tflab, t_plain, runs["with-callback"])
    return Figure(
        key, f"1. Wrapper: tflab ÷ ansible-playbook ({Path(playbook).name})", ratio(t_tflab, t_plain), 1.05,
        measured=f"{t_tflab:.2f} s vs {t_plain:.2f} s (+{t_tflab - t_plain:.2f} s), {len(hosts)} hosts; "
                 f"controller CPU {c_tflab:.2f} s vs {c_plain:.2f} s",
        note=note,
        detail={"tflab_s": walls(runs["tflab"]), "plain_s": walls(runs["ansible-playbook"]),
                "tflab_cpu_s": cpus(runs["tflab"]), "plain_cpu_s": cpus(runs["ansible-playbook"]),
                **split, "hosts": hosts, "playbook": playbook}).judge()


def callback_split(t_tflab: float, t_plain: float, callback_runs: list[Run]) -> tuple[str, dict[str, Any]]:
    """How much of tflab's overhead is ansible-runner's event callback (plain ansible-playbook
    with awx_display, see runner_callback_env) and how much tflab's own: a note and its detail."""
    t_callback = median(walls(callback_runs))
    over_plain, ours = round(ratio(t_callback, t_plain), 4), round(ratio(t_tflab, t_callback), 4)
    note = (f"ansible-playbook with ansible-runner's awx_display callback alone: {t_callback:.2f} s, "
            f"{over_plain:.3f}x plain; tflab ÷ that {ours:.3f}x")
    return note, {"plain_with_runner_callback_s": walls(callback_runs),
                  "plain_with_runner_callback_cpu_s": cpus(callback_runs),
                  "callback_over_plain": over_plain, "tflab_over_callback": ours}


def bench_fleet(b: Bench) -> list[Figure]:
    """3. A no-op run on 1, 2, 4 and 8 sandbox hosts, through tflab, without and with the accelerator.

    The sandbox hosts share the controller's cores, so wall time measures controller and hosts
    together; the controller's own cost is its CPU (the hosts' module work runs in containers, not
    in the controller's process tree), and its marginal cost per added host-task is the slope of
    that CPU over hosts x tasks. The default workload is bench/playbooks/noop.yml: the converged
    site.yml on 8 hosts that share 2 cores takes minutes a run (--fleet-playbook site.yml).
    """
    playbook = b.args.fleet_playbook
    hosts = b.hosts(max(FLEET_SIZES))
    if playbook == "site.yml":
        b.converge(hosts)
    rounds = max(2, b.rounds - 2) if not b.args.quick else 2
    sides = ("none", "mitogen")
    say(f"fleet scaling: no-op {playbook} on {FLEET_SIZES} hosts, {' and '.join(sides)}, {rounds} rounds")
    for side in sides:
        expect_noop(b.tflab(f"warm-up {side}", playbook, b.sandbox_inventories(), ",".join(hosts),
                            accelerator=side))
    samples: dict[str, dict[int, list[float]]] = {side: {n: [] for n in FLEET_SIZES} for side in sides}
    cpu: dict[str, dict[int, list[float]]] = {side: {n: [] for n in FLEET_SIZES} for side in sides}
    tasks = 0
    for index in range(rounds):
        order = FLEET_SIZES if index % 2 == 0 else tuple(reversed(FLEET_SIZES))
        for n in order:
            for side in (sides if (index + n) % 2 == 0 else tuple(reversed(sides))):
                run = b.tflab(f"fleet {n} {side}", playbook, b.sandbox_inventories(), ",".join(hosts[:n]),
                              accelerator=side)
                expect_noop(run)
                tasks = tasks_run(run.hosts[hosts[0]])
                samples[side][n].append(round(run.wall_s, 3))
                cpu[side][n].append(round(run.cpu_s, 3))
                say(f"  round {index + 1}/{rounds} {n} host(s) {side}: {run.wall_s:.2f} s, "
                    f"controller CPU {run.cpu_s:.1f} s")
    med = {side: {n: median(v) for n, v in per.items()} for side, per in samples.items()}
    med_cpu = {side: {n: median(v) for n, v in per.items()} for side, per in cpu.items()}
    lines = {side: slope([n * tasks for n in FLEET_SIZES], [med_cpu[side][n] for n in FLEET_SIZES])
             for side in sides}
    walls_text = {side: " · ".join(f"{n}: {med[side][n]:.1f} s" for n in FLEET_SIZES) for side in sides}
    scaling = Figure(
        "fleet", f"3. Fleet: T(8) ÷ T(1), no-op {Path(playbook).name}",
        ratio(med["none"][8], med["none"][1]), 2.0,
        measured=f"{walls_text['none']} (mitogen {walls_text['mitogen']})",
        note=f"no-op {playbook} via tflab; the hosts share the controller's {os.cpu_count()} cores",
        detail={"samples_s": {side: {str(n): v for n, v in per.items()} for side, per in samples.items()},
                "controller_cpu_s": {side: {str(n): v for n, v in per.items()} for side, per in cpu.items()},
                "tasks_per_host": tasks}).judge()
    k_fast, c_fast = lines["mitogen"]
    k_plain, c_plain = lines["none"]
    projection = ""
    if b.site_noop_tasks:
        host_tasks = PROJECTED_FLEET * b.site_noop_tasks
        cpu_fast, cpu_plain = c_fast + k_fast * host_tasks, c_plain + k_plain * host_tasks
        cores = os.cpu_count() or 1
        projection = (f"; projected no-op site.yml on {PROJECTED_FLEET} hosts ({b.site_noop_tasks} tasks "
                      f"each): controller CPU {cpu_fast:.0f} s with mitogen (at least "
                      f"{cpu_fast / 60 / cores:.1f} min on {cores} cores), {cpu_plain:.0f} s without")
    marginal = Figure(
        "fleet_marginal_cpu",
        f"3b. Fleet: controller CPU per added host-task, mitogen ({Path(playbook).name})",
        k_fast, 0.02, unit="s",
        measured=f"{k_fast:.4f} s with mitogen, {k_plain:.4f} s without (least squares over 1-8 hosts x "
                 f"{tasks} tasks){projection}",
        detail={"slope_s": {side: round(k, 5) for side, (k, _) in lines.items()},
                "intercept_s": {side: round(c, 3) for side, (_, c) in lines.items()}}).judge()
    return [scaling, marginal]


def bench_accelerator(b: Bench) -> list[Figure]:
    """No-op site.yml through tflab with the accelerator (Mitogen) and without it, 1 host.

    Both sides must report the same ok/changed/skipped counts: it changes how tasks reach the
    host, never what they do.
    """
    host = b.hosts(1)
    b.converge(host)
    say(f"accelerator: no-op site.yml on {host[0]}, mitogen vs none, {b.rounds} rounds")
    runs = alternate(b.rounds, {
        "mitogen": lambda: b.tflab("mitogen", "site.yml", b.sandbox_inventories(), host[0],
                                   accelerator="mitogen"),
        "none": lambda: b.tflab("none", "site.yml", b.sandbox_inventories(), host[0]),
    }, check=expect_noop, progress=say)
    counts = {side: [r.hosts[host[0]] for r in rs] for side, rs in runs.items()}
    same = all(c == counts["none"][0] for cs in counts.values() for c in cs)
    tasks = tasks_run(counts["none"][0])
    b.site_noop_tasks = tasks
    t_fast, t_plain = median(walls(runs["mitogen"])), median(walls(runs["none"]))
    c_fast, c_plain = median(cpus(runs["mitogen"])), median(cpus(runs["none"]))
    detail = {"mitogen_s": walls(runs["mitogen"]), "none_s": walls(runs["none"]),
              "mitogen_cpu_s": cpus(runs["mitogen"]), "none_cpu_s": cpus(runs["none"]),
              "tasks_per_host": tasks, "counts": counts["none"][0], "same_counts": same}
    ratio_fig = Figure(
        "accelerator", "6a. Accelerator: no-op site.yml, mitogen ÷ none", ratio(t_fast, t_plain), 0.40,
        measured=f"{t_fast:.2f} s vs {t_plain:.2f} s, {tasks} tasks, 1 host; controller CPU "
                 f"{c_fast:.1f} s vs {c_plain:.1f} s; same counts both ways: {same}",
        detail=detail).judge(extra_ok=same)
    per_task = Figure(
        "accelerator_per_task", "6b. Accelerator: no-op site.yml seconds per task", t_fast / tasks, 0.06,
        unit="s", measured=f"{t_fast / tasks:.3f} s/task with mitogen, {t_plain / tasks:.3f} s/task "
                           f"without ({tasks} tasks, 1 host)").judge(extra_ok=same)
    return [ratio_fig, per_task]


@contextlib.contextmanager
def delayed(b: Bench, hosts: Sequence[str], rtt_ms: float) -> Iterator[list[str]]:
    """Inventories that reach `hosts` through a LatencyProxy adding rtt_ms: the sandbox ones plus
    host vars for the proxy's ports, and the hosts' pinned keys under those ports."""
    assert b.inventory is not None
    sandbox = yaml.safe_load(b.inventory.read_text())["all"]["children"]["sandbox"]
    ports = {h: int(sandbox["hosts"][h]["ansible_port"]) for h in hosts}
    listen = {h: free_port() for h in hosts}
    pinned = (b.state / "sandbox" / "known_hosts").read_text().splitlines()
    known = b.state / "sandbox" / f"known_hosts-{rtt_ms:g}ms"
    lines = list(pinned)
    for h in hosts:
        prefix = f"[127.0.0.1]:{ports[h]} "
        lines += [f"[127.0.0.1]:{listen[h]} {line[len(prefix):]}"
                  for line in pinned if line.startswith(prefix)]
    known.write_text("\n".join(lines) + "\n")
    known.chmod(0o600)
    args = str(sandbox["vars"]["ansible_ssh_common_args"]).replace(
        str(b.state / "sandbox" / "known_hosts"), str(known))
    override = b.state / f"delayed-{rtt_ms:g}ms.yml"
    override.write_text(yaml.safe_dump({"all": {"hosts": {
        h: {"ansible_port": listen[h], "ansible_ssh_common_args": args} for h in hosts}}}))
    with LatencyProxy({listen[h]: ("127.0.0.1", ports[h]) for h in hosts}, rtt_ms):
        yield [*b.sandbox_inventories(), "-i", str(override)]


def bench_latency(b: Bench) -> list[Figure]:
    """The project's ansible.cfg vs Ansible's defaults across a delaying proxy: noop.yml at 0, 1
    and 10 ms round trip, and the converged no-op site.yml at 10 ms (the figure)."""
    host = b.hosts(1)
    b.converge(host)
    tuned, defaults = tuning_envs(b)
    curve: dict[str, dict[str, list[float]]] = {}
    figure_runs: dict[str, list[Run]] = {}
    workloads = [("bench/playbooks/noop.yml", ms, b.rounds) for ms in LATENCIES_MS]
    workloads.append(("site.yml", LATENCIES_MS[-1], max(1, b.rounds - 2)))
    for playbook, ms, rounds in workloads:
        say(f"latency {ms} ms: project ansible.cfg vs defaults, no-op {Path(playbook).name}, "
            f"{rounds} rounds")
        with delayed(b, host, ms) as inventories:
            runs = alternate(rounds, {
                "project": functools.partial(b.plain, "project cfg", playbook, inventories, host[0], tuned),
                "defaults": functools.partial(b.plain, "default cfg", playbook, inventories, host[0],
                                              defaults),
            }, check=expect_noop, progress=say)
        curve[f"{Path(playbook).name} {ms} ms"] = {"project_s": walls(runs["project"]),
                                                    "defaults_s": walls(runs["defaults"])}
        if playbook == "site.yml":
            figure_runs = runs
    t_proj, t_def = median(walls(figure_runs["project"])), median(walls(figure_runs["defaults"]))
    shape = " · ".join(f"{k}: {median(v['project_s']):.1f} vs {median(v['defaults_s']):.1f} s"
                       for k, v in curve.items() if k.startswith("noop"))
    fig = Figure("latency", f"7. Tuning at {LATENCIES_MS[-1]} ms round trip: project ansible.cfg ÷ defaults",
                 ratio(t_proj, t_def), 0.5,
                 measured=f"no-op site.yml {t_proj:.2f} s vs {t_def:.2f} s, 1 host; {shape}",
                 note="plain ansible-playbook through bench/latency_proxy.py (per-chunk delay, both ways)",
                 detail={"samples": curve}).judge()
    return [fig]


def defaults_cfg(b: Bench) -> Path:
    """Ansible's defaults, plus only what the project needs to be found (roles_path).

    control_path_dir is a location, not a tuning: it keeps this side from reusing the
    project side's 30-minute ControlPersist masters (the socket name hashes host, port, user).
    """
    path = b.state / "ansible-defaults.cfg"
    path.write_text("[defaults]\n"
                    f"roles_path = {ROOT / 'roles'}\n"
                    "[ssh_connection]\n"
                    f"control_path_dir = {b.state / 'cp-defaults'}\n")
    return path


def tuning_envs(b: Bench) -> tuple[dict[str, str], dict[str, str]]:
    """Plain ansible-playbook's environment with the project's ansible.cfg, and with the defaults."""
    tuned = clean_env() | {"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
                           # Location only: keep the bench's facts out of the user's state dir.
                           "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(b.state / "facts-tuned")}
    return tuned, clean_env() | {"ANSIBLE_CONFIG": str(defaults_cfg(b))}


def bench_tuning(b: Bench) -> list[Figure]:
    """4. The project's ansible.cfg vs Ansible's defaults on the same converged no-op site.yml."""
    hosts = b.hosts(2)
    b.converge(hosts)
    limit = ",".join(hosts)
    tuned, defaults = tuning_envs(b)
    say(f"tuning: project ansible.cfg vs defaults, no-op site.yml on {len(hosts)} hosts, {b.rounds} rounds")
    runs = alternate(b.rounds, {
        "project": lambda: b.plain("project cfg", "site.yml", b.sandbox_inventories(), limit, tuned),
        "defaults": lambda: b.plain("default cfg", "site.yml", b.sandbox_inventories(), limit, defaults),
    }, check=expect_noop, progress=say)
    t_proj, t_def = median(walls(runs["project"])), median(walls(runs["defaults"]))
    c_proj, c_def = median(cpus(runs["project"])), median(cpus(runs["defaults"]))
    fig = Figure("tuning", "4. Tuning: project ansible.cfg ÷ defaults", ratio(t_proj, t_def), 0.5,
                 measured=f"{t_proj:.2f} s vs {t_def:.2f} s, no-op site.yml, {len(hosts)} hosts; controller "
                          f"CPU {c_proj:.1f} s vs {c_def:.1f} s",
                 note="plain ansible-playbook; defaults = empty config + roles_path",
                 detail={"project_s": walls(runs["project"]), "defaults_s": walls(runs["defaults"]),
                         "project_cpu_s": cpus(runs["project"]), "defaults_cpu_s": cpus(runs["defaults"])})
    return [fig.judge()]


def local_inventory(b: Bench) -> Path:
    hosts = {f"bench-local-{i:03d}": None for i in range(1, LOCAL_HOSTS + 1)}
    inventory = {"all": {"children": {"bench_local": {"hosts": hosts, "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": str(b.bin / "python")}}}}}
    path = b.state / "local-200.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def ansible_label(pid: int, cmdline: str) -> str:
    if "ansible-playbook" in cmdline and "_peakrss.py" not in cmdline:
        return "ansible_playbook"
    return ""


def bench_controller(b: Bench) -> list[Figure]:
    """5. 200 local-connection hosts: tflab's own peak RSS, and its time vs plain ansible-playbook."""
    inventory = ["-i", str(local_inventory(b))]
    playbook = "bench/playbooks/controller.yml"
    env = b.plain_env(playbook)
    rss = b.state / "rss.json"

    def sampler(pid: int) -> TreeSampler:
        return TreeSampler(pid, ansible_label, interval_s=0.25)

    say(f"controller scale: {LOCAL_HOSTS} local hosts, {b.rounds} rounds")
    runs = alternate(b.rounds, {
        "tflab": lambda: b.tflab("tflab", playbook, inventory, None, sampler, rss),
        "ansible-playbook": lambda: b.plain("plain", playbook, inventory, None, env, sampler, rss),
        "with-callback": lambda: b.plain("plain + awx_display", playbook, inventory, None,
                                         b.runner_callback_env(env)),
    }, check=expect_noop, progress=say)
    t_tflab, t_plain = median(walls(runs["tflab"])), median(walls(runs["ansible-playbook"]))
    own = max(r.memory.get("self_maxrss_kb", 0) for r in runs["tflab"]) / 1024
    ap_plain = max(r.memory.get("self_maxrss_kb", 0) for r in runs["ansible-playbook"]) / 1024
    ap_under = max(r.memory.get("hwm_ansible_playbook_kb", 0) for r in runs["tflab"]) / 1024
    tree_t = max(r.memory.get("tree_peak_rss_kb", 0) for r in runs["tflab"]) / 1024
    tree_p = max(r.memory.get("tree_peak_rss_kb", 0) for r in runs["ansible-playbook"]) / 1024
    cpu_t = median([r.memory.get("self_cpu_ms", 0) / 1000 for r in runs["tflab"]])
    c_tflab, c_plain = median(cpus(runs["tflab"])), median(cpus(runs["ansible-playbook"]))
    note, split = callback_split(t_tflab, t_plain, runs["with-callback"])
    memory = Figure(
        "controller_memory", "5a. Controller: tflab process peak RSS", own, 250, unit="MB",
        measured=f"tflab {own:.0f} MB; ansible-playbook main {ap_plain:.0f} MB (plain), "
                 f"{ap_under:.0f} MB (under tflab, sampled)",
        note="tflab: getrusage(RUSAGE_SELF) of the tflab process; tree sums (shared pages counted "
             f"per process): tflab run {tree_t:.0f} MB, plain run {tree_p:.0f} MB",
        detail={"tflab_self_maxrss_mb": round(own, 1), "ansible_playbook_maxrss_mb_plain": round(ap_plain, 1),
                "ansible_playbook_hwm_mb_under_tflab": round(ap_under, 1),
                "tree_peak_rss_mb_tflab": round(tree_t, 1), "tree_peak_rss_mb_plain": round(tree_p, 1),
                "runs": [r.brief() for rs in runs.values() for r in rs]}).judge()
    timing = Figure(
        "controller_time", f"5b. Controller: tflab ÷ ansible-playbook ({LOCAL_HOSTS} hosts)",
        ratio(t_tflab, t_plain), 1.10,
        measured=f"{t_tflab:.2f} s vs {t_plain:.2f} s (+{t_tflab - t_plain:.2f} s); CPU of the whole "
                 f"tree {c_tflab:.1f} s vs {c_plain:.1f} s, of which the tflab process {cpu_t:.1f} s",
        note=note,
        detail={"tflab_s": walls(runs["tflab"]), "plain_s": walls(runs["ansible-playbook"]),
                "tflab_tree_cpu_s": cpus(runs["tflab"]), "plain_tree_cpu_s": cpus(runs["ansible-playbook"]),
                "tflab_self_cpu_s": cpu_t, **split}).judge()
    return [memory, timing]


RUNNERS: dict[str, Callable[[Bench], list[Figure]]] = {
    "reprovision": bench_reprovision, "wrapper": bench_wrapper, "accelerator": bench_accelerator,
    "fleet": bench_fleet, "tuning": bench_tuning, "latency": bench_latency, "controller": bench_controller,
}


def hosts_needed(selected: Sequence[str], quick: bool) -> int:
    need = {"reprovision": 1 if quick else 3, "wrapper": 2, "accelerator": 1, "tuning": 2, "latency": 1,
            "fleet": max(FLEET_SIZES)}
    return max([need[name] for name in selected if name in need], default=0)


# --- output -------------------------------------------------------------------------------------

def render(payload: dict[str, Any]) -> Table:
    m = payload["machine"]
    table = Table(title=f"tflab-provision benchmarks · {payload['started_at']}",
                  caption=f"{m['nproc']} cores · {m['cpu_model']} · {m['mem_total_gib']} GiB · "
                          f"Python {m['python']} · ansible-core {m['ansible-core']} · "
                          f"ansible-runner {m['ansible-runner']} · load {m['loadavg_at_start']} → "
                          f"{m.get('loadavg_at_end')} · {payload['mode']}, {payload['rounds']} rounds")
    for col in ("figure", "value", "target", "result", "measured"):
        table.add_column(col, overflow="fold")
    for fig in sorted(payload["figures"], key=lambda f: str(f["title"])):
        table.add_row(fig["title"], _fmt_value(fig), f"≤ {fig['target']:g} {fig['unit']}".strip(),
                      _fmt_result(fig), fig.get("error") or fig["measured"])
    return table


def _fmt_value(fig: dict[str, Any]) -> str:
    value = fig.get("value")
    if value is None:
        return "—"
    return f"{value:.0f} MB" if fig["unit"] == "MB" else f"{value:.3f}"


def _fmt_result(fig: dict[str, Any], rich_markup: bool = True) -> str:
    passed = fig.get("passed")
    text = "PASS" if passed else ("ERROR" if passed is None else "FAIL")
    if not rich_markup:
        return text
    return {"PASS": "[green]PASS[/green]", "FAIL": "[red]FAIL[/red]"}.get(text, "[yellow]ERROR[/yellow]")


def markdown(payload: dict[str, Any]) -> str:
    m = payload["machine"]
    lines = [f"Measured {payload['started_at'][:16].replace('T', ' ')} UTC on {m['nproc']} cores "
             f"({m['cpu_model']}), {m['mem_total_gib']} GiB, {m['os']}, Python {m['python']}, "
             f"ansible-core {m['ansible-core']}, ansible-runner {m['ansible-runner']}; "
             f"load average {m['loadavg_at_start'][0]} at start; {payload['mode']} mode, "
             f"medians of {payload['rounds']} alternated runs.",
             "", "| Figure | Value | Target | Result | Measured |", "|---|---|---|---|---|"]
    for fig in sorted(payload["figures"], key=lambda f: str(f["title"])):
        lines.append(f"| {fig['title']} | {_fmt_value(fig)} | ≤ {fig['target']:g} {fig['unit']} | "
                     f"{_fmt_result(fig, rich_markup=False)} | {fig.get('error') or fig['measured']} |")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 rounds, one cold run, 2 fleet rounds")
    p.add_argument("--only", type=lambda s: [x for x in s.split(",") if x], default=[],
                   help=f"comma-separated subset of: {', '.join(BENCHES)}")
    p.add_argument("--repeat", type=int, help="rounds per A/B comparison (default 5, --quick 3)")
    p.add_argument("--lock", default=os.environ.get("TFLAB_BENCH_LOCK", "/tmp/tflab-heavy.lock"),
                   help="flock file taken around each benchmark ('' for none)")
    p.add_argument("--fleet-playbook", default="bench/playbooks/noop.yml",
                   help="fleet workload: the no-op playbook (default) or site.yml (converged first; slow)")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument("--keep-sandbox", action="store_true", help="leave the sandbox hosts running (debugging)")
    p.add_argument("--show", nargs="?", const=str(BENCH / "results" / "latest.json"), metavar="FILE",
                   help="print a stored result instead of running")
    p.add_argument("--markdown", action="store_true", help="with --show: a Markdown table for the README")
    args = p.parse_args(argv)
    unknown = set(args.only) - set(BENCHES)
    if unknown:
        p.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(BENCHES)}")
    return args


def compile_package() -> None:
    """Byte-compile tflab_provision, as a wheel install has it. These machines set
    PYTHONDONTWRITEBYTECODE=1, so the checkout's editable install would compile tflab's modules
    on every start (about 0.05 s), while pip compiled Ansible's once."""
    compileall.compile_dir(ROOT / "tflab_provision", quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Console(width=None if sys.stdout.isatty() else 160)
    if args.show:
        stored = json.loads(Path(args.show).read_text())
        if args.markdown:
            print(markdown(stored))
        else:
            out.print(render(stored))
        return 0

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    compile_package()
    selected = [name for name in BENCHES if not args.only or name in args.only]
    rounds = args.repeat or (3 if args.quick else 5)
    started = datetime.now(timezone.utc)
    state = Path(tempfile.mkdtemp(prefix="tflab-bench-state-"))
    b = Bench(args=args, state=state, rounds=rounds, lock=args.lock or None)
    figures: list[Figure] = []
    payload: dict[str, Any] = {
        "schema": 1, "started_at": started.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full", "rounds": rounds, "selected": selected,
        "machine": machine_info(), "project": project_info(ROOT), "figures": [], "lock_wait_s": {},
    }
    interrupted = False
    try:
        count = hosts_needed(selected, args.quick)
        if count:
            b.sandbox_up(count)
        for name in selected:
            with heavy_lock(b.lock, name) as waited:
                payload["lock_wait_s"][name] = round(waited, 1)
                began = time.monotonic()
                try:
                    figures += RUNNERS[name](b)
                except BenchError as exc:
                    say(f"[red]{name} failed[/red]: {exc}")
                    figures.append(Figure(name, name, None, 0, error=str(exc)[:500]).judge())
                say(f"{name} done in {time.monotonic() - began:.0f} s")
    except KeyboardInterrupt:
        interrupted = True
        say("[yellow]interrupted[/yellow]: removing the sandbox, writing what was measured")
    finally:
        if b.inventory and not args.keep_sandbox:
            b.sandbox_down()
        if not args.keep_sandbox:
            shutil.rmtree(state, ignore_errors=True)

    finished = datetime.now(timezone.utc)
    payload["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    payload |= {"finished_at": finished.isoformat(timespec="seconds"),
                "duration_s": round((finished - started).total_seconds(), 1),
                "interrupted": interrupted, "figures": [f.to_json() for f in figures]}
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path, latest = write_results(args.results_dir, payload, stamp)
    out.print(render(payload))
    say(f"results: {path} (and {latest.name})")
    if interrupted:
        return 130
    return 0 if figures and all(f.passed for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
