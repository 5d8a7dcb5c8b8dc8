"""Shared fixtures: the project, the tflab CLI as a subprocess, and sandbox hosts.

Sandbox hosts are real systemd containers reached over SSH (see tflab_provision/sandbox.py);
`scripts/testbed all` must have run (the CI does it) so a Docker engine answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TFLAB = [sys.executable, "-m", "tflab_provision.cli"]
# The accelerator the sandbox-host tests run tflab with (tflab_provision/accelerator.py): Mitogen
# unless TFLAB_TEST_ACCELERATOR says otherwise. tests/test_molecule.py says which scenarios use it;
# tests/test_accelerator.py compares the two paths task by task on the full site.yml.
TEST_ACCELERATOR = os.environ.get("TFLAB_TEST_ACCELERATOR", "mitogen")


@dataclass
class Tflab:
    """Runs `tflab` with a private state dir, as a user would."""

    state_dir: Path
    accelerator: str = TEST_ACCELERATOR

    def argv(self, *args: str) -> list[str]:
        return [*TFLAB, *args, "--state-dir", str(self.state_dir)]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of every tflab this test runs (the accelerator's setting included)."""
        return {**os.environ, "TFLAB_ACCELERATOR": self.accelerator, **(extra or {})}

    def run(self, *args: str, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, check=False, env=self.env(env))

    def run_json(self, *args: str, timeout: float = 600,
                 env: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
        proc = self.run(*args, "--json", timeout=timeout, env=env)
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"no JSON from tflab (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc.returncode, data


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def sandbox_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tflab-state")


@pytest.fixture(scope="session")
def tflab(sandbox_state: Path) -> Tflab:
    return Tflab(sandbox_state)


@pytest.fixture(scope="session")
def sandbox_fleet(tflab: Tflab) -> Iterator[Path]:
    """Three bare sandbox hosts (tflab-pt-1..3) and their inventory; removed afterwards.
    Privileged or not follows TFLAB_TESTBED_PRIVILEGED (`tflab sandbox up` and `tflab demo` read it)."""
    proc = tflab.run("sandbox", "up", "--count", "3", "--prefix", "tflab-pt")
    assert proc.returncode == 0, proc.stderr
    yield Path(proc.stdout.strip())
    tflab.run("sandbox", "down", "--prefix", "tflab-pt")


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


def jupyter_check(url: str, *args: str, token: str = "",
                  ca: Path | None = None) -> subprocess.CompletedProcess[str]:
    """molecule/workspace/files/jupyter_check.py from this machine, as a user's browser would
    reach the workspace (no proxy; the token in the environment, never on the command line;
    the front door's certificate verified against the lab CA ``ca``)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["JUPYTER_TOKEN"] = token
    env["JUPYTER_CA"] = str(ca or "")
    script = ROOT / "molecule" / "workspace" / "files" / "jupyter_check.py"
    return subprocess.run([sys.executable, str(script), url, *args],
                          env=env, capture_output=True, text=True, timeout=400, check=False)


@pytest.fixture
def connection_counter() -> Iterator[tuple[int, list[object]]]:
    """A loopback port that records every connection: proof that nothing was contacted."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except OSError:
                continue
            accepted.append(addr)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


# Holds the dpkg frontend lock the way apt does (a POSIX record lock), then exits.
HOLD_LOCK = ("import fcntl, os, time; fd = os.open('/var/lib/dpkg/lock-frontend', os.O_RDWR | os.O_CREAT); "
             "fcntl.lockf(fd, fcntl.LOCK_EX); time.sleep({seconds})")

# Exits non-zero while someone else holds that lock.
PROBE_LOCK = ("import fcntl, os; fd = os.open('/var/lib/dpkg/lock-frontend', os.O_RDWR | os.O_CREAT); "
              "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)")


def hold_dpkg_lock(host: str, seconds: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["docker", "exec", host, "python3", "-c", HOLD_LOCK.format(seconds=seconds)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until the lock is really held
        if docker("exec", host, "python3", "-c", PROBE_LOCK).returncode != 0:
            return proc
        time.sleep(0.2)
    proc.kill()
    pytest.fail("could not take the dpkg lock in the test host")


# --- Skip policy: a skip is a failure unless tests/allowed_skips.txt lists it, with its reason. ---
# pytest exits 0 on skips, so a test that stopped running would turn CI green. Each disallowed skip
# is turned into a failed report (the test shows as FAILED or ERROR, -x stops on it, the exit code
# is 1); allowed skips stay skipped and are listed with the reason CI accepts them.

ALLOWED_SKIPS = Path(os.environ.get("TFLAB_ALLOWED_SKIPS", str(ROOT / "tests" / "allowed_skips.txt")))
SHOWN_SKIPS = os.path.relpath(ALLOWED_SKIPS, ROOT)


@dataclass(frozen=True)
class AllowedSkip:
    nodeid: str  # fnmatch pattern of the node ID
    reason: str  # fnmatch pattern of the skip's reason
    why: str  # why CI accepts it


_ALLOWED = pytest.StashKey[list[AllowedSkip]]()
_SEEN = pytest.StashKey[list[tuple[str, str, AllowedSkip]]]()
_MOLECULE_SELECTED = pytest.StashKey[bool]()


def load_allowed_skips(path: Path) -> list[AllowedSkip]:
    rules = []
    for number, raw in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split(" | ")]
        if len(parts) != 3 or not all(parts):
            raise pytest.UsageError(
                f"{path}:{number}: want 'NODEID-PATTERN | REASON-PATTERN | WHY': {line!r}")
        rules.append(AllowedSkip(*parts))
    return rules


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    text = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ALLOWED] = load_allowed_skips(ALLOWED_SKIPS)
    config.stash[_SEEN] = []
    config.stash[_MOLECULE_SELECTED] = False


def _police_skip(config: pytest.Config, nodeid: str,
                 report: pytest.TestReport | pytest.CollectReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = skip_reason(report)
    for rule in config.stash[_ALLOWED]:
        if fnmatchcase(nodeid, rule.nodeid) and fnmatchcase(reason, rule.reason):
            config.stash[_SEEN].append((nodeid, reason, rule))
            return
    where = ""
    if isinstance(report.longrepr, tuple):
        where = f" at {report.longrepr[0]}:{report.longrepr[1]}"
    report.outcome = "failed"
    report.longrepr = (f"skipped{where} ({reason!r}), and no line of {SHOWN_SKIPS} "
                       f"allows it: a skip is a failure unless that list names it with its reason.")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    _police_skip(item.config, item.nodeid, report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    report = yield
    _police_skip(collector.config, collector.nodeid, report)
    return report


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup` (.ci/run's test-bed tier) every sandbox-host test that is not a
    Molecule scenario runs on one worker, in file order: their module fixtures converge one host
    for several tests, and they share the sandbox name prefixes. The Molecule scenarios keep
    their own groups (tests/test_molecule.py) and run beside them, as does a test that names its
    own group (tests/test_accelerator.py: its own hosts and prefixes)."""
    for item in items:
        if (item.get_closest_marker("testbed") and not item.get_closest_marker("molecule")
                and not item.get_closest_marker("xdist_group")):
            item.add_marker(pytest.mark.xdist_group("sandboxes"))


def pytest_collection_finish(session: pytest.Session) -> None:
    selected = any(item.get_closest_marker("molecule") for item in session.items)
    session.config.stash[_MOLECULE_SELECTED] = selected


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Under pytest-xdist the workers collect: the controller learns from their test ids."""
    if any(nodeid.startswith("tests/test_molecule.py") for nodeid in ids):
        node.config.stash[_MOLECULE_SELECTED] = True


class _AnyTagLoader(yaml.SafeLoader):
    """Reads Ansible YAML (!vault, !unsafe ...) far enough to find task names and tags."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def molecule_notest_tasks() -> list[str]:
    """'file: task name' for each task or block tagged molecule-notest (Molecule never runs them)."""
    found: list[str] = []

    def walk(node: object, path: Path) -> None:
        if isinstance(node, list):
            for child in node:
                walk(child, path)
        elif isinstance(node, dict):
            tags = node.get("tags")
            tags = tags.split(",") if isinstance(tags, str) else tags or []
            if "molecule-notest" in [str(tag).strip() for tag in tags]:
                found.append(f"{path.relative_to(ROOT)}: {node.get('name', '(unnamed)')}")
            for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
                walk(node.get(key), path)

    for pattern in ("roles/*/tasks/*.yml", "roles/*/handlers/*.yml", "playbooks/*.yml", "molecule/*/*.yml",
                    "molecule/*/tasks/*.yml"):
        for path in sorted(ROOT.glob(pattern)):
            if "molecule-notest" in path.read_text(errors="replace"):
                walk(yaml.load(path.read_text(), Loader=_AnyTagLoader), path)
    return found


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    seen = config.stash.get(_SEEN, [])
    if seen:
        terminalreporter.section(f"skips allowed by {SHOWN_SKIPS}")
        for nodeid, reason, rule in seen:
            terminalreporter.line(f"{nodeid}: {reason}  -- allowed: {rule.why}")
    if config.stash.get(_MOLECULE_SELECTED, False):
        terminalreporter.section("tasks Molecule does not run (tagged molecule-notest)")
        for line in molecule_notest_tasks():
            terminalreporter.line(line)
        terminalreporter.line("No CI job runs these; tests/gpu/run-gpu-checks.sh (manual, on a GPU machine) "
                              "covers part of them: see its header.")
