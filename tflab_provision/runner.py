"""The one place that talks to ansible-runner.

Every argument handed to `ansible_runner.run_async` is built by `runner_kwargs`, so tests can
check exactly what crosses that boundary. Secrets never travel as arguments: variables that
hold them come from files (`-e @file`, mode 0600 or vault-encrypted) and `suppress_env_files`
keeps ansible-runner from writing its own env/ copies into the run directory.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shlex
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ansible_runner

from .accelerator import Accelerator
from .events import Event, RunProgress, consume, worth_writing
from .report import RunResult, TaskFailure, exit_code_for
from .state import StateDir

log = logging.getLogger(__name__)

VAULT_HEADER = b"$ANSIBLE_VAULT"
RUN_MARKER_ENV = "TFLAB_RUN_ID"


class ConfigError(ValueError):
    """Bad usage or configuration, found before any host is contacted (exit code 1)."""


# Where the wheel installs the tflab.provision collection: beside this package, in site-packages
# (tflab_provision/collection.py, setup.py), where Ansible finds collections on sys.path.
PACKAGED_COLLECTION = Path("ansible_collections") / "tflab" / "provision"


@dataclass(frozen=True)
class Project:
    """Where playbooks/, roles/ and ansible.cfg are: a checkout (also an AWX project), or the
    tflab.provision collection (the one the wheel installed, or one given by --project-dir).
    Both have roles/, playbooks/site.yml and an ansible.cfg; the collection's has no checkout paths
    and its plugins are found by FQCN."""

    root: Path

    @property
    def is_collection(self) -> bool:
        return (self.root / "galaxy.yml").is_file() or (self.root / "MANIFEST.json").is_file()

    @property
    def ansible_cfg(self) -> Path:
        return self.root / "ansible.cfg"

    @property
    def workdir(self) -> Path:
        """Where the default inventory (inventory/lab) lives: the checkout, or for the packaged
        collection the current directory (nothing of the user's goes into site-packages)."""
        return Path.cwd() if self.is_collection else self.root

    def envvars(self) -> dict[str, str]:
        """What ansible-playbook needs to find this project's content. A collection's own
        ansible_collections/ comes first, so the copy tflab was pointed at runs, not another
        installed version; the usual paths follow (the `ansible` package's are on sys.path)."""
        if not self.is_collection:
            return {}
        default = os.pathsep.join(["~/.ansible/collections", "/usr/share/ansible/collections"])
        paths = [str(self.root.parents[2]), os.environ.get("ANSIBLE_COLLECTIONS_PATH", default)]
        return {"ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(paths)}

    def playbook(self, name: str) -> Path:
        path = Path(name)
        if not path.is_absolute():
            path = self.root / (name if "/" in name else f"playbooks/{name}")
        if not path.is_file():
            raise ConfigError(f"playbook {name!r} not found (looked for {path})")
        return path

    @classmethod
    def locate(cls, explicit: Path | None = None) -> Project:
        """The project dir: --project-dir, $TFLAB_PROJECT_DIR, the checkout holding this package,
        cwd, else the collection installed beside this package (a wheel install, no checkout)."""
        candidates = [explicit] if explicit else []
        if os.environ.get("TFLAB_PROJECT_DIR"):
            candidates.append(Path(os.environ["TFLAB_PROJECT_DIR"]))
        here = Path(__file__).resolve().parent.parent
        candidates += [here, Path.cwd()]
        if not explicit:
            candidates.append(here / PACKAGED_COLLECTION)
        for candidate in candidates:
            if candidate and (candidate / "playbooks" / "site.yml").is_file():
                return cls(candidate.resolve())
        raise ConfigError(
            "no tflab project found: install the tflab-provision wheel (it carries the tflab.provision "
            "collection), run from a checkout, or pass --project-dir (a checkout or the collection)"
        )


@dataclass(frozen=True)
class RunRequest:
    """What to run. Only non-secret values may sit in `extra_vars` (they become arguments)."""

    playbook: str
    inventories: tuple[Path, ...]
    limit: str | None = None
    tags: tuple[str, ...] = ()
    skip_tags: tuple[str, ...] = ()
    extra_vars: Mapping[str, Any] = field(default_factory=dict)
    vars_files: tuple[Path, ...] = ()
    vault_password_file: Path | None = None
    check: bool = False
    diff: bool = False
    flush_cache: bool = False
    forks: int | None = None
    verbosity: int = 0


def check_secret_file(path: Path) -> None:
    """Refuse a vars or vault-password file that others can read, unless vault-encrypted."""
    if not path.is_file():
        raise ConfigError(f"file {path} does not exist")
    with path.open("rb") as fh:
        if fh.read(len(VAULT_HEADER)) == VAULT_HEADER:
            return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} is readable by others (mode {mode:04o}); it may hold secrets: "
            f"chmod 600 {path}, or encrypt it with ansible-vault"
        )


