"""The README's first command, `scripts/dev demo`, and plan and status on the host it converges.

`scripts/dev demo` runs as a newcomer runs it: the set-up (a no-op once done), the test bed, then
`tflab demo`, which starts the sandbox host tflab-sandbox-1 with the workspace ports published
on 127.0.0.1, builds the workspace OS image with debootstrap, hands it to the host as an offline
archive, and applies the full site.yml (preflight, sshd, driver, docker, toolkit, firewall,
workspaces) with one TensorFlow workspace, built from PyPI on the host. The instructions it
prints are then followed literally (the ssh command, the Jupyter URL and the token command), and
`tflab plan` (the full site.yml, no tags) and `tflab status --json` are checked against the same
host and its running workspace. Then the workspace lifecycle runs through the CLI on the same
host: `workspace add` (two users, one apply), `rotate-secret`, `remove` (archive) and `remove
--purge`. Any tflab-sandbox-* host left from a manual demo is removed first, so the demo starts
from a bare host.
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
                          env=tflab.env({"TFLAB_VENV": venv}))
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
    # No monitoring or log host in the demo's inventory: none of that is installed, no live use.
    assert report["usage"] == ["no monitoring host"] and report["usage_details"] == {}
    installed = on_host("dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\\n", "prometheus*",
                        "systemd-journal-remote", "stunnel4")
    assert not [ln for ln in installed.stdout.splitlines() if ln.split()[1:2] == ["ii"]], installed.stdout
    units = on_host("systemctl", "list-unit-files", "--no-legend", "tflab-node-metrics*",
                    "systemd-journal-upload*")
    assert units.stdout.strip() == "", units.stdout


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


FRONT_DOOR_CONF = "/etc/nginx/conf.d/tflab-front-door.conf"
DRIFT_PACKAGE = "curl"  # installed by the front door's role, needed by nothing else on the host
WORKSPACE = f"tflab-ws-{USER}"
# Package tasks of roles with nothing missing: skipped on a no-op run (their packages are listed).
UNCHANGED_PACKAGE_TASKS = ["Install the OpenSSH server", "Install iptables",
                           "Docker engine | Install the engine packages",
                           "Install | Install the packages the Docker modules need"]


def test_a_no_op_run_finds_and_repairs_drift_by_hand_and_only_that(tflab: Tflab, demo: Demo) -> None:
    """The no-op path must still see drift (issue 15): one managed file, one package and one
    container setting are changed by hand; the next full site.yml puts back exactly those."""
    conf = on_host("cat", FRONT_DOOR_CONF).stdout
    pids = on_host("docker", "inspect", "-f", "{{.HostConfig.PidsLimit}}", WORKSPACE).stdout.strip()
    assert conf and pids == "4096"
    removes = on_host("apt-get", "-s", "remove", DRIFT_PACKAGE).stdout
    assert [ln.split()[1] for ln in removes.splitlines() if ln.startswith("Remv ")] == [DRIFT_PACKAGE]

    assert on_host("sh", "-c", f"echo '# edited by hand' >> {FRONT_DOOR_CONF}").returncode == 0
    assert on_host("apt-get", "remove", "-y", "-q", DRIFT_PACKAGE).returncode == 0
    assert on_host("docker", "update", "--pids-limit", "1000", WORKSPACE).returncode == 0

    runs_before = set((tflab.state_dir / "runs").iterdir())
    # -v: the run's job_events/ then keep skipped results too (tflab_provision/events.py).
    rc, result = tflab.run_json("apply", *demo.rerun, "-v", timeout=1800)
    assert rc == 0, result["failures"]
    # The shortcut is in effect: the package tasks of the roles whose packages are all there were
    # skipped (preflight's one listing), while the front door's ran for its missing package.
    [run] = set((tflab.state_dir / "runs").iterdir()) - runs_before
    outcomes = {(e["event_data"].get("task", "").strip(), e["event"])
                for path in run.glob("artifacts/*/job_events/*.json")
                for e in [json.loads(path.read_text())] if e.get("event", "").startswith("runner_on_")}
    for task in UNCHANGED_PACKAGE_TASKS:
        assert (task, "runner_on_skipped") in outcomes, (task, sorted(o for o in outcomes if o[0] == task))
    changed = result["changes"][HOST]
    assert "HTTPS front door | Write the front door (tested with nginx -t before it goes live)" in changed
    assert "HTTPS front door | Install nginx, python3-cryptography, openssl and curl" in changed
    assert "Workspace | Run the workspace container" in changed
    # Nothing outside the two roles that own what drifted (their handlers included).
    assert all(task.startswith(("HTTPS front door | ", "Workspace | ")) for task in changed), changed
    assert on_host("cat", FRONT_DOOR_CONF).stdout == conf
    assert on_host("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", DRIFT_PACKAGE).stdout.strip() == "ii"
    assert on_host("docker", "inspect", "-f", "{{.HostConfig.PidsLimit}}", WORKSPACE).stdout.strip() == "4096"


# --- The workspace lifecycle through the CLI, on the same host -------------------------------
# `tflab workspace add|rotate-secret|remove` edit host_vars/ and apply (tags workspaces,
# firewall, frontdoor). They need the workspaces in an inventory directory rather than the
# demo's -e vars file (extra vars would override host_vars), so the lab below holds the demo's
# host and its vars as host_vars; the demo's own workspace stays as it is throughout.
NEW_USERS = {"carol": 2002, "dave": 2003}


@dataclass
class Lab:
    args: list[str]  # -i lab -i inventory/sandbox
    https_base: str  # https://127.0.0.1:<published 443>
    ca: Path
    ssh_address: str  # the sandbox host's address on the test bed's network (port 2200x)
    key: Path


@pytest.fixture(scope="module")
def lab(tflab: Tflab, demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    root = tmp_path_factory.mktemp("lifecycle")
    inventories = [demo.rerun[i + 1] for i, arg in enumerate(demo.rerun) if arg == "-i"]
    sandbox_group, hosts_file = inventories
    [vars_file] = [demo.rerun[i + 1] for i, arg in enumerate(demo.rerun) if arg == "-e"]
    (root / "lab" / "host_vars").mkdir(parents=True)
    (root / "lab" / "hosts.yml").write_text(Path(hosts_file).read_text())
    (root / "lab" / "host_vars" / f"{HOST}.yml").write_text(Path(vars_file).read_text())
    ca = root / "lab-ca.crt"
    ca.write_text(tflab.run(*demo.ca_show[1:]).stdout)
    address = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", HOST)
    key = tflab.state_dir / "sandbox" / "id_ed25519"
    assert key.exists(), f"the demo's key is not at {key}"
    return Lab(["-i", str(root / "lab"), "-i", sandbox_group],
               demo.jupyter_url.removesuffix(f"/{USER}/"), ca, address.stdout.split()[0], key)


def started_at(container: str) -> str:
    return on_host("docker", "inspect", "-f", "{{.State.StartedAt}}", container).stdout.strip()


def workspace_token(tflab: Tflab, lab: Lab, name: str) -> str:
    proc = tflab.run("workspace", "show", HOST, name, "--reveal-secret", "--json", *lab.args, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    token = str(json.loads(proc.stdout)["jupyter_secret"])
    assert len(token) >= 32
    return token


def api_status(lab: Lab, name: str, token: str) -> int:
    """The HTTP status of the workspace's Jupyter API for this token, through the front door."""
    import requests

    session = requests.Session()
    session.trust_env = False
    reply = session.get(f"{lab.https_base}/{name}/api/contents", timeout=60, verify=str(lab.ca),
                        headers={"Authorization": f"token {token}"})
    return reply.status_code


