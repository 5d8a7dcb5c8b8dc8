"""Fault injection on one converged lab host (full site.yml with a TensorFlow workspace).

Each case breaks something real in the middle of a real `tflab apply` and then checks three
things: the report names what happened, the user's data (and running job, where it can) is
untouched, and a re-run converges. One host serves every case, in file order, so the 1.5 GB
workspace image is loaded once. Its image is the notebook-6 double of the official image
(tests/testbed/tf_image/Dockerfile.notebook6), so the classic Jupyter path, the default for users,
runs here too; the Molecule scenarios run the notebook-7 (jupyter_server 2) path.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tflab_provision import sandbox

from conftest import ROOT, Tflab, docker, jupyter_check

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

HOST = "tflab-fault-1"
USER, UID = "ada", 2101
CONTAINER = f"tflab-ws-{USER}"
# The official image's Jupyter is the classic notebook 6 (the role writes NotebookApp settings).
TF_IMAGE = "tflab-testbed/tensorflow:2.9.3-jupyter-nb6"
TF_ARCHIVE = "/var/lib/tflab/images/tensorflow-test.tar"
GROUP = ROOT / "inventory" / "sandbox"
DAEMON_JSON_TASK = "Docker engine | Merge the role's settings into daemon.json (admin keys are kept)"

Event = Mapping[str, Any]


def on_host(*argv: str) -> subprocess.CompletedProcess[str]:
    return docker("exec", HOST, *argv)


def in_workspace(*argv: str, user: bool = True) -> subprocess.CompletedProcess[str]:
    return on_host("docker", "exec", *(["-u", str(UID)] if user else []), CONTAINER, *argv)


def container_state() -> dict[str, Any]:
    proc = on_host("docker", "inspect", "--format", "{{json .}}", CONTAINER)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return {"id": data["Id"], "started": data["State"]["StartedAt"], "status": data["State"]["Status"]}


def dockerd_pid() -> int:
    return int(on_host("systemctl", "show", "--property", "MainPID", "--value", "docker").stdout.strip())


def engine_and_config_times() -> tuple[int, int]:
    """(when the running dockerd started, when daemon.json was last written), epoch seconds."""
    script = ('pid=$(systemctl show --property MainPID --value docker); '
              'echo $(( $(date +%s) - $(ps -o etimes= -p "$pid") )) $(stat -c %Y /etc/docker/daemon.json)')
    started, modified = (int(x) for x in on_host("sh", "-c", script).stdout.split())
    return started, modified


def dockerd_missed_its_restart() -> bool:
    """daemon.json is newer than the running engine: a restart the config needs never came."""
    started, modified = engine_and_config_times()
    return modified > started + 1


def workspace_vars(path: Path, shm_size: str = "256m", **extra: object) -> Path:
    """The lab's workspace, as a 0600 vars file (the controller's key is the user's key)."""
    public_key = (path.parent / "user_ed25519.pub").read_text().strip()
    # This machine reaches the front door at the sandbox container's address: a name of its certificate.
    address = docker("inspect", "--format", "{{.NetworkSettings.IPAddress}}", HOST).stdout.strip()
    data = {
        "tflab_tls_extra_names": [address],
        "tflab_workspaces": [{"name": USER, "uid": UID, "cpus": 1, "memory": "1g",
                              "shm_size": shm_size, "authorized_keys": [public_key]}],
        "tf_workspace_image_source": "official",
        "tf_workspace_base_image": TF_IMAGE,
        "tf_workspace_image_archives": [{"path": TF_ARCHIVE, "name": TF_IMAGE}],
        "tf_workspace_gpu_support": False,
        **extra,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass
class FaultLab:
    tflab: Tflab
    hosts: Path
    dir: Path
    shm_size: str = "256m"  # the workspace's current setting (a case may change it)

    def args(self, vars_file: Path, *more: str) -> list[str]:
        return ["apply", "-i", str(GROUP), "-i", str(self.hosts), "-e", str(vars_file), *more]

    def apply(self, vars_file: Path, *more: str) -> tuple[int, dict[str, Any]]:
        return self.tflab.run_json(*self.args(vars_file, *more), timeout=1500)

    def start(self, vars_file: Path, *more: str) -> LiveRun:
        return LiveRun(self, subprocess.Popen(
            self.tflab.argv(*self.args(vars_file, *more), "--json"), cwd=ROOT, env=self.tflab.env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            before={p.name for p in (self.tflab.state_dir / "runs").iterdir()})


@dataclass
class LiveRun:
    """A `tflab apply` in progress, watched through the job events ansible-runner writes."""

    lab: FaultLab
    proc: subprocess.Popen[str]
    before: set[str]
    seen: set[Path] = field(default_factory=set)

    def events(self) -> Iterator[Event]:
        runs = [p for p in (self.lab.tflab.state_dir / "runs").iterdir() if p.name not in self.before]
        for run in runs:
            for path in sorted(run.glob("artifacts/*/job_events/*.json")):
                # "-partial" files are events ansible-runner has not finished (and renames).
                if path in self.seen or path.name.endswith("-partial.json"):
                    continue
                try:
                    event = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):  # still being written: read it next time
                    continue
                self.seen.add(path)
                yield event

    def wait_for(self, what: str, match: Callable[[Event], bool], timeout: float = 900) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if match(event):
                    return event
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                pytest.fail(f"the run ended (rc {self.proc.returncode}) before {what}:\n"
                            f"{out[-3000:]}\n{err[-2000:]}")
            time.sleep(0.1)
        self.proc.kill()
        pytest.fail(f"timed out waiting for {what}")

    def finish(self, timeout: float = 1500) -> tuple[int, dict[str, Any]]:
        out, err = self.proc.communicate(timeout=timeout)
        try:
            return self.proc.returncode, json.loads(out)
        except json.JSONDecodeError:
            pytest.fail(f"no JSON from tflab (rc {self.proc.returncode}):\n{out}\n{err}")


def task_event(kind: str, task: str, changed: bool | None = None) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        data = event.get("event_data") or {}
        if event.get("event") != kind or str(data.get("task", "")).strip() != task:
            return False
        return changed is None or bool((data.get("res") or {}).get("changed")) == changed
    return match


@pytest.fixture(scope="module")
def lab(tflab: Tflab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultLab]:
    """tflab-fault-1 converged by the full site.yml with one workspace, its image loaded offline."""
    workdir = tmp_path_factory.mktemp("faults")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "user_ed25519")],
                   check=True)
    build = subprocess.run([str(ROOT / "tests/testbed/tf_image/build.sh"),
                            "-e", "tflab_testbed_notebook6=true"], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    proc = tflab.run("sandbox", "up", "--count", "1", "--prefix", "tflab-fault")
    assert proc.returncode == 0, proc.stderr
    sandbox.copy_image_to_host(sandbox.Docker(), HOST, TF_IMAGE, TF_ARCHIVE)
    fault_lab = FaultLab(tflab, Path(proc.stdout.strip()), workdir)
    rc, result = fault_lab.apply(workspace_vars(workdir / "base.yml"))
    assert rc == 0, result["failures"]
    assert result["accelerator"] == tflab.accelerator  # the accelerator asked for really ran
    assert container_state()["status"] == "running"
    yield fault_lab
    tflab.run("sandbox", "down", "--prefix", "tflab-fault")


def test_classic_jupyter_of_the_official_image_needs_the_token_and_runs_tensorflow(lab: FaultLab) -> None:
    # The image really is the classic notebook, and the role configured it as such.
    assert in_workspace("jupyter", "notebook", "--version").stdout.startswith("6.5.")
    config = json.loads(on_host("cat", f"/srv/tflab/.tflab/{USER}/jupyter/jupyter_tflab_config.json").stdout)
    assert set(config) == {"NotebookApp"}, config
    token = on_host("cat", f"/srv/tflab/.tflab/{USER}/jupyter/token").stdout.strip()
    assert len(token) >= 32 and config["NotebookApp"]["token"] == token
    # From this machine, as a user's browser would (the sandbox group allows 172.16.0.0/12),
    # through the front door, trusting the lab CA in tflab's state directory.
    address = docker("inspect", "--format", "{{.NetworkSettings.IPAddress}}", HOST).stdout.strip()
    url = f"https://{address}/{USER}/"
    ca = lab.tflab.state_dir / "ca" / "lab-ca.crt"
    for check in (["unauthenticated"], ["wrong-token"]):
        proc = jupyter_check(url, *check, ca=ca)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    code = "import os, tensorflow as tf; print(tf.__version__, os.getuid(), os.getcwd())"
    proc = jupyter_check(url, "kernel", code, f"2.9.3 {UID} /home/{USER}", token=token, ca=ca)
    assert proc.returncode == 0, proc.stdout + proc.stderr


JOB = ("echo $$ > /tmp/job.pid; i=0; "
       "while :; do i=$((i+1)); echo step $i >> training.log; sleep 1; done")


@pytest.fixture
def job() -> Iterator[None]:
    """A training job of the user's, writing its log in the home directory (the data mount)."""
    home = f"/home/{USER}"
    assert in_workspace("sh", "-c", f"echo 'weights v1' > {home}/checkpoint.txt").returncode == 0
    started = on_host("docker", "exec", "-d", "-u", str(UID), "-w", home, CONTAINER, "sh", "-c", JOB)
    assert started.returncode == 0, started.stderr
    time.sleep(3)
    yield
    in_workspace("sh", "-c", "kill $(cat /tmp/job.pid)")  # gone already if the container was recreated


def training_log() -> list[str]:
    return on_host("cat", f"/srv/tflab/{USER}/training.log").stdout.splitlines()


def assert_user_data_intact(log_before: list[str]) -> None:
    assert training_log()[: len(log_before)] == log_before
    data = f"/srv/tflab/{USER}"
    owner = on_host("stat", "-c", "%u", f"{data}/training.log", f"{data}/checkpoint.txt")
    assert owner.stdout.split() == [str(UID), str(UID)]
    assert on_host("cat", f"/srv/tflab/{USER}/checkpoint.txt").stdout == "weights v1\n"


def test_package_download_failing_once_is_retried_and_reported(lab: FaultLab) -> None:
    # A package the workspace role installs, gone from the host and from apt's cache, so the run
    # must download it; the mirror refuses connections until the first attempt has failed.
    assert on_host("apt-get", "remove", "-y", "-q", "python3-requests").returncode == 0
    assert on_host("apt-get", "clean").returncode == 0
    broken = "/etc/apt/apt.conf.d/99tflab-test-unreachable-mirror"
    refuse = "Acquire::http::Proxy \"http://127.0.0.1:9/\";"
    assert on_host("sh", "-c", f"echo '{refuse}' > {broken}").returncode == 0
    before = container_state()
    run = lab.start(workspace_vars(lab.dir / "retry.yml", tf_workspace_download_retry_delay=5),
                    "--tags", "workspaces")
    try:
        run.wait_for("the first failed download",
                     task_event("runner_retry", "Install | Install the packages the Docker modules need"))
    finally:
        on_host("rm", "-f", broken)
    rc, result = run.finish()
    assert rc == 0, result["failures"]
    [retry] = [r for r in result["retries"] if r["task"].startswith("Install | Install the packages")]
    assert retry["host"] == HOST and retry["attempt"] == 1
    assert "127.0.0.1" in retry["message"] or "fetch" in retry["message"].lower(), retry
    assert on_host("dpkg-query", "-W", "-f", "${Status}", "python3-requests").stdout == "install ok installed"
    assert container_state() == before


def test_dockerd_killed_mid_run_is_waited_for_and_the_job_keeps_running(lab: FaultLab, job: None) -> None:
    before, pid_before, log_before = container_state(), dockerd_pid(), training_log()
    # The workspace role's package task then has something to install (a few seconds), so the
    # engine dies before the role asks it for its version, not during a later Docker task: on a
    # converged host that task is skipped (preflight's package listing has everything).
    assert on_host("apt-get", "remove", "-y", "-q", "python3-requests").returncode == 0
    run = lab.start(workspace_vars(lab.dir / "base.yml"))
    run.wait_for("the workspace role", task_event(
        "playbook_on_task_start", "Install | Install the packages the Docker modules need"))
    assert on_host("systemctl", "kill", "--signal", "SIGKILL", "docker.service").returncode == 0
    rc, result = run.finish()
    assert rc == 0, result["failures"]
    assert dockerd_pid() not in (0, pid_before), "dockerd was not killed and restarted"
    # live-restore: the container and the job in it outlived the engine.
    assert container_state() == before
    time.sleep(2)
    log_after = training_log()
    assert len(log_after) > len(log_before) + 2
    assert_user_data_intact(log_before)
    rc, again = lab.apply(workspace_vars(lab.dir / "base.yml"))
    assert rc == 0 and again["hosts"][HOST]["changed"] == 0, again["changes"]


def test_setting_change_recreates_the_container_reports_it_and_keeps_the_data(lab: FaultLab,
                                                                              job: None) -> None:
    before, log_before = container_state(), training_log()
    lab.shm_size = "300m"
    changed = workspace_vars(lab.dir / "shm.yml", shm_size=lab.shm_size)
    rc, result = lab.apply(changed, "--tags", "workspaces")
    assert rc == 0, result["failures"]
    assert result["reports"][HOST]["recreated"] == [USER]
    assert any(line == f"{USER}: recreated" for line in result["reports"][HOST]["workspaces"])
    after = container_state()
    assert after["id"] != before["id"] and after["status"] == "running"
    assert_user_data_intact(log_before)
    # The job ended with the old container (the report said so); what it wrote is the user's.
    lines = len(training_log())
    time.sleep(2.5)
    assert len(training_log()) == lines
    rc, again = lab.apply(changed, "--tags", "workspaces")
    assert rc == 0 and again["hosts"][HOST]["changed"] == 0, again["changes"]
    assert again["reports"][HOST]["recreated"] == []


def test_sigint_between_a_config_change_and_its_restart_then_rerun_converges(lab: FaultLab) -> None:
    changed = workspace_vars(lab.dir / "logs.yml", shm_size=lab.shm_size,
                             docker_engine_log_opts={"max-size": "20m", "max-file": "3"})
    before = container_state()
    run = lab.start(changed)
    run.wait_for("the daemon.json change", task_event("runner_on_ok", DAEMON_JSON_TASK, changed=True))
    run.proc.send_signal(signal.SIGINT)
    rc, result = run.finish(timeout=120)
    assert rc == 4 and result["status"] == "canceled"
    # The interrupted run wrote daemon.json but never got to restart the engine.
    assert dockerd_missed_its_restart(), (engine_and_config_times(), result["changes"], result["hosts"])
    assert json.loads(on_host("cat", "/etc/docker/daemon.json").stdout)["log-opts"]["max-size"] == "20m"
    rc, result = lab.apply(changed)
    assert rc == 0, result["failures"]
    assert not dockerd_missed_its_restart()
    assert container_state()["id"] == before["id"]  # restarted engine, same container (live-restore)
    rc, again = lab.apply(changed)
    assert rc == 0 and again["hosts"][HOST]["changed"] == 0, again["changes"]


def test_reveal_secret_fetches_the_token_and_leaves_it_nowhere_else(lab: FaultLab) -> None:
    token = on_host("cat", f"/srv/tflab/.tflab/{USER}/jupyter/token").stdout.strip()
    assert len(token) >= 32
    # `workspace show` reads workspaces from the inventory (as an admin's host_vars would hold them).
    public_key = (lab.dir / "user_ed25519.pub").read_text().strip()
    inventory = lab.dir / "workspaces.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"sandbox": {"hosts": {HOST: {
        "tflab_workspaces": [{"name": USER, "uid": UID, "authorized_keys": [public_key]}]}}}}}}))
    runs = lab.tflab.state_dir / "runs"
    before = {p.name for p in runs.iterdir()}
    rc, shown = lab.tflab.run_json("workspace", "show", HOST, USER, "-i", str(GROUP), "-i", str(lab.hosts),
                                   "-i", str(inventory), "--reveal-secret")
    assert rc == 0, shown
    assert shown["jupyter_secret"] == token
    local = lab.tflab.state_dir / "secrets" / f"{HOST}-{USER}.token"
    assert local.stat().st_mode & 0o777 == 0o600
    [run] = [p for p in runs.iterdir() if p.name not in before]
    leaks = [str(p) for p in run.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert leaks == []
    rc, hidden = lab.tflab.run_json("workspace", "show", HOST, USER, "-i", str(GROUP), "-i", str(lab.hosts),
                                    "-i", str(inventory))
    assert rc == 0 and "jupyter_secret" not in hidden and token not in json.dumps(hidden)
