"""Cost of tflab-node-metrics against the number of workspaces (issue 14: it must not grow faster).

    .venv/bin/python bench/collector.py [--rounds 15] [--sizes 1,8,32,128] [--json FILE]

For each N a fake host is built in a temporary directory: N workspace containers in the docker
double's fixture (tests/doubles/docker, which answers ps / inspect / info like the docker CLI),
each with a cgroup tree (half cgroup v2, half v1 cgroupfs, as real hosts and the sandbox hosts
have them), 4 GPUs from the nvidia-smi double with a quarter of the workspaces holding one, and a
data-size cache. Two figures per N, medians of --rounds runs, the sizes alternated (ascending,
then descending, ...) so drift in a shared machine's load hits every size alike:

* `process`: the collector as the timer runs it (a fresh python3, its docker/nvidia-smi/dpkg-query
  calls to the doubles, the file written), wall time;
* `collect`: the collection inside one process (no interpreter start), which shows the
  per-workspace part alone.

Printed: time per run, per workspace, and T(Nmax)/T(1) beside Nmax (linear growth would be equal
to it). The doubles cost about what the real CLIs do to start, not what a real dockerd does to
answer; the figure is the collector's own scaling. Nothing is asserted: this reports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR = ROOT / "roles" / "node_metrics" / "files" / "tflab_node_metrics.py"
DOUBLES = ROOT / "tests" / "doubles"
GPUS = 4


def build_host(root: Path, count: int) -> tuple[Path, dict[str, str]]:
    """A fake host with `count` workspaces; returns the collector's config file and the env."""
    proc, cgroup, bin_dir = root / "proc", root / "cgroup", root / "bin"
    for directory in (proc, cgroup, bin_dir, root / "textfile", root / "state", root / "sys"):
        directory.mkdir(parents=True)
    (proc / "stat").write_text(f"btime {int(time.time()) - 3600}\n")
    (cgroup / "cgroup.controllers").write_text("cpu memory pids\n")
    for name in ("docker", "nvidia-smi", "dpkg-query"):
        (bin_dir / name).symlink_to(DOUBLES / name)
    containers: list[dict[str, Any]] = []
    sizes: dict[str, Any] = {}
    for index in range(count):
        name, pid, cid = f"user{index:03d}", 10000 + index, f"{index:064x}"
        gpu = index % GPUS if index % 4 == 0 else None
        containers.append({
            "Id": cid, "Name": f"/tflab-ws-{name}",
            "Config": {"Labels": {"io.tflab.managed-by": "tflab-provision", "io.tflab.workspace": name,
                                  "io.tflab.owner": name, "io.tflab.owner-uid": str(2000 + index)},
                       "Env": ["TFLAB_USER=" + name]},
            "State": {"Running": True, "Pid": pid, "Health": {"Status": "healthy"}},
            "HostConfig": {"Memory": 4 << 30, "NanoCpus": 2_000_000_000, "PidsLimit": 512,
                           "DeviceRequests": None if gpu is None else [
                               {"Driver": "nvidia", "DeviceIDs": [str(gpu)], "Capabilities": [["gpu"]]}]},
            "Mounts": [],
        })
        (proc / str(pid)).mkdir()
        if index % 2 == 0:
            path = f"system.slice/docker-{cid}.scope"
            (proc / str(pid) / "cgroup").write_text(f"0::/{path}\n")
            directory = cgroup / path
            directory.mkdir(parents=True)
            for file_name, content in {"memory.current": "314572800", "memory.max": str(4 << 30),
                                       "memory.stat": "anon 1\nfile 2\ninactive_file 52428800\n",
                                       "cpu.stat": "usage_usec 12500000\nuser_usec 1\n",
                                       "cpu.max": "200000 100000", "pids.current": "7",
                                       "pids.max": "512"}.items():
                (directory / file_name).write_text(content + "\n")
        else:
            (proc / str(pid) / "cgroup").write_text(
                f"8:pids:/docker/{cid}\n4:memory:/docker/{cid}\n2:cpu,cpuacct:/docker/{cid}\n")
            for tree, files in {"memory": {"memory.usage_in_bytes": "314572800",
                                           "memory.limit_in_bytes": str(4 << 30),
                                           "memory.stat": "total_inactive_file 52428800"},
                                "cpu,cpuacct": {"cpuacct.usage": "12500000000", "cpu.cfs_quota_us": "200000",
                                                "cpu.cfs_period_us": "100000"},
                                "pids": {"pids.current": "7", "pids.max": "512"}}.items():
                directory = cgroup / tree / "docker" / cid
                directory.mkdir(parents=True)
                for file_name, content in files.items():
                    (directory / file_name).write_text(content + "\n")
        sizes[name] = {"bytes": 1 << 30, "measured": time.time()}
    (root / "state" / "data-sizes.json").write_text(json.dumps({"workspaces": sizes}))
    (root / "docker.json").write_text(json.dumps({"containers": containers, "runtime": "runc"}))
    (root / "gpus.json").write_text(json.dumps([
        {"index": str(i), "uuid": f"GPU-{i:08d}-0000-0000-0000-000000000000", "name": "NVIDIA A100",
         "utilization.gpu": "50", "memory.used": "1024", "memory.total": "40960"} for i in range(GPUS)]))
    (root / "dpkg.json").write_text(json.dumps(
        [{"package": "nvidia-kernel-dkms", "version": "535.183.01-1", "status": "ii"}]))
    config = {"textfile_dir": str(root / "textfile"), "state_dir": str(root / "state"),
              "data_root": str(root / "data"), "cgroup_root": str(cgroup), "proc_root": str(proc),
              "sys_root": str(root / "sys"), "path": f"{bin_dir}:/usr/bin:/bin",
              "docker": str(bin_dir / "docker"), "nvidia_smi": str(bin_dir / "nvidia-smi"),
              "dpkg_query": str(bin_dir / "dpkg-query"), "firewall_script": str(root / "none"),
              "reboot_required_file": str(root / "none"), "nvidia_driver_state_file": str(root / "none"),
              "dpkg_info_dir": str(root / "none")}
    config_file = root / "node-metrics.json"
    config_file.write_text(json.dumps(config))
    env = {**os.environ, "TFLAB_DOCKER_DOUBLE_FIXTURE": str(root / "docker.json"),
           "TFLAB_NVIDIA_SMI_DOUBLE_FIXTURE": str(root / "gpus.json"),
           "TFLAB_DPKG_DOUBLE_FIXTURE": str(root / "dpkg.json")}
    env.pop("TFLAB_DOUBLE_LOG", None)
    return config_file, env