def run_artifacts_text(tflab: Tflab) -> str:
    text = []
    for path in tflab.state_dir.rglob("*"):
        if path.is_file() and "secrets" not in path.parts and path.stat().st_size < 50_000_000:
            text.append(path.read_text(errors="replace"))
    return "\n".join(text)


def test_workspace_add_applies_two_new_users_without_touching_the_first(
        tflab: Tflab, demo: Demo, lab: Lab, tmp_path: Path) -> None:
    demo_started = started_at(f"tflab-ws-{USER}")
    first = tflab.run("workspace", "add", HOST, "carol", "--uid", str(NEW_USERS["carol"]),
                      "--key", str(lab.key.with_suffix(".pub")), "--cpus", "1", "--memory", "1g",
                      "--no-apply", *lab.args)
    assert first.returncode == 0, first.stderr
    proc = tflab.run("workspace", "add", HOST, "dave", "--uid", str(NEW_USERS["dave"]),
                     "--key", str(lab.key.with_suffix(".pub")), "--cpus", "1", "--memory", "1g",
                     *lab.args, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert started_at(f"tflab-ws-{USER}") == demo_started  # the demo's workspace was not restarted
    for name, uid in NEW_USERS.items():
        health = on_host("docker", "inspect", "-f", "{{.State.Health.Status}} {{.Config.User}}",
                         f"tflab-ws-{name}")
        assert health.stdout.split() == ["healthy", f"{uid}:{uid}"], health
        # SSH on the port the inventory allocated (uid 2002 -> 22002), as that user, from outside.
        ssh = subprocess.run(
            ["ssh", "-p", str(20000 + uid), "-i", str(lab.key), "-o", "BatchMode=yes",
             "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=accept-new",
             "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", f"{name}@{lab.ssh_address}",
             f"id -u; echo kept > ~/{name}-notes.txt"],
            capture_output=True, text=True, timeout=120, check=False)
        assert ssh.returncode == 0 and ssh.stdout.split() == [str(uid)], ssh.stderr
        # Jupyter through the front door's new route, with the user's own token only.
        token = workspace_token(tflab, lab, name)
        assert api_status(lab, name, token) == 200
        other = "dave" if name == "carol" else "carol"
        assert api_status(lab, other, token) == 403, f"{name}'s token opened {other}'s Jupyter"
    code = "import os; print(os.getuid(), open(os.path.expanduser('~/carol-notes.txt')).read().strip())"
    check = jupyter_check(f"{lab.https_base}/carol/", "kernel", code, f"{NEW_USERS['carol']} kept",
                          token=workspace_token(tflab, lab, "carol"), ca=lab.ca)
    assert check.returncode == 0, check.stdout + check.stderr


def test_rotate_secret_replaces_the_token_and_never_logs_it(tflab: Tflab, lab: Lab) -> None:
    old = workspace_token(tflab, lab, "carol")
    dave_started = started_at("tflab-ws-dave")
    proc = tflab.run("workspace", "rotate-secret", HOST, "carol", *lab.args, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    new = workspace_token(tflab, lab, "carol")
    assert new != old
    assert api_status(lab, "carol", old) == 403
    assert api_status(lab, "carol", new) == 200
    assert started_at("tflab-ws-dave") == dave_started  # only carol's container restarted
    # Neither token is in the run artifacts, the events or the CLI's own output.
    logged = run_artifacts_text(tflab) + proc.stdout + proc.stderr
    assert old not in logged and new not in logged


def test_remove_archives_one_and_purge_deletes_the_other(tflab: Tflab, lab: Lab) -> None:
    refused = tflab.run("workspace", "remove", HOST, "dave", "--purge", *lab.args)
    assert refused.returncode != 0 and "--yes-delete-data" in refused.stderr
    assert on_host("test", "-d", "/srv/tflab/dave").returncode == 0  # nothing happened
    first = tflab.run("workspace", "remove", HOST, "carol", "--no-apply", *lab.args)
    assert first.returncode == 0, first.stderr
    proc = tflab.run("workspace", "remove", HOST, "dave", "--purge", "--yes-delete-data", *lab.args,
                     timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for name in NEW_USERS:
        assert on_host("docker", "inspect", f"tflab-ws-{name}").returncode != 0, f"{name} still runs"
        assert on_host("docker", "network", "inspect", f"tflab-ws-{name}").returncode != 0
        assert on_host("test", "-e", f"/srv/tflab/{name}").returncode != 0, f"{name}'s data is left"
        assert on_host("test", "-e", f"/srv/tflab/.tflab/{name}").returncode != 0  # token, host keys
        assert api_status(lab, name, "any") == 404  # the front door's route went too
    # carol's data is in her archive (root-only), dave's was purged without one.
    archives = on_host("sh", "-c", "ls /srv/tflab/.archive/").stdout.split()
    carol = [a for a in archives if a.startswith("carol-")]
    assert len(carol) == 1 and not [a for a in archives if a.startswith("dave-")], archives
    listing = on_host("tar", "-tzf", f"/srv/tflab/.archive/{carol[0]}")
    assert listing.returncode == 0 and "carol-notes.txt" in listing.stdout, listing
    assert on_host("stat", "-c", "%a %U", f"/srv/tflab/.archive/{carol[0]}").stdout.split() == ["600", "root"]
    # The demo's workspace is untouched, and a re-run of everything is a no-op.
    health = on_host("docker", "inspect", "-f", "{{.State.Health.Status}}", f"tflab-ws-{USER}")
    assert health.stdout.strip() == "healthy"
    rc, result = tflab.run_json("plan", *lab.args, timeout=1200)
    assert rc == 0 and result["changes"] == {}, result
