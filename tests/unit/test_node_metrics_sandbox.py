"""The node_metrics role converged alone on sandbox hosts (plain ansible-playbook, no Molecule).

tflab-nm-1 is a bare host (no Docker): the collector must report no workspaces and a docker
error, not crash. tflab-nm-2 gets docker.io and two containers labelled as tf_workspace labels
workspaces (plus one that is not a workspace): each workspace's memory figure, scraped from the
real node_exporter, rises by what a process in it allocates and the other's does not. The
integrator's Molecule scenario does the same end to end through Prometheus.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_node_metrics import parse, series, value

from conftest import ROOT, Tflab

pytestmark = [pytest.mark.testbed, pytest.mark.slow]
PREFIX = "tflab-nm"
BARE, DOCKER_HOST = f"{PREFIX}-1", f"{PREFIX}-2"
IMAGE = "tflab/bare-host:debian12"  # the test bed's own image; any image with sleep and tail would do
ENV_SECRET = "nm-env-secret-4f1c2a9b7d"
MIB = 1024 * 1024
ALLOCATE = 200 * MIB


def sh(host: str, script: str, *, check: bool = True, timeout: float = 300) -> str:
    proc = subprocess.run(["docker", "exec", host, "bash", "-c", script], capture_output=True, text=True,
                          check=False, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{host}: {script}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def scrape(host: str) -> str:
    """node_exporter's page, fetched from inside the host (it is not published outside)."""
    fetch = 'print(urllib.request.urlopen("http://127.0.0.1:9100/metrics", timeout=10).read().decode())'
    return sh(host, f"python3 -c 'import urllib.request; {fetch}'")


def tflab_part(page: str) -> dict[str, object]:
    """The tflab_ families of a scrape, parsed by the text-format rules."""
    lines, keep = [], False
    for line in page.splitlines():
        if line.startswith("# HELP "):
            keep = line[7:].startswith("tflab_")
        if keep and line:
            lines.append(line)
    return parse("\n".join(lines) + "\n")


def converge(inventory: Path, tmp: Path) -> str:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(tmp / "facts")}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                           "tests/playbooks/node_metrics.yml"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return proc.stdout


def recap(output: str) -> dict[str, dict[str, int]]:
    found = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, flags=re.M):
        found[host] = {key: int(val) for key, val in re.findall(r"(\w+)=(\d+)", counts)}
    return found


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    tflab = Tflab(tmp_path_factory.mktemp("nm-state"))
    tflab.run("sandbox", "down", "--prefix", PREFIX)  # fresh hosts: `up` would reuse old ones
    proc = tflab.run("sandbox", "up", "--count", "2", "--prefix", PREFIX)
    assert proc.returncode == 0, proc.stderr
    try:
        sh(DOCKER_HOST, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq"
                        " docker.io >/dev/null && systemctl is-active --quiet docker")
        save = subprocess.Popen(["docker", "save", IMAGE], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "exec", "-i", DOCKER_HOST, "docker", "load"], stdin=save.stdout,
                              capture_output=True, text=True, check=False, timeout=300)
        assert save.wait() == 0 and load.returncode == 0, load.stderr
        for name, uid, limits in (("alice", 2001, "--memory 512m --cpus 1.5 --pids-limit 128"),
                                  ("bob", 2002, "--memory 256m")):
            sh(DOCKER_HOST, f"docker run -d --name tflab-ws-{name} {limits} -e JUPYTER_TOKEN={ENV_SECRET} "
                            f"--label io.tflab.managed-by=tflab-provision --label io.tflab.workspace={name} "
                            f"--label io.tflab.owner={name} --label io.tflab.owner-uid={uid} "
                            f"{IMAGE} sleep infinity")
        sh(DOCKER_HOST, f"docker run -d --name not-a-workspace {IMAGE} sleep infinity")
        yield Path(proc.stdout.strip()), tmp_path_factory.mktemp("nm-run")
    finally:
        tflab.run("sandbox", "down", "--prefix", PREFIX)


@pytest.fixture(scope="module")
def converged(hosts: tuple[Path, Path]) -> tuple[str, str]:
    inventory, tmp = hosts
    return converge(inventory, tmp), converge(inventory, tmp)