def ansible_args(request: RunRequest) -> list[str]:
    """The ansible-playbook options for a request (the playbook and inventory go separately)."""
    args: list[str] = []
    if request.limit:
        args += ["--limit", request.limit]
    if request.tags:
        args += ["--tags", ",".join(request.tags)]
    if request.skip_tags:
        args += ["--skip-tags", ",".join(request.skip_tags)]
    for vars_file in request.vars_files:
        args += ["-e", f"@{vars_file}"]
    if request.vault_password_file:
        args += ["--vault-password-file", str(request.vault_password_file)]
    if request.check:
        args.append("--check")
    if request.diff:
        args.append("--diff")
    if request.flush_cache:
        args.append("--flush-cache")
    if request.forks:
        args += ["--forks", str(request.forks)]
    if request.verbosity:
        args.append("-" + "v" * request.verbosity)
    return args


def validate_request(request: RunRequest, project: Project, state: StateDir | None = None) -> None:
    """Everything checkable on the controller, before a run directory or a host is touched."""
    for path in request.vars_files:
        check_secret_file(path)
    if request.vault_password_file:
        check_secret_file(request.vault_password_file)
    for inventory in request.inventories:
        if not inventory.exists():
            raise ConfigError(f"inventory {inventory} does not exist")
    project.playbook(request.playbook)
    if request.vars_files:
        validate_vars_files(request, project, state)


def validate_vars_files(request: RunRequest, project: Project, state: StateDir | None = None) -> None:
    """-e files hold what the inventory holds (often the whole workspace list, with its secrets):
    the same schema, per file, then merged over each host's variables as Ansible does (extra
    vars win). Raises InventoryInvalid; a verdict is kept in the state dir like the inventory's."""
    from .inventory import validate_inventory, validation_key

    facts = state.facts if state is not None else None
    key = validation_key(request.inventories, project.root, facts, request.vars_files,
                         request.vault_password_file)
    if state is not None and state.knows_valid(key):
        return
    validate_inventory(request.inventories, project.root, facts, request.vars_files,
                       request.vault_password_file)
    if state is not None:
        state.remember_valid(key)


# How soon Ctrl-C reaches a running playbook (seconds). ansible-runner looks at cancel_callback
# only when its pexpect wait returns: every pexpect_timeout seconds, 5 by default.
CANCEL_POLL_S = 0.2


def write_runner_settings(run_dir: Path) -> None:
    """env/settings of the run (no secrets in it). A `settings=` argument would be dropped:
    ansible-runner 2.4 replaces it with {} when this file is missing (config/_base.py)."""
    env = run_dir / "env"
    env.mkdir(mode=0o700, exist_ok=True)
    (env / "settings").write_text(json.dumps({"pexpect_timeout": CANCEL_POLL_S}))


def runner_kwargs(request: RunRequest, project: Project, state: StateDir, run_dir: Path,
                  accelerator: Accelerator | None = None) -> dict[str, Any]:
    """Every keyword handed to ansible_runner.run_async, and nothing else."""
    validate_request(request, project, state)
    accelerator = accelerator or Accelerator()
    envvars = {
        "ANSIBLE_CONFIG": str(project.ansible_cfg),
        # ansible-runner turns host key checking off unless told; keep Ansible's (safe) default.
        "ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
        "ANSIBLE_NOCOLOR": "1",
        # Marks every process of this run, so a cancelled run can be reaped completely.
        RUN_MARKER_ENV: run_dir.name,
        # ansible-playbook from the same environment as this package, even when not on PATH.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **project.envvars(),
        **accelerator.envvars,
    }
    return {
        "private_data_dir": str(run_dir),
        "project_dir": str(project.root),
        "playbook": str(project.playbook(request.playbook)),
        "inventory": [str(p.resolve()) for p in request.inventories],
        "cmdline": shlex.join(ansible_args(request)),
        "extravars": {**request.extra_vars, **accelerator.extra_vars} or None,
        "envvars": envvars,
        "suppress_env_files": True,
        "quiet": True,
        "ident": "run",
        # A persistent fact cache (ansible-runner joins an absolute path as is).
        "fact_cache": str(state.facts),
        "fact_cache_type": "jsonfile",
    }


