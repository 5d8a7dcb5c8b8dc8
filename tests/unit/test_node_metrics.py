"""tflab-node-metrics (roles/node_metrics/files/tflab_node_metrics.py) against fake hosts.

Each test builds a fake host in tmp_path: /proc/<pid>/cgroup and cgroup trees in the cgroup v1
(cgroupfs, what this test bed's sandbox hosts run) and v2 (Debian 12 / Ubuntu 22.04+) layouts,
and points the collector at the doubles in tests/doubles (docker, nvidia-smi, dpkg-query). The
output is parsed by the text-format rules below, never compared as a whole string only.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from pathload import REPO, load_module

nm = load_module("tflab_node_metrics", REPO / "roles" / "node_metrics" / "files" / "tflab_node_metrics.py")
DOUBLES = REPO / "tests" / "doubles"
SECRET = "s3cr3t-token-0123456789abcdef0123456789"
GIB = 1024**3

# --- a small parser of the Prometheus text format (0.0.4) --------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf"^({NAME})(?:\{{(.*)\}})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], value)


def parse(text: str) -> dict[str, Any]:
    """{"types": {family: type}, "help": {...}, "samples": [(name, labels, value)]}; asserts the rules."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _sp, help_text = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and name not in helps, line
            helps[name] = help_text
            current = name
        elif line.startswith("# TYPE "):
            name, _sp, kind = line[7:].partition(" ")
            assert name == current and kind in ("gauge", "counter") and name not in types, line
            types[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, body, value = match.groups()
            assert name == current and name in types, f"sample outside its family: {line!r}"
            labels: dict[str, str] = {}
            rest = body or ""
            while rest:
                label = LABEL.match(rest)
                assert label, f"bad labels in {line!r}"
                assert label.group(1) not in labels
                labels[label.group(1)] = unescape(label.group(2))
                rest = rest[label.end():]
            key = (name, tuple(sorted(labels.items())))
            assert key not in seen, f"duplicate series {line!r}"
            seen.add(key)
            samples.append((name, labels, float(value)))
    return {"types": types, "help": helps, "samples": samples}


def series(parsed: dict[str, Any], metric: str, /, **labels: str) -> list[tuple[dict[str, str], float]]:
    return [(lab, val) for n, lab, val in parsed["samples"]
            if n == metric and all(lab.get(k) == v for k, v in labels.items())]


def value(parsed: dict[str, Any], metric: str, /, **labels: str) -> float:
    found = series(parsed, metric, **labels)
    assert len(found) == 1, f"{metric}{labels}: {found}"
    return found[0][1]


# --- the fake host ------------------------------------------------------------------------------

class FakeHost:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.proc = root / "proc"
        self.cgroup = root / "cgroup"
        self.textfile = root / "textfile"
        self.state = root / "state"
        self.data = root / "data"
        self.bin = root / "bin"
        for directory in (self.proc, self.cgroup, self.textfile, self.state, self.data, self.bin,
                          root / "sys" / "module", root / "dpkg-info"):
            directory.mkdir(parents=True, exist_ok=True)
        self.booted = int(time.time()) - 3600
        (self.proc / "stat").write_text(f"cpu  1 2 3 4\nbtime {self.booted}\nprocesses 10\n")
        self.containers: list[dict[str, Any]] = []
        self.gpus: list[dict[str, str]] | None = None
        self.packages: list[dict[str, str]] = []
        self.runtime = "runc"
        self.docker_fail: dict[str, int] = {}
        self.log = root / "calls.log"
        self.config: dict[str, Any] = {
            "textfile_dir": str(self.textfile), "state_dir": str(self.state), "data_root": str(self.data),
            "cgroup_root": str(self.cgroup), "proc_root": str(self.proc), "sys_root": str(root / "sys"),
            "path": f"{self.bin}:/usr/bin:/bin", "firewall_script": str(root / "tflab-firewall"),
            "reboot_required_file": str(root / "reboot-required"),
            "nvidia_driver_state_file": str(root / "nvidia_driver.fact"),
            "dpkg_info_dir": str(root / "dpkg-info"),
            # Absolute paths: the tests never reach a real docker or nvidia-smi on this machine.
            "docker": str(self.bin / "docker"), "nvidia_smi": str(self.bin / "nvidia-smi"),
            "dpkg_query": str(self.bin / "dpkg-query"),
        }
        for name in ("docker", "dpkg-query"):
            (self.bin / name).symlink_to(DOUBLES / name)
        monkeypatch.setenv("TFLAB_DOCKER_DOUBLE_FIXTURE", str(root / "docker.json"))
        monkeypatch.setenv("TFLAB_NVIDIA_SMI_DOUBLE_FIXTURE", str(root / "gpus.json"))
        monkeypatch.setenv("TFLAB_DPKG_DOUBLE_FIXTURE", str(root / "dpkg.json"))
        monkeypatch.setenv("TFLAB_DOUBLE_LOG", str(self.log))

    def with_gpus(self, gpus: list[dict[str, str]]) -> None:
        self.gpus = gpus
        (self.bin / "nvidia-smi").symlink_to(DOUBLES / "nvidia-smi")

    def firewall(self, rc: int) -> None:
        script = self.root / "tflab-firewall"
        script.write_text(f'#!/bin/sh\n[ "$1" = check ] || exit 64\nexit {rc}\n')
        script.chmod(0o755)

    def workspace(self, name: str, *, uid: int = 2001, layout: str = "v2", running: bool = True,
                  health: str = "healthy", memory: int = 300 * 1024**2, inactive: int = 50 * 1024**2,
                  mem_limit: int = 4 * GIB, cpu_usec: int = 12_500_000, quota: int | None = 150_000,
                  pids: int = 7, pids_max: int | None = 512, device_requests: list[Any] | None = None,
                  mounts: list[Any] | None = None, labels: dict[str, str] | None = None,
                  env: list[str] | None = None) -> dict[str, Any]:
        pid = 1000 + len(self.containers)
        cid = f"{len(self.containers):02d}" + "ab" * 31
        item = {
            "Id": cid, "Name": f"/tflab-ws-{name}",
            "Config": {"Labels": {"io.tflab.managed-by": "tflab-provision", "io.tflab.workspace": name,
                                  "io.tflab.owner": name, "io.tflab.owner-uid": str(uid), **(labels or {})},
                       "Env": env or [], "Cmd": ["/usr/local/bin/start", f"--token={SECRET}"]},
            "State": {"Running": running, "Pid": pid if running else 0,
                      "Health": {"Status": health, "Log": [{"Output": SECRET}]}},
            "HostConfig": {"Memory": mem_limit, "NanoCpus": 1_500_000_000, "PidsLimit": pids_max or 0,
                           "DeviceRequests": device_requests},
            "Mounts": mounts or [],
        }
        self.containers.append(item)
        if running:
            self.cgroup_tree(pid, cid, layout, memory=memory, inactive=inactive, mem_limit=mem_limit,
                             cpu_usec=cpu_usec, quota=quota, pids=pids, pids_max=pids_max)
        return item

    def cgroup_tree(self, pid: int, cid: str, layout: str, *, memory: int, inactive: int, mem_limit: int,
                    cpu_usec: int, quota: int | None, pids: int, pids_max: int | None) -> None:
        (self.proc / str(pid)).mkdir()
        if layout == "v2":
            # systemd driver, as Docker on Debian 12 / Ubuntu 24.04 sets it up.
            (self.cgroup / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
            path = f"system.slice/docker-{cid}.scope"
            (self.proc / str(pid) / "cgroup").write_text(f"0::/{path}\n")
            directory = self.cgroup / path
            directory.mkdir(parents=True)
            files = {
                "memory.current": str(memory), "memory.max": str(mem_limit) if mem_limit else "max",
                "memory.stat": f"anon 1234\nfile 99999\nactive_file 1\ninactive_file {inactive}\n",
                "cpu.stat": f"usage_usec {cpu_usec}\nuser_usec 1\nsystem_usec 2\n",
                "cpu.max": f"{quota if quota else 'max'} 100000",
                "pids.current": str(pids), "pids.max": str(pids_max) if pids_max else "max",
            }
            for file_name, content in files.items():
                (directory / file_name).write_text(content + "\n")
        else:
            # cgroupfs driver on cgroup v1 (this test bed's sandbox hosts): one tree per hierarchy.
            lines = [f"12:pids:/docker/{cid}", f"11:memory:/docker/{cid}", f"4:cpu,cpuacct:/docker/{cid}",
                     f"1:name=systemd:/docker/{cid}", "0::/"]
            (self.proc / str(pid) / "cgroup").write_text("\n".join(lines) + "\n")
            no_limit = 9223372036854771712
            trees = {
                "memory": {"memory.usage_in_bytes": memory, "memory.limit_in_bytes": mem_limit or no_limit,
                           "memory.stat": f"cache 5\nrss 6\ninactive_file {inactive}\n"
                                          f"total_inactive_file {inactive}\n"},
                "cpu,cpuacct": {"cpuacct.usage": cpu_usec * 1000, "cpu.cfs_quota_us": quota or -1,
                                "cpu.cfs_period_us": 100000},
                "pids": {"pids.current": pids, "pids.max": pids_max or "max"},
            }
            for tree, files_v1 in trees.items():
                directory = self.cgroup / tree / "docker" / cid
                directory.mkdir(parents=True)
                for file_name, content in files_v1.items():
                    (directory / file_name).write_text(f"{content}\n")

    def collect(self) -> dict[str, Any]:
        text = self.collect_text()
        return parse(text)

    def collect_text(self) -> str:
        (self.root / "docker.json").write_text(json.dumps(
            {"containers": self.containers, "runtime": self.runtime, "fail": self.docker_fail}))
        (self.root / "gpus.json").write_text(json.dumps(self.gpus or []))
        (self.root / "dpkg.json").write_text(json.dumps(self.packages))
        config_file = self.root / "node-metrics.json"
        config_file.write_text(json.dumps(self.config))
        assert nm.main(["--config", str(config_file)]) == 0
        return (self.textfile / "tflab.prom").read_text()

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    return FakeHost(tmp_path, monkeypatch)


GPU0 = {"index": "0", "uuid": "GPU-11111111-2222-3333-4444-555555555555", "name": "NVIDIA A100-SXM4-40GB",
        "utilization.gpu": "37", "memory.used": "1024", "memory.total": "40960"}
GPU1 = {"index": "1", "uuid": "GPU-66666666-7777-8888-9999-000000000000", "name": "NVIDIA A100-SXM4-40GB",
        "utilization.gpu": "0", "memory.used": "0", "memory.total": "40960"}


# --- per-workspace figures ----------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["v2", "v1"])
def test_workspace_figures_from_the_cgroup(host: FakeHost, layout: str) -> None:
    host.workspace("alice", uid=2001, layout=layout, memory=300 * 1024**2, inactive=50 * 1024**2,
                   mem_limit=4 * GIB, cpu_usec=12_500_000, quota=150_000, pids=7, pids_max=512)
    host.workspace("bob", uid=2002, layout=layout, memory=100 * 1024**2, inactive=0, mem_limit=0,
                   cpu_usec=1_000_000, quota=None, pids=3, pids_max=None, health="unhealthy")
    out = host.collect()
    alice = {"workspace": "alice", "user": "alice"}
    assert value(out, "tflab_workspace_info", uid="2001", container="tflab-ws-alice", **alice) == 1
    assert value(out, "tflab_workspace_up", **alice) == 1
    assert value(out, "tflab_workspace_healthy", **alice) == 1
    assert value(out, "tflab_workspace_healthy", workspace="bob") == 0
    assert value(out, "tflab_workspace_memory_bytes", **alice) == 250 * 1024**2
    assert value(out, "tflab_workspace_memory_limit_bytes", **alice) == 4 * GIB
    assert value(out, "tflab_workspace_cpu_seconds_total", **alice) == 12.5
    assert value(out, "tflab_workspace_cpu_limit_cores", **alice) == 1.5
    assert value(out, "tflab_workspace_pids", **alice) == 7
    assert value(out, "tflab_workspace_pids_limit", **alice) == 512
    # No limit reads as 0 (cgroup v2 "max", v1's PAGE_COUNTER_MAX and a -1 quota).
    assert value(out, "tflab_workspace_memory_limit_bytes", workspace="bob") == 0
    assert value(out, "tflab_workspace_cpu_limit_cores", workspace="bob") == 0
    assert value(out, "tflab_workspace_pids_limit", workspace="bob") == 0
    assert value(out, "tflab_workspace_memory_bytes", workspace="bob") == 100 * 1024**2
    assert out["types"]["tflab_workspace_cpu_seconds_total"] == "counter"
    assert value(out, "tflab_collector_workspaces") == 2
    assert all(val == 0 for _lab, val in series(out, "tflab_collector_errors"))
    # Every per-workspace series carries workspace and user.
    for name, labels, _val in out["samples"]:
        if name.startswith("tflab_workspace_"):
            assert labels["workspace"] in ("alice", "bob") and labels["user"] in ("alice", "bob"), name


def test_a_stopped_workspace_is_down_with_its_configured_limits(host: FakeHost) -> None:
    host.workspace("carol", running=False, health="", mem_limit=2 * GIB, pids_max=256)
    out = host.collect()
    assert value(out, "tflab_workspace_up", workspace="carol") == 0
    assert value(out, "tflab_workspace_healthy", workspace="carol") == 0
    assert value(out, "tflab_workspace_memory_limit_bytes", workspace="carol") == 2 * GIB
    assert value(out, "tflab_workspace_cpu_limit_cores", workspace="carol") == 1.5
    assert value(out, "tflab_workspace_pids_limit", workspace="carol") == 256
    assert series(out, "tflab_workspace_memory_bytes") == []
    assert value(out, "tflab_collector_errors", source="cgroup") == 0


def test_a_vanished_cgroup_counts_an_error_and_keeps_the_rest(host: FakeHost) -> None:
    gone = host.workspace("dave")
    host.workspace("erin")
    (host.proc / str(gone["State"]["Pid"]) / "cgroup").unlink()
    out = host.collect()
    assert value(out, "tflab_collector_errors", source="cgroup") == 1
    assert series(out, "tflab_workspace_memory_bytes", workspace="dave") == []
    assert value(out, "tflab_workspace_up", workspace="dave") == 1
    assert value(out, "tflab_workspace_memory_bytes", workspace="erin") > 0


def test_label_values_are_escaped_and_no_secret_appears(host: FakeHost) -> None:
    odd = 'we"ird\\name\nx'
    host.workspace("frank", labels={"io.tflab.owner": odd, "com.example.secret": SECRET},
                   env=[f"JUPYTER_TOKEN={SECRET}", f"AWS_SECRET_ACCESS_KEY={SECRET}"])
    text = host.collect_text()
    assert 'user="we\\"ird\\\\name\\nx"' in text
    out = parse(text)
    assert value(out, "tflab_workspace_up", workspace="frank", user=odd) == 1
    assert SECRET not in text
    assert "JUPYTER_TOKEN" not in text and "com.example" not in text


def test_workspaces_are_read_with_three_docker_calls_whatever_their_number(host: FakeHost) -> None:
    for index in range(6):
        host.workspace(f"user{index}", uid=2000 + index, layout="v1" if index % 2 else "v2")
    out = host.collect()
    docker_calls = [call[1] for call in host.calls() if call[0] == "docker"]
    assert docker_calls == ["ps", "inspect", "info"]
    assert value(out, "tflab_collector_workspaces") == 6
    assert value(out, "tflab_node_docker_default_runtime_info", runtime="runc") == 1


def test_without_docker_there_are_no_workspaces_and_a_docker_error(host: FakeHost) -> None:
    (host.bin / "docker").unlink()
    out = host.collect()
    assert value(out, "tflab_collector_workspaces") == 0
    assert value(out, "tflab_collector_errors", source="docker") == 1
    assert value(out, "tflab_collector_errors", source="runtime") == 1
    assert series(out, "tflab_workspace_info") == []
    assert series(out, "tflab_node_docker_default_runtime_info") == []
    # The other sources still report.
    assert value(out, "tflab_node_reboot_pending") == 0
    assert value(out, "tflab_collector_last_success_timestamp_seconds") == pytest.approx(time.time(), abs=60)


def test_a_failing_docker_daemon_counts_an_error(host: FakeHost) -> None:
    host.workspace("gina")
    host.docker_fail = {"ps": 1, "info": 1}
    out = host.collect()
    assert value(out, "tflab_collector_errors", source="docker") == 1
    assert series(out, "tflab_workspace_up") == []


def test_the_nvidia_toolkit_runtime_is_reported(host: FakeHost) -> None:
    host.runtime = "nvidia"
    out = host.collect()
    assert value(out, "tflab_node_docker_default_runtime_info", runtime="nvidia") == 1


# --- GPUs ---------------------------------------------------------------------------------------

def test_gpu_figures_and_the_gpu_to_workspace_mapping(host: FakeHost) -> None:
    host.with_gpus([GPU0, GPU1])
    # As tf_workspace assigns them: device_requests with indices, plus the device-list mounts.
    host.workspace("alice", device_requests=[{"Driver": "nvidia", "Count": 0, "DeviceIDs": ["1"],
                                              "Capabilities": [["gpu"]], "Options": {}}],
                   mounts=[{"Type": "bind", "Source": "/dev/null",
                            "Destination": "/var/run/nvidia-container-devices/1"}],
                   env=["NVIDIA_VISIBLE_DEVICES=all"])
    host.workspace("bob", uid=2002, env=["NVIDIA_VISIBLE_DEVICES=all"])  # a GPU image, no GPU given
    out = host.collect()
    assert value(out, "tflab_gpu_info", gpu="1", uuid=GPU1["uuid"], name=GPU1["name"], workspace="alice") == 1
    assert value(out, "tflab_gpu_info", gpu="0", uuid=GPU0["uuid"], workspace="") == 1
    assert value(out, "tflab_workspace_gpu_info", workspace="alice", user="alice", gpu="1",
                 uuid=GPU1["uuid"]) == 1
    assert series(out, "tflab_workspace_gpu_info", workspace="bob") == []
    assert value(out, "tflab_gpu_utilization_ratio", gpu="0", workspace="") == pytest.approx(0.37)
    assert value(out, "tflab_gpu_memory_used_bytes", gpu="0") == 1024 * 1024**2
    assert value(out, "tflab_gpu_memory_total_bytes", gpu="1", workspace="alice") == 40960 * 1024**2
    assert value(out, "tflab_collector_errors", source="gpu") == 0
    smi_calls = [call for call in host.calls() if call[0] == "nvidia-smi"]
    assert smi_calls == [["nvidia-smi", nm.GPU_QUERY, "--format=csv,noheader,nounits"]]


def test_all_gpus_by_count_and_by_uuid_and_shared_gpus(host: FakeHost) -> None:
    host.with_gpus([GPU0, GPU1])
    # `docker run --gpus all` / `--gpus 1` record no driver, only the capability (Docker 20.10).
    host.workspace("alice", device_requests=[{"Driver": "", "Count": -1, "DeviceIDs": None,
                                              "Capabilities": [["gpu"]]}])
    host.workspace("carol", uid=2003, device_requests=[{"Driver": "", "Count": 1, "DeviceIDs": None,
                                                        "Capabilities": [["gpu"]]}])
    host.workspace("bob", uid=2002,
                   mounts=[{"Destination": f"/var/run/nvidia-container-devices/{GPU0['uuid']}"}])
    out = host.collect()
    alice_gpus = {lab["gpu"] for lab, _v in series(out, "tflab_workspace_gpu_info", workspace="alice")}
    assert alice_gpus == {"0", "1"}
    assert value(out, "tflab_workspace_gpu_info", workspace="bob", gpu="0", uuid=GPU0["uuid"]) == 1
    assert value(out, "tflab_workspace_gpu_info", workspace="carol", gpu="0", uuid=GPU0["uuid"]) == 1
    assert value(out, "tflab_gpu_info", gpu="0", workspace="alice,bob,carol") == 1
    assert value(out, "tflab_gpu_info", gpu="1", workspace="alice") == 1


def test_unsupported_gpu_fields_are_left_out(host: FakeHost) -> None:
    host.with_gpus([{**GPU0, "utilization.gpu": "[N/A]", "memory.used": "[Not Supported]"}])
    out = host.collect()
    assert value(out, "tflab_gpu_memory_total_bytes", gpu="0") == 40960 * 1024**2
    assert series(out, "tflab_gpu_utilization_ratio") == []
    assert series(out, "tflab_gpu_memory_used_bytes") == []
    assert value(out, "tflab_collector_errors", source="gpu") == 0


def test_no_nvidia_smi_means_no_gpu_series_and_no_error(host: FakeHost) -> None:
    host.workspace("alice",
                   device_requests=[{"Driver": "nvidia", "DeviceIDs": ["0"], "Capabilities": [["gpu"]]}])
    out = host.collect()
    assert series(out, "tflab_gpu_info") == []
    assert value(out, "tflab_collector_errors", source="gpu") == 0
    # The assignment is still known from Docker's records, without a UUID.
    assert value(out, "tflab_workspace_gpu_info", workspace="alice", gpu="0", uuid="") == 1


def test_a_failing_nvidia_smi_counts_an_error_and_keeps_the_rest(host: FakeHost,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    host.with_gpus([GPU0])
    monkeypatch.setenv("TFLAB_NVIDIA_SMI_DOUBLE_RC", "18")
    host.workspace("alice")
    out = host.collect()
    assert value(out, "tflab_collector_errors", source="gpu") == 1
    assert series(out, "tflab_gpu_info") == []
    assert value(out, "tflab_workspace_up", workspace="alice") == 1


def test_gpu_metrics_can_be_switched_off(host: FakeHost) -> None:
    host.with_gpus([GPU0])
    host.config["gpu_metrics"] = False
    out = host.collect()
    assert series(out, "tflab_gpu_info") == []
    assert not [call for call in host.calls() if call[0] == "nvidia-smi"]


def test_the_nvidia_smi_double_prints_like_nvidia_smi(host: FakeHost, tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "gpus.json").write_text(json.dumps([GPU0]))
    env = {**os.environ, "TFLAB_NVIDIA_SMI_DOUBLE_FIXTURE": str(tmp_path / "gpus.json")}
    smi = str(DOUBLES / "nvidia-smi")
    full = subprocess.run([smi, "--query-gpu=index,utilization.gpu,memory.used", "--format=csv"],
                          capture_output=True, text=True, env=env, check=True).stdout
    assert full == "index, utilization.gpu [%], memory.used [MiB]\n0, 37 %, 1024 MiB\n"
    bad = subprocess.run([smi, "--query-gpu=index,bogus", "--format=csv"], capture_output=True, text=True,
                         env=env, check=False)
    assert bad.returncode == 2 and 'Field "bogus" is not a valid field to query.' in bad.stdout


# --- node facts ---------------------------------------------------------------------------------

def test_driver_versions_and_mismatch(host: FakeHost) -> None:
    host.packages = [{"package": "nvidia-kernel-dkms", "version": "535.183.01-1~deb12u1", "status": "ii"},
                     {"package": "nvidia-dkms-550", "version": "550.1-0", "status": "rc"}]
    (host.root / "sys" / "module" / "nvidia").mkdir()
    (host.root / "sys" / "module" / "nvidia" / "version").write_text("535.161.07\n")
    listing = host.root / "dpkg-info" / "nvidia-kernel-dkms.list"
    listing.write_text("/.\n")
    os.utime(listing, (host.booted + 600, host.booted + 600))
    out = host.collect()
    assert value(out, "tflab_node_driver_info", installed="535.183.01", loaded="535.161.07") == 1
    assert value(out, "tflab_node_driver_mismatch") == 1
    assert value(out, "tflab_node_reboot_pending") == 1
    assert value(out, "tflab_node_reboot_pending_reason", reason="driver-mismatch") == 1
    assert value(out, "tflab_node_reboot_pending_since_timestamp_seconds") == host.booted + 600


def test_proc_driver_version_wins_and_equal_versions_match(host: FakeHost) -> None:
    host.packages = [{"package": "nvidia-kernel-dkms", "version": "535.183.01-1~deb12u1", "status": "ii"}]
    (host.proc / "driver" / "nvidia").mkdir(parents=True)
    (host.proc / "driver" / "nvidia" / "version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024\n")
    out = host.collect()
    assert value(out, "tflab_node_driver_info", installed="535.183.01", loaded="535.183.01") == 1
    assert value(out, "tflab_node_driver_mismatch") == 0
    assert value(out, "tflab_node_reboot_pending") == 0


def test_no_driver_reads_none(host: FakeHost) -> None:
    out = host.collect()
    assert value(out, "tflab_node_driver_info", installed="none", loaded="none") == 1
    assert value(out, "tflab_node_driver_mismatch") == 0
    assert value(out, "tflab_collector_errors", source="driver") == 0


def test_reboot_required_and_the_driver_roles_decision(host: FakeHost) -> None:
    required = host.root / "reboot-required"
    required.write_text("*** System restart required ***\n")
    os.utime(required, (host.booted + 100, host.booted + 100))
    fact = host.root / "nvidia_driver.fact"
    fact.write_text(json.dumps({"reboot_needed": True, "message": "x"}))
    os.utime(fact, (host.booted - 50, host.booted - 50))  # decided before this boot: done
    out = host.collect()
    assert value(out, "tflab_node_reboot_pending") == 1
    reasons = [lab["reason"] for lab, _v in series(out, "tflab_node_reboot_pending_reason")]
    assert reasons == ["reboot-required"]
    assert value(out, "tflab_node_reboot_pending_since_timestamp_seconds") == host.booted + 100
    os.utime(fact, (host.booted + 40, host.booted + 40))  # decided since this boot: pending
    out = host.collect()
    reasons = [lab["reason"] for lab, _v in series(out, "tflab_node_reboot_pending_reason")]
    assert reasons == ["nvidia-driver", "reboot-required"]
    assert value(out, "tflab_node_reboot_pending_since_timestamp_seconds") == host.booted + 40


def test_nothing_pending_reads_zero(host: FakeHost) -> None:
    (host.root / "nvidia_driver.fact").write_text(json.dumps({"reboot_needed": False}))
    out = host.collect()
    assert value(out, "tflab_node_reboot_pending") == 0
    assert value(out, "tflab_node_reboot_pending_since_timestamp_seconds") == 0
    assert series(out, "tflab_node_reboot_pending_reason") == []


@pytest.mark.parametrize(("rc", "in_sync", "errors"), [(0, 1, 0), (3, 0, 0), (2, None, 1), (None, 0, 0)])
def test_firewall_in_sync(host: FakeHost, rc: int | None, in_sync: int | None, errors: int) -> None:
    if rc is not None:
        host.firewall(rc)
    out = host.collect()
    if in_sync is None:
        assert series(out, "tflab_node_firewall_in_sync") == []
    else:
        assert value(out, "tflab_node_firewall_in_sync") == in_sync
    assert value(out, "tflab_collector_errors", source="firewall") == errors


# --- data directory sizes -----------------------------------------------------------------------

def test_data_sizes_are_measured_by_du_and_read_from_the_cache(host: FakeHost) -> None:
    host.workspace("alice")
    host.workspace("bob", uid=2002)
    host.workspace("../etc", uid=2003)  # never a path outside the data root
    (host.data / "alice").mkdir()
    (host.data / "alice" / "big").write_bytes(os.urandom(3 * 1024 * 1024))
    (host.data / "bob").mkdir()
    out = host.collect()
    assert series(out, "tflab_workspace_data_bytes") == []  # nothing measured yet
    (host.root / "docker.json").write_text(json.dumps({"containers": host.containers}))
    config_file = host.root / "node-metrics.json"
    before = time.time()
    host.log.unlink()
    assert nm.main(["--config", str(config_file), "--data-sizes"]) == 0
    assert [call[1] for call in host.calls()] == ["ps", "inspect"]  # one du call for all (not logged)
    cache = json.loads((host.state / "data-sizes.json").read_text())
    assert set(cache["workspaces"]) == {"alice", "bob"}
    out = host.collect()
    alice = value(out, "tflab_workspace_data_bytes", workspace="alice", user="alice")
    assert 3 * 1024 * 1024 <= alice < 4 * 1024 * 1024
    assert value(out, "tflab_workspace_data_bytes", workspace="bob") < 64 * 1024
    assert value(out, "tflab_workspace_data_measured_timestamp_seconds", workspace="alice") >= int(before)
    assert "15min" in out["help"]["tflab_workspace_data_bytes"]


def test_a_corrupt_size_cache_counts_an_error(host: FakeHost) -> None:
    host.workspace("alice")
    (host.state / "data-sizes.json").write_text("{not json")
    out = host.collect()
    assert value(out, "tflab_collector_errors", source="data_size") == 1
    assert value(out, "tflab_workspace_up", workspace="alice") == 1


# --- the file itself ----------------------------------------------------------------------------

def test_the_file_is_replaced_atomically_with_mode_0644(host: FakeHost) -> None:
    target = host.textfile / "tflab.prom"
    target.write_text("old\n")
    old_inode = target.stat().st_ino
    host.collect()
    assert target.stat().st_ino != old_inode  # a rename, not a rewrite in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in host.textfile.iterdir()) == ["tflab.prom"]  # no temp file left
    out = parse(target.read_text())
    assert value(out, "tflab_collector_duration_seconds") < 30
    # Families without samples are left out entirely (no HELP without a sample).
    assert set(out["help"]) == set(out["types"]) == {name for name, _l, _v in out["samples"]}


def test_unknown_settings_are_refused(tmp_path: Path) -> None:
    config_file = tmp_path / "bad.json"
    config_file.write_text(json.dumps({"textfile_directory": "/tmp"}))
    with pytest.raises(SystemExit, match=r"unknown setting.*textfile_directory"):
        nm.main(["--config", str(config_file), "--output", "-"])