def time_process(config_file: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(COLLECTOR), "--config", str(config_file)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def time_collect(module: Any, config_file: Path, env: dict[str, str]) -> tuple[float, int]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        config = module.load_config(str(config_file))
        started = time.perf_counter()
        text = module.collect(config, module.Runner(config)).render()
        elapsed = time.perf_counter() - started
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return elapsed, sum(1 for line in text.splitlines() if line.startswith("tflab_workspace_info{"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sizes", default="1,8,32,128")
    parser.add_argument("--json", type=Path, help="also write the samples here")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from pathload import load_module

    module = load_module("tflab_node_metrics", COLLECTOR)
    samples: dict[int, dict[str, list[float]]] = {n: {"process": [], "collect": []} for n in sizes}
    with tempfile.TemporaryDirectory(prefix="tflab-bench-collector-") as tmp:
        hosts = {n: build_host(Path(tmp) / f"n{n}", n) for n in sizes}
        for n, (config_file, env) in hosts.items():  # untimed warm-up (page cache, the doubles' .pyc)
            time_process(config_file, env)
            _elapsed, found = time_collect(module, config_file, env)
            if found != n:
                raise SystemExit(f"the collector found {found} workspaces of {n}: the bench is broken")
        for round_number in range(args.rounds):
            order = sizes if round_number % 2 == 0 else list(reversed(sizes))
            for n in order:
                config_file, env = hosts[n]
                samples[n]["process"].append(time_process(config_file, env))
                samples[n]["collect"].append(time_collect(module, config_file, env)[0])
    medians = {n: {kind: statistics.median(values) for kind, values in figures.items()}
               for n, figures in samples.items()}
    print(f"tflab-node-metrics, medians of {args.rounds} rounds (sizes alternated), {os.cpu_count()} CPUs")
    print(f"{'workspaces':>10} {'process ms':>11} {'ms/ws':>8} {'collect ms':>11} {'ms/ws':>8}")
    for n in sizes:
        proc_ms, coll_ms = medians[n]["process"] * 1e3, medians[n]["collect"] * 1e3
        print(f"{n:>10} {proc_ms:>11.1f} {proc_ms / n:>8.2f} {coll_ms:>11.1f} {coll_ms / n:>8.3f}")
    low, high = sizes[0], sizes[-1]
    for kind in ("process", "collect"):
        growth = medians[high][kind] / medians[low][kind]
        marginal = (medians[high][kind] - medians[low][kind]) / (high - low) * 1e3
        verdict = "no faster than linear" if growth <= high / low else "FASTER THAN LINEAR"
        print(f"{kind}: T({high})/T({low}) = {growth:.2f} (linear: {high / low:.0f}) -> {verdict}; "
              f"{marginal:.3f} ms per extra workspace")
    if args.json:
        args.json.write_text(json.dumps({"rounds": args.rounds, "samples": samples, "medians": medians},
                                        indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