@dataclass
class PlaybookRunner:
    """Runs one playbook through ansible-runner, feeding events to a single consumer."""

    project: Project
    state: StateDir
    accelerator: Accelerator = field(default_factory=Accelerator)

    def run(
        self,
        request: RunRequest,
        cancel: threading.Event,
        on_update: Callable[[RunProgress], None] | None = None,
    ) -> RunResult:
        validate_request(request, self.project, self.state)
        run_dir = self.state.new_run_dir(Path(request.playbook).stem)
        kwargs = runner_kwargs(request, self.project, self.state, run_dir, self.accelerator)
        write_runner_settings(run_dir)
        events: queue.Queue[Event | None] = queue.Queue()
        progress = RunProgress()

        def enqueue(event: Event) -> bool:
            events.put(event)
            return worth_writing(event, request.verbosity)

        started_at = datetime.now(timezone.utc)
        started = time.monotonic()
        thread, runner = ansible_runner.run_async(
            event_handler=enqueue, cancel_callback=cancel.is_set,
            finished_callback=lambda _runner: events.put(None), **kwargs
        )
        consume(events, progress, thread.is_alive, on_update)
        thread.join()
        if cancel.is_set():
            reap_run_processes(run_dir.name)
        scrub_environment(run_dir)
        status = str(runner.status)
        rc = runner.rc if isinstance(runner.rc, int) else None
        result = RunResult(
            playbook=request.playbook,
            status=status,
            exit_code=exit_code_for(status, rc, progress.hosts),
            started_at=started_at,
            duration_s=round(time.monotonic() - started, 3),
            private_data_dir=str(run_dir),
            hosts=progress.hosts,
            failures=progress.failures,
            retries=progress.retries,
            batches=[b for b in progress.batches if b],
            changes=progress.changes,
            reports=progress.reports,
            accelerator=self.accelerator.name,
            rc=rc,
        )
        if status == "failed" and not progress.hosts:
            result.failures.append(_runner_error(run_dir))
        log.debug("run %s finished: %s rc=%s", run_dir, status, rc)
        return result


def _runner_error(run_dir: Path) -> TaskFailure:
    """ansible-playbook failed before any host ran (syntax, options): show its own words."""
    stdout = run_dir / "artifacts" / "run" / "stdout"
    text = stdout.read_text(errors="replace").strip() if stdout.exists() else ""
    lines = [line for line in text.splitlines() if line.strip()]
    return TaskFailure(host="controller", task="ansible-playbook",
                       message="\n".join(lines[-8:]) or "ansible-playbook failed to start")


def reap_run_processes(run_id: str, procfs: Path = Path("/proc")) -> list[int]:
    """Kill what a cancelled run left behind.

    ansible-runner kills ansible-playbook's process group, but Ansible's workers call setsid()
    and would live on; every process of the run carries RUN_MARKER_ENV in its environment.
    """
    marker = f"{RUN_MARKER_ENV}={run_id}".encode()
    killed: list[int] = []
    for entry in procfs.glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pid = int(entry.name)
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    if killed:
        log.info("reaped %d leftover process(es) of cancelled run %s", len(killed), run_id)
    return killed


def scrub_environment(run_dir: Path) -> None:
    """Drop environment values from ansible-runner's `command` artifact.

    ansible-runner records the whole process environment there; a controller's environment
    can hold credentials, so only the variable names are kept.
    """
    command = run_dir / "artifacts" / "run" / "command"
    if not command.is_file():
        return
    try:
        data = json.loads(command.read_text())
    except (OSError, json.JSONDecodeError):
        command.unlink(missing_ok=True)
        return
    if isinstance(data.get("env"), dict):
        data["env"] = sorted(data["env"])
        command.write_text(json.dumps(data))
