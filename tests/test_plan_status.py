"""The README's first command, `scripts/dev demo`, and plan and status on the host it converges.

`scripts/dev demo` runs as a newcomer runs it: the set-up (a no-op once done), the test bed, then
`tflab demo`, which starts the sandbox host tflab-sandbox-1 with the workspace ports published
on 127.0.0.1, builds the workspace OS image with debootstrap, hands it to the host as an offline
archive, and applies the full site.yml (preflight, sshd, driver, docker, toolkit, firewall,
workspaces) with one TensorFlow workspace, built from PyPI on the host. The instructions it
prints are then followed literally (the ssh command, the Jupyter URL and the token command), and
`tflab plan` (the full site.yml, no tags) and `tflab status --json` are checked against the same
host and its running workspace. Any tflab-sandbox-* host left from a manual demo is removed first,
so the demo starts from a bare host.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, Tflab, docker, jupyter_check

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

HOST = "tflab-sandbox-1"
USER, UID = "demo", 2001


@dataclass
class Demo:
    output: str
    ssh: list[str]
    jupyter_url: str
    token_command: list[str]
    rerun: list[str]  # the printed `tflab apply` arguments (inventories and -e vars file)
    ca_show: list[str]  # the printed `tflab ca show` command (its stdout is the lab CA)


@pytest.fixture(scope="module")
def demo(tflab: Tflab) -> Iterator[Demo]:
    tflab.run("sandbox", "down", "--prefix", "tflab-sandbox")
    venv = os.environ.get("TFLAB_VENV") or str(Path(sys.executable).parent.parent)
    proc = subprocess.run([str(ROOT / "scripts" / "dev"), "demo", "--state-dir", str(tflab.state_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
                          env={**os.environ, "TFLAB_VENV": venv})
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    ssh = re.search(r"^\s*(ssh -p \d+ -i \S+ demo@127\.0\.0\.1)$", out, re.M)
    url = re.search(r"Jupyter: (https://127\.0\.0\.1:\d+/demo/)\s+\(token: (docker exec [^)]+)\)", out)
    trust = re.search(r"^\s*(tflab ca show.*) > lab-ca\.crt; curl --cacert lab-ca\.crt (\S+)$", out, re.M)
    rerun = re.search(r"^Re-run the provisioning: tflab apply (.+)$", out, re.M)
    assert ssh and url and trust and rerun, f"the demo did not print how to reach the workspace:\n{out}"
    assert re.search(rf"│ {HOST} +│ +\d+ │ +\d+ │ +0 │ +0 │", out), out
    yield Demo(out, shlex.split(ssh.group(1)), url.group(1), shlex.split(url.group(2)),
               shlex.split(rerun.group(1)), shlex.split(trust.group(1)))
    tflab.run("sandbox", "down", "--prefix", "tflab-sandbox")


def on_host(*argv: str) -> subprocess.CompletedProcess[str]:
    return docker("exec", HOST, *argv)


def test_the_printed_ssh_command_reaches_the_users_tensorflow(demo: Demo, tmp_path: Path) -> None:
    # As printed, plus what a script needs instead of a person answering the host-key prompt.
    ssh = [demo.ssh[0], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
           "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", *demo.ssh[1:]]
    proc = subprocess.run([*ssh, "python -c 'import tensorflow as tf; print(tf.__version__)'; id -u; "
                           "echo from-ssh > ~/from-ssh.txt"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["2.9.3", str(UID)]
    owner = on_host("stat", "-c", "%u:%g", f"/srv/tflab/{USER}/from-ssh.txt")
    assert owner.stdout.strip() == f"{UID}:{UID}", owner


def test_the_printed_jupyter_url_needs_the_token_and_runs_tensorflow(
        tflab: Tflab, demo: Demo, tmp_path: Path) -> None:
    token_proc = subprocess.run(demo.token_command, capture_output=True, text=True, timeout=60, check=False)
    token = token_proc.stdout.strip()
    assert token_proc.returncode == 0 and len(token) >= 32, token_proc.stderr
    # The lab CA, as printed: `tflab ca show ... > lab-ca.crt` (the PEM alone on stdout).
    assert demo.ca_show[:3] == ["tflab", "ca", "show"], demo.ca_show
    shown = tflab.run(*demo.ca_show[1:])
    assert shown.returncode == 0 and shown.stdout.startswith("-----BEGIN CERTIFICATE-----"), shown.stderr
    ca = tmp_path / "lab-ca.crt"
    ca.write_text(shown.stdout)
    # Without the lab CA the front door's certificate is not trusted.
    untrusted = jupyter_check(demo.jupyter_url, "unauthenticated")
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stdout + untrusted.stderr
    for check in (["unauthenticated"], ["wrong-token"]):
        proc = jupyter_check(demo.jupyter_url, *check, ca=ca)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    code = "import os, tensorflow as tf; print(tf.__version__, os.getuid(), os.getcwd())"
    proc = jupyter_check(demo.jupyter_url, "kernel", code, f"2.9.3 {UID} /home/{USER}", token=token, ca=ca)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def plan_args(demo: Demo, *more: str) -> list[str]:
    return ["plan", *demo.rerun, *more]


def test_plan_of_the_full_site_reports_no_change(tflab: Tflab, demo: Demo) -> None:
    assert "-e" in demo.rerun  # the demo's workspace (vars file), or the plan would remove it
    rc, result = tflab.run_json(*plan_args(demo), timeout=1200)
    assert rc == 0, result["failures"]
    assert result["changes"] == {}
    assert result["hosts"][HOST]["changed"] == 0 and result["hosts"][HOST]["failed"] == 0
    # The workspace role ran to its end (its report line), not a plan that stopped short of it.
    # The URL the host's front door serves (the demo's public name is 127.0.0.1, port 443).
    assert result["reports"][HOST] == {"recreated": [], "workspaces": [
        f"{USER}: ssh -p 22001 {USER}@{HOST}  jupyter https://127.0.0.1/{USER}/"]}, result["reports"]


def test_plan_after_a_setting_change_names_exactly_that_and_changes_nothing(
        tflab: Tflab, demo: Demo, tmp_path: Path) -> None:
    change = tmp_path / "change.yml"
    change.write_text(yaml.safe_dump({"all": {"children": {"sandbox": {"vars": {
        "docker_engine_log_opts": {"max-size": "20m", "max-file": "3"}}}}}}))
    rc, result = tflab.run_json(*plan_args(demo, "-i", str(change), "--tags", "docker"), timeout=1200)
    assert rc == 0, result["failures"]
    [changed] = result["changes"].values()
    assert any("daemon.json" in item for item in changed), changed
    assert len(changed) <= 2, changed  # the merged file (and its restart handler), nothing else
    before = on_host("cat", "/etc/docker/daemon.json").stdout
    assert json.loads(before)["log-opts"]["max-size"] != "20m"  # nothing was applied
    rc, again = tflab.run_json(*plan_args(demo, "--tags", "docker"), timeout=1200)
    assert rc == 0 and again["changes"] == {}


def test_status_json_matches_the_host_and_its_workspace(tflab: Tflab, demo: Demo) -> None:
    rc, result = tflab.run_json("status", *demo.rerun)
    assert rc == 0, result["failures"]
    report = result["reports"][HOST]
    # Docker, read on the host itself.
    runtime = on_host("docker", "info", "--format", "{{.DefaultRuntime}}").stdout.strip()
    assert report["docker_runtime"] == runtime == "runc"  # no GPU: the toolkit was skipped
    # The firewall, as its own check says on the host.
    check = on_host("/usr/local/sbin/tflab-firewall", "check")
    assert check.returncode == 0 and report["firewall"] == check.stdout.strip() == "in sync", report
    # The workspace: predicted from the inventory (uid 2001 -> SSH 22001; Jupyter is published
    # nowhere, the front door reaches it on the workspace network), then read on the host.
    [line] = report["workspaces"]
    name, state, ports = line.split(" · ")
    assert name == f"tflab-ws-{USER}"
    assert re.fullmatch(r"Up .+ \(healthy\)", state), state
    # The image EXPOSEs Jupyter's 8888 (the front door's target), but only SSH is published.
    assert sorted(ports.split(", ")) == ["0.0.0.0:22001->2222/tcp", "8888/tcp"], ports
    health = on_host("docker", "inspect", "--format", "{{.State.Health.Status}} {{.Config.User}}", name)
    assert health.stdout.split() == ["healthy", f"{UID}:{UID}"]
    [details] = report["workspace_details"]
    labels = dict(item.split("=", 1) for item in details["Labels"].split(","))
    assert labels["io.tflab.workspace"] == USER and labels["io.tflab.owner-uid"] == str(UID)
    # GPUs and driver: none on this machine, by sysfs and dpkg rather than by the facts module.
    sysfs = on_host("sh", "-c", "grep -l 0x10de /sys/bus/pci/devices/*/vendor 2>/dev/null | wc -l")
    assert report["gpus"] == sysfs.stdout.strip() == "0"
    packages = on_host("sh", "-c", "dpkg-query -W -f '${Package}\\n' 'nvidia-*' 2>/dev/null | wc -l")
    assert packages.stdout.strip() == "0" and on_host("test", "-e", "/sys/module/nvidia").returncode != 0
    assert report["driver"] == "installed none, loaded none"
    assert report["reboot"] == "none"
    assert report["host"] == "127.0.0.1"


def test_status_names_a_firewall_rule_file_that_does_not_load(tflab: Tflab, demo: Demo) -> None:
    rules = "/etc/tflab/firewall/rules.v4"
    assert on_host("cp", "-p", rules, "/root/rules.v4.good").returncode == 0
    try:
        assert on_host("sh", "-c", f"echo 'this is not a rule' >> {rules}").returncode == 0
        rc, result = tflab.run_json("status", *demo.rerun)
        assert rc == 0, result["failures"]
        firewall = result["reports"][HOST]["firewall"]
        assert firewall.startswith("FAULT: ") and f"{rules} does not load" in firewall, firewall
    finally:
        assert on_host("cp", "-p", "/root/rules.v4.good", rules).returncode == 0
    assert on_host("/usr/local/sbin/tflab-firewall", "check").stdout.strip() == "in sync"