def test_converges_and_a_second_run_changes_nothing(converged: tuple[str, str]) -> None:
    first, second = recap(converged[0]), recap(converged[1])
    assert first[BARE]["changed"] > 0 and first[DOCKER_HOST]["changed"] > 0
    assert second[BARE]["changed"] == 0 and second[DOCKER_HOST]["changed"] == 0, converged[1][-3000:]
    assert second[BARE]["failed"] == 0 and second[DOCKER_HOST]["failed"] == 0


def test_a_host_without_docker_reports_no_workspaces_and_a_docker_error(converged: tuple[str, str]) -> None:
    page = scrape(BARE)
    assert "node_textfile_scrape_error 0" in page.splitlines()
    out = tflab_part(page)
    assert value(out, "tflab_collector_workspaces") == 0
    assert value(out, "tflab_collector_errors", source="docker") == 1
    assert value(out, "tflab_node_driver_info", installed="none", loaded="none") == 1
    assert value(out, "tflab_node_firewall_in_sync") == 0  # no tflab firewall on this host
    assert sh(BARE, "systemctl is-active prometheus-node-exporter tflab-node-metrics.timer").split() == \
        ["active", "active"]
    # Installed without Recommends: no collectors package and its timers.
    listing = sh(BARE, "dpkg-query -W -f '${db:Status-Abbrev} ${Package}\\n' 'prometheus*'")
    installed = [line.split()[-1] for line in listing.splitlines() if line.startswith("ii")]
    assert installed == ["prometheus-node-exporter"], listing


def test_workspace_figures_and_a_known_allocation(converged: tuple[str, str]) -> None:
    page = scrape(DOCKER_HOST)
    assert "node_textfile_scrape_error 0" in page.splitlines()
    assert ENV_SECRET not in page
    out = tflab_part(page)
    assert {lab["workspace"] for lab, _v in series(out, "tflab_workspace_info")} == {"alice", "bob"}
    alice, bob = {"workspace": "alice", "user": "alice"}, {"workspace": "bob", "user": "bob"}
    assert value(out, "tflab_workspace_info", uid="2001", container="tflab-ws-alice", **alice) == 1
    assert value(out, "tflab_workspace_up", **alice) == 1
    assert value(out, "tflab_workspace_memory_limit_bytes", **alice) == 512 * MIB
    assert value(out, "tflab_workspace_cpu_limit_cores", **alice) == 1.5
    assert value(out, "tflab_workspace_pids_limit", **alice) == 128
    assert value(out, "tflab_workspace_cpu_limit_cores", **bob) == 0
    assert value(out, "tflab_node_docker_default_runtime_info", runtime="runc") == 1
    assert all(val == 0 for _lab, val in series(out, "tflab_collector_errors"))
    before = {ws: value(out, "tflab_workspace_memory_bytes", workspace=ws) for ws in ("alice", "bob")}

    # tail keeps a line without a newline in memory: 200 MiB held while sleep keeps the pipe open.
    sh(DOCKER_HOST, "docker exec -d tflab-ws-alice sh -c "
                    "'(head -c 200M /dev/zero; sleep 120) | tail >/dev/null'")
    time.sleep(2)  # head writes 200 MiB in well under a second
    allocated_at = time.time()  # the containers share this machine's clock
    try:
        deadline = time.monotonic() + 60
        after = before
        while time.monotonic() < deadline:
            time.sleep(3)
            out = tflab_part(scrape(DOCKER_HOST))
            # Only a file the timer wrote after the allocation counts.
            if value(out, "tflab_collector_last_success_timestamp_seconds") > allocated_at:
                after = {ws: value(out, "tflab_workspace_memory_bytes", workspace=ws) for ws in before}
                if after["alice"] - before["alice"] > ALLOCATE * 0.9:
                    break
        grew = after["alice"] - before["alice"]
        assert ALLOCATE * 0.9 <= grew <= ALLOCATE * 1.15, (before, after)
        assert abs(after["bob"] - before["bob"]) < 8 * MIB, (before, after)
    finally:
        sh(DOCKER_HOST, "docker exec tflab-ws-alice pkill -f 'sleep 120'", check=False)
