"""`tflab`: a thin command line over the library. Subcommands are registered in COMMANDS."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live

from . import accelerator, ca, sandbox
from .accelerator import Accelerator
from .events import RunProgress, render_progress
from .inventory import (
    InventoryInvalid,
    inventory_hosts,
    load_vars_file,
    merged_host_vars,
    port_settings,
    settings_of,
    validate_inventory,
    validation_key,
    workspace_ports,
    workspace_url,
)
from .report import ExitCode, RunResult, junit_xml, render_plan, render_reports, render_table
from .runner import ConfigError, PlaybookRunner, Project, RunRequest
from .state import StateDir, default_state_dir

log = logging.getLogger(__name__)

SITE_TAGS = ("preflight", "sshd", "driver", "docker", "toolkit", "firewall", "workspaces", "monitoring",
             "logs", "frontdoor")


@dataclass
class Context:
    args: argparse.Namespace
    project: Project
    state: StateDir
    out: Console
    err: Console
    accelerator: Accelerator = field(default_factory=Accelerator)

    def runner(self) -> PlaybookRunner:
        return PlaybookRunner(self.project, self.state, self.accelerator)


Handler = Callable[[Context], int]


@contextmanager
def cancellation() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set an event that ansible-runner's cancel_callback reads."""
    cancel = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        cancel.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield cancel
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def request_ca_dir(ctx: Context, inventories: tuple[Path, ...], vars_files: tuple[Path, ...] = (),
                   vault_password_file: Path | None = None) -> Path:
    """The lab CA dir: tflab_ca_dir (one value for the inventory and -e files), else <state>/ca."""
    return ca.ca_dir(ctx.state.root, settings_of("tflab_ca_dir", inventories, vars_files,
                                                 vault_password_file))


def with_ca_dir(ctx: Context, request: RunRequest) -> RunRequest:
    """Every playbook run gets the effective CA dir as the extra var tflab_ca_dir (a path, no
    secret): site.yml creates the CA there and signs each host's nginx certificate with it."""
    directory = request_ca_dir(ctx, request.inventories, request.vars_files, request.vault_password_file)
    return dataclasses.replace(request, extra_vars={**request.extra_vars, "tflab_ca_dir": str(directory)})


# A workspace line of the tf_workspace report: "alice: ssh -p 22001 alice@gpu01[  jupyter URL]",
# the URL https://…/alice/ behind the front door (earlier roles: the published http://…:port/).
_REPORT_LINE = re.compile(r"^(?P<name>[a-z_][a-z0-9_-]{0,31}): ssh (?P<ssh>.*?)"
                          r"(?:\s+jupyter\s+(?P<url>https?://\S*))?$")


def add_workspace_urls(ctx: Context, request: RunRequest, result: RunResult,
                       url_bases: Mapping[str, str] | None = None) -> None:
    """The HTTPS URL of each workspace a host reported, in its report line and in
    `workspace_urls`, and the lab CA's fingerprint once (`ca_fingerprint`). The URL is the
    role's own https one (what nginx serves), else computed as `workspace show` does (from the
    run's inventory and -e files) in place of an old published http port; url_bases (the
    demo's loopback port) override both."""
    reported = {h: r["workspaces"] for h, r in result.reports.items()
                if isinstance(r.get("workspaces"), list)}
    if not reported:
        return
    try:
        hostvars = merged_host_vars(request.inventories)
        extra: dict[str, Any] = {}
        for path in request.vars_files:
            data = load_vars_file(path, request.vault_password_file)
            extra.update(data if isinstance(data, Mapping) else {})
        extra.update(request.extra_vars)
    except Exception as exc:  # the run is over: a report without URLs beats a traceback
        log.warning("workspace URLs left out of the report: %s", exc)
        return
    for host, lines in reported.items():
        effective = {**hostvars.get(host, {}), **extra}
        urls: dict[str, str] = {}
        rewritten: list[object] = []
        for line in lines:
            match = _REPORT_LINE.match(str(line))
            if not match:
                rewritten.append(line)
                continue
            name, reported_url = match["name"], match["url"] or ""
            base = (url_bases or {}).get(host)
            urls[name] = (f"{base}/{name}/" if base else reported_url if reported_url.startswith("https://")
                          else workspace_url(host, effective, name))
            rewritten.append(f"{name}: ssh {match['ssh']}  jupyter {urls[name]}")
        result.reports[host]["workspaces"] = rewritten
        if urls:
            result.workspace_urls[host] = urls
    if result.workspace_urls:
        lab_ca = ca.find_lab_ca(Path(str(request.extra_vars["tflab_ca_dir"])))
        result.ca_fingerprint = lab_ca.sha256_fingerprint if lab_ca else None


def execute(ctx: Context, request: RunRequest,
            render: Callable[[RunResult], None] | None = None,
            url_bases: Mapping[str, str] | None = None) -> RunResult:
    """Run a playbook with the live view (on a terminal) and print the outcome."""
    request = with_ca_dir(ctx, request)
    runner = ctx.runner()
    title = f"tflab · {request.playbook}"
    with cancellation() as cancel:
        if ctx.err.is_terminal and not ctx.args.json:
            with Live(render_progress(RunProgress(), title), console=ctx.err,
                      refresh_per_second=8, transient=False) as live:
                result = runner.run(request, cancel,
                                    lambda p: live.update(render_progress(p, title)))
        else:
            result = runner.run(request, cancel)
    if Path(request.playbook).name == "site.yml":
        add_workspace_urls(ctx, request, result, url_bases)
    ctx.state.save_failed_hosts(result.failed_hosts(), request.playbook)
    ctx.state.append_history({"started_at": result.started_at, "playbook": request.playbook,
                              "status": result.status, "exit_code": int(result.exit_code),
                              "duration_s": result.duration_s, "limit": request.limit,
                              "failed_hosts": result.failed_hosts()})
    if getattr(ctx.args, "junit", None):
        Path(ctx.args.junit).write_text(junit_xml(result))
    if ctx.args.json:
        ctx.out.print_json(result.model_dump_json())
    elif render:
        render(result)
    else:
        render_table(result, ctx.out)
        if result.exit_code == ExitCode.CANCELLED:
            ctx.out.print("[yellow]cancelled[/yellow]: the table shows what had finished; "
                          "re-run the same command to converge.")
    return result


DEFAULT_INVENTORY = Path("inventory") / "lab"


def inventory_sources(ctx: Context) -> tuple[Path, ...]:
    paths = tuple(Path(p) for p in ctx.args.inventory) or (ctx.project.workdir / DEFAULT_INVENTORY,)
    for path in paths:
        if not path.exists():
            raise ConfigError(f"inventory {path} does not exist; create one with "
                              f"`tflab init {DEFAULT_INVENTORY}` or pass -i PATH")
    return paths


def validated_inventory(ctx: Context) -> tuple[tuple[Path, ...], dict[str, dict[str, object]]]:
    """The inventory sources and their merged host vars, validated before anything runs
    (exit 1 names file, field, fix)."""
    paths = inventory_sources(ctx)
    vars_and_vault = _vars_and_vault(ctx)
    return paths, validate_inventory(paths, ctx.project.root, ctx.state.facts,
                                     vars_files=vars_and_vault["vars_files"],
                                     vault_password_file=vars_and_vault["vault_password_file"])


def inventories_from(ctx: Context) -> tuple[Path, ...]:
    """The inventory sources, validated before anything runs. An unchanged inventory (same
    files, roles, code and facts: see validation_key) keeps the verdict it had."""
    paths = inventory_sources(ctx)
    key = validation_key(paths, ctx.project.root, ctx.state.facts)
    if not ctx.state.knows_valid(key):
        validate_inventory(paths, ctx.project.root, ctx.state.facts)
        ctx.state.remember_valid(key)
    return paths


def limit_from(ctx: Context) -> str | None:
    limit: str | None = ctx.args.limit
    if getattr(ctx.args, "retry_failed", False):
        failed = ctx.state.load_failed_hosts()
        if not failed:
            raise ConfigError("--retry-failed: the last run left no failed hosts")
        limit = ",".join(failed)
    return limit


def cmd_apply(ctx: Context) -> int:
    a = ctx.args
    unknown = sorted(set(a.tags) - set(SITE_TAGS)) if a.playbook == "site.yml" else []
    if unknown:
        raise ConfigError(f"--tags: unknown tag(s) {', '.join(unknown)}; "
                          f"choose from {', '.join(SITE_TAGS)}")
    if a.validate_only:
        hosts = validated_inventory(ctx)[1]
        ctx.out.print(f"inventory valid: {len(hosts)} host(s): {', '.join(sorted(hosts))}")
        return int(ExitCode.OK)
    inventories = inventories_from(ctx)
    extra: dict[str, object] = {}
    if a.serial:
        extra["tflab_serial"] = a.serial
    if a.max_fail_percent is not None:
        extra["tflab_max_fail_percent"] = a.max_fail_percent
    request = RunRequest(
        playbook=a.playbook, inventories=inventories, limit=limit_from(ctx),
        tags=tuple(a.tags), skip_tags=tuple(a.skip_tags), extra_vars=extra,
        flush_cache=a.flush_cache, forks=a.forks, verbosity=a.verbose, **_vars_and_vault(ctx),
    )
    return int(execute(ctx, request).exit_code)


def read_only_request(ctx: Context, playbook: str) -> RunRequest:
    a = ctx.args
    return RunRequest(playbook=playbook, inventories=inventories_from(ctx), limit=limit_from(ctx),
                      flush_cache=a.flush_cache, forks=a.forks, verbosity=a.verbose,
                      **_vars_and_vault(ctx))


def cmd_check(ctx: Context) -> int:
    """Preflight every host: a table of problems; exit 2 when any host has one."""
    result = execute(ctx, read_only_request(ctx, "check.yml"), lambda r: render_reports(
        r, ctx.out, "tflab check", ["os", "kernel", "gpus", "secure_boot", "free_gib", "problems"]))
    if result.exit_code != ExitCode.OK:
        return int(result.exit_code)
    has_problems = any(r.get("problems") for r in result.reports.values())
    return int(ExitCode.TASK_FAILED if has_problems else ExitCode.OK)


def cmd_plan(ctx: Context) -> int:
    """site.yml in check + diff mode: per host, what would change. Changes nothing."""
    base = read_only_request(ctx, "site.yml")
    request = dataclasses.replace(base, check=True, diff=True, tags=tuple(ctx.args.tags),
                                  skip_tags=tuple(ctx.args.skip_tags))
    return int(execute(ctx, request, lambda r: render_plan(r, ctx.out)).exit_code)


def cmd_status(ctx: Context) -> int:
    """Fleet table: GPUs, driver, reboot pending, Docker runtime, firewall, workspaces and their live
    use (from Prometheus when the inventory has a monitoring host)."""
    result = execute(ctx, read_only_request(ctx, "status.yml"), lambda r: render_reports(
        r, ctx.out, "tflab status",
        ["gpus", "driver", "reboot", "docker_runtime", "firewall", "workspaces", "usage"]))
    return int(result.exit_code)


WORKSPACE_COLUMNS = ("host", "name", "uid", "state", "gpus", "ssh", "url")


def _workspace_table(ctx: Context, rows: list[dict[str, object]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in WORKSPACE_COLUMNS:
        # A URL cut or folded is no URL to copy: the other columns wrap instead.
        widest = max((len(str(row[column] or "-")) for row in rows), default=0)
        table.add_column(column, no_wrap=column == "url", min_width=widest if column == "url" else None)
    for row in rows:
        table.add_row(*(str(row[c] or "-") for c in WORKSPACE_COLUMNS))
    ctx.out.print(table)


def ca_dir_of(ctx: Context) -> Path:
    """The CA dir of this command's inventory (-i, else the default one when it exists) and -e files."""
    default = ctx.project.workdir / DEFAULT_INVENTORY
    sources = inventory_sources(ctx) if ctx.args.inventory or default.exists() else ()
    vault = _vars_and_vault(ctx)
    return request_ca_dir(ctx, sources, vault["vars_files"], vault["vault_password_file"])


def _trust_hint(lab_ca: ca.LabCA | None, directory: Path) -> str:
    if lab_ca is None:
        return f"no lab CA yet at {directory / ca.CA_CERT}: tflab apply creates it"
    return (f"lab CA SHA-256 fingerprint: {lab_ca.sha256_fingerprint} "
            f"(trust the URLs with it: tflab ca show > lab-ca.crt)")


def workspace_rows(ctx: Context) -> tuple[list[dict[str, object]], ca.LabCA | None, Path]:
    from . import workspaces as ws_edit  # ruamel.yaml: only the workspace commands need it

    hosts = validated_inventory(ctx)[1]
    directory = ca_dir_of(ctx)
    lab_ca = ca.find_lab_ca(directory)
    rows = ws_edit.workspace_rows(hosts, workspace_ports(ctx.project.root),
                                  {h: port_settings(v) for h, v in hosts.items()},
                                  lab_ca.sha256_fingerprint if lab_ca else None)
    return rows, lab_ca, directory


def cmd_workspace_list(ctx: Context) -> int:
    rows, lab_ca, directory = workspace_rows(ctx)
    if ctx.args.json:
        ctx.out.print_json(data=rows)
    else:
        _workspace_table(ctx, rows, "workspaces (from the inventory)")
        ctx.out.print(_trust_hint(lab_ca, directory), markup=False)
    return int(ExitCode.OK)


def cmd_workspace_show(ctx: Context) -> int:
    all_rows, lab_ca, directory = workspace_rows(ctx)
    rows = [r for r in all_rows if r["host"] == ctx.args.host and r["name"] == ctx.args.name]
    if not rows:
        raise ConfigError(f"no workspace {ctx.args.name!r} on host {ctx.args.host!r} in the inventory")
    row = dict(rows[0])
    if ctx.args.reveal_secret:
        row["jupyter_secret"] = reveal_jupyter_secret(ctx, str(row["host"]), str(row["name"]))
    if ctx.args.json:
        ctx.out.print_json(data=row)
    else:
        for key, value in row.items():
            ctx.out.print(f"{key:>14}: {'-' if value is None else value}", markup=False)
        ctx.out.print(_trust_hint(lab_ca, directory), markup=False)
    return int(ExitCode.OK)


def reveal_jupyter_secret(ctx: Context, host: str, name: str) -> str:
    """Fetch the workspace's Jupyter token from its 0600 file on the host into a 0600 local file.

    The token never passes through task results (fetch returns checksums only), so it stays out
    of the run's artifacts.
    """
    secret_dir = ctx.state.root / "secrets"
    secret_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    local = secret_dir / f"{host}-{name}.token"
    request = RunRequest(playbook="workspace-secret.yml", inventories=inventories_from(ctx),
                         limit=host, extra_vars={"tflab_secret_workspace": name,
                                                 "tflab_secret_dest": str(local)},
                         **_vars_and_vault(ctx))
    result = ctx.runner().run(request, threading.Event())
    if result.exit_code != ExitCode.OK or not local.exists():
        messages = "; ".join(f.message for f in result.failures) or "no token file on the host"
        raise ConfigError(f"could not read the Jupyter secret of {name} on {host}: {messages}")
    local.chmod(0o600)
    return local.read_text().strip()


def _vars_and_vault(ctx: Context) -> dict[str, Any]:
    """The -e vars files and vault password file of this command, as RunRequest fields."""
    vault = getattr(ctx.args, "vault_password_file", None)
    return {"vars_files": tuple(Path(p) for p in getattr(ctx.args, "vars_file", [])),
            "vault_password_file": Path(vault) if vault else None}


def _apply_workspaces(ctx: Context, host: str, extra_vars: dict[str, object] | None = None) -> int:
    """Apply only what a workspace change touches on that host: its firewall rules, containers
    and front-door route (https://<host>/<name>/)."""
    request = RunRequest(playbook="site.yml", inventories=inventories_from(ctx), limit=host,
                         tags=("workspaces", "firewall", "frontdoor"), extra_vars=extra_vars or {},
                         **_vars_and_vault(ctx))
    return int(execute(ctx, request).exit_code)


def cmd_workspace_rotate_secret(ctx: Context) -> int:
    """Replace a workspace's generated Jupyter token; the container restarts with the new one."""
    a = ctx.args
    if not any(r["host"] == a.host and r["name"] == a.name for r in workspace_rows(ctx)[0]):
        raise ConfigError(f"no workspace {a.name!r} on host {a.host!r} in the inventory")
    ctx.err.print(f"rotating the Jupyter token of {a.name} on {a.host}; "
                  f"`tflab workspace show {a.host} {a.name} --reveal-secret` prints the new one")
    return _apply_workspaces(ctx, a.host, {"tf_workspace_rotate_secrets": [a.name]})


def _edit_host_vars(ctx: Context, change: Callable[[object], None]) -> None:
    from . import workspaces as ws_edit

    inventory_dir = (Path(ctx.args.inventory[0]) if ctx.args.inventory
                     else ctx.project.workdir / DEFAULT_INVENTORY)
    path = ws_edit.host_vars_file(inventory_dir, ctx.args.host, inventory_hosts(inventory_sources(ctx)))
    before = path.read_text() if path.exists() else None
    with ws_edit.edited(path) as data:
        change(data)
    try:
        inventories_from(ctx)
    except (InventoryInvalid, ConfigError):
        if before is None:
            path.unlink()
        else:
            path.write_text(before)
        raise


def cmd_workspace_add(ctx: Context) -> int:
    a = ctx.args
    workspace: dict[str, object] = {"name": a.name, "uid": a.uid}
    if a.gpus is not None:
        workspace["gpus"] = a.gpus if a.gpus in ("all", "none") else [int(g) for g in a.gpus.split(",")]
    for key in ("memory", "cpus", "ssh_port", "jupyter_port"):
        if getattr(a, key) is not None:
            workspace[key] = getattr(a, key)
    if a.key:
        workspace["authorized_keys"] = [line.strip() for k in a.key
                                        for line in Path(k).read_text().splitlines() if line.strip()]
    from . import workspaces as ws_edit

    _edit_host_vars(ctx, lambda data: ws_edit.add_workspace(data, workspace))
    ctx.err.print(f"added {a.name} to {a.host}'s inventory; applying workspaces and firewall there")
    return _apply_workspaces(ctx, a.host) if not a.no_apply else int(ExitCode.OK)


def cmd_workspace_remove(ctx: Context) -> int:
    a = ctx.args
    if a.purge and not a.yes_delete_data:
        raise ConfigError("--purge deletes the user's data for good: add --yes-delete-data to confirm")
    from . import workspaces as ws_edit

    _edit_host_vars(ctx, lambda data: ws_edit.remove_workspace(data, a.name, a.purge))
    ctx.err.print(f"marked {a.name} absent on {a.host} "
                  f"({'data will be deleted' if a.purge else 'data will be archived'}); applying")
    return _apply_workspaces(ctx, a.host) if not a.no_apply else int(ExitCode.OK)


def sandbox_docker() -> sandbox.Docker:
    docker = sandbox.Docker()
    sandbox.require_engine(docker)
    return docker


def cmd_sandbox_image(ctx: Context) -> int:
    docker = sandbox_docker()
    recipe = sandbox.BaseImageRecipe()
    ctx.err.print(f"bare-host image {recipe.tag} (debootstrap {recipe.suite}; cached by recipe)")
    ctx.out.print(sandbox.ensure_base_image(docker, recipe))
    return 0


def sandbox_privileged(ctx: Context) -> bool:
    """--privileged / --no-privileged, else the test bed's switch TFLAB_TESTBED_PRIVILEGED."""
    chosen: bool | None = ctx.args.privileged
    return sandbox.privileged_from_env() if chosen is None else chosen


def sandbox_up(ctx: Context, prefix: str, count: int, privileged: bool,
               extra_ports: tuple[int, ...] = ()) -> Path:
    """Hosts PREFIX-1..COUNT and their own inventory file (other prefixes' files untouched)."""
    names = [f"{prefix}-{i}" for i in range(1, count + 1)]
    docker = sandbox_docker()
    image = sandbox.ensure_base_image(docker, sandbox.BaseImageRecipe())
    key = sandbox.ensure_ssh_key(ctx.state.root)
    public_key = key.with_suffix(".pub").read_text()
    hosts = [sandbox.start_host(docker, n, image, public_key, privileged=privileged,
                                extra_ports=extra_ports) for n in names]
    return sandbox.write_inventory(ctx.state.root, prefix, hosts, key)


def cmd_sandbox_up(ctx: Context) -> int:
    ctx.out.print(sandbox_up(ctx, ctx.args.prefix, ctx.args.count, sandbox_privileged(ctx)))
    return 0


def cmd_sandbox_down(ctx: Context) -> int:
    docker = sandbox_docker()
    names = docker.run("ps", "-a", "--filter", f"label={sandbox.SANDBOX_LABEL}",
                       "--format", "{{.Names}}").split()
    for name in names:
        if name.startswith(f"{ctx.args.prefix}-"):
            sandbox.remove_host(docker, name)
            ctx.err.print(f"removed {name}")
    sandbox.inventory_path(ctx.state.root, ctx.args.prefix).unlink(missing_ok=True)
    return 0


DEMO_PREFIX = "tflab-sandbox"
DEMO_HOST = f"{DEMO_PREFIX}-1"
DEMO_USER = "demo"
# Published to loopback: the demo workspace's SSH port on the sandbox host (uid 2001 → 22001) and
# the host's HTTPS front door (nginx), which serves its Jupyter under /demo/.
DEMO_SSH_PORT, DEMO_HTTPS_PORT = 22001, 443
DEMO_OS_ARCHIVE = "/var/lib/tflab/images/debian-bullseye.tar"
DEMO_CA = "/etc/tflab/controller-ca.pem"


def demo_vars(ctx: Context, public_key: str, with_ca: bool) -> Path:
    """The demo's workspace, as a 0600 vars file: one user, the TensorFlow image built from PyPI
    on the sandbox host (as in a lab without Docker Hub), its OS image from an offline archive."""
    data = {
        "tflab_workspaces": [{"name": DEMO_USER, "uid": 2001, "cpus": 1, "memory": "2g",
                              "shm_size": "512m", "authorized_keys": [public_key.strip()]}],
        "tf_workspace_image_source": "pypi",
        "tf_workspace_pypi_os_image": sandbox.WORKSPACE_OS_RECIPE.tag,
        "tf_workspace_image_archives": [{"path": DEMO_OS_ARCHIVE, "name": sandbox.WORKSPACE_OS_RECIPE.tag}],
        "tf_workspace_extra_ca_certs": [DEMO_CA] if with_ca else [],
        "tf_workspace_gpu_support": False,
        # The URL is https://127.0.0.1:<published port>/demo/: the certificate must name 127.0.0.1.
        "tflab_public_name": "127.0.0.1",
        "tflab_tls_extra_names": ["localhost"],
    }
    path = ctx.state.root / "sandbox" / "demo-vars.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    return path


def cmd_demo(ctx: Context) -> int:
    """The embedded default: a sandbox host, the real site.yml, one TensorFlow workspace."""
    ctx.err.print("[bold]tflab demo[/bold]: a local sandbox host stands in for a GPU server")
    docker = sandbox_docker()
    inventory = sandbox_up(ctx, DEMO_PREFIX, 1, sandbox_privileged(ctx),
                           extra_ports=(DEMO_SSH_PORT, DEMO_HTTPS_PORT))
    os_image = sandbox.ensure_base_image(docker, sandbox.WORKSPACE_OS_RECIPE)
    sandbox.copy_image_to_host(docker, DEMO_HOST, os_image, DEMO_OS_ARCHIVE)
    # This machine's CA bundle, so pip in the image build trusts a TLS-inspecting proxy too.
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():
        docker.run("exec", DEMO_HOST, "mkdir", "-p", str(Path(DEMO_CA).parent))
        docker.run("cp", str(bundle), f"{DEMO_HOST}:{DEMO_CA}")
    key = sandbox.ensure_ssh_key(ctx.state.root)
    extra = demo_vars(ctx, key.with_suffix(".pub").read_text(), bundle.exists())
    sandbox_group = ctx.project.root / "inventory" / "sandbox"
    request = RunRequest(playbook="site.yml", inventories=(sandbox_group, inventory),
                         vars_files=(extra,), verbosity=ctx.args.verbose)
    # Reached through Docker's loopback port, not 443: the report's URLs say so too.
    https_base = f"https://127.0.0.1:{sandbox.published_port(docker, DEMO_HOST, DEMO_HTTPS_PORT)}"
    result = execute(ctx, request, url_bases={DEMO_HOST: https_base})
    if result.exit_code == ExitCode.OK and not ctx.args.json:
        ssh_port = sandbox.published_port(docker, DEMO_HOST, DEMO_SSH_PORT)
        url = f"{https_base}/{DEMO_USER}/"
        state = f" --state-dir {ctx.args.state_dir}" if ctx.args.state_dir else ""
        fingerprint = f" (SHA-256 {result.ca_fingerprint})" if result.ca_fingerprint else ""
        ctx.out.print(
            f"\nThe workspace of user '{DEMO_USER}' runs on {DEMO_HOST}:\n"
            f"  ssh -p {ssh_port} -i {key} {DEMO_USER}@127.0.0.1\n"
            f"  Jupyter: {url}  (token: docker exec {DEMO_HOST} "
            f"cat /srv/tflab/.tflab/{DEMO_USER}/jupyter/token)\n"
            f"Trust the lab CA{fingerprint} that signed the URL's certificate:\n"
            f"  tflab ca show{state} > lab-ca.crt; curl --cacert lab-ca.crt {url}api\n"
            f"Re-run the provisioning: tflab apply -i {sandbox_group} -i {inventory} -e {extra}{state}\n"
            "Remove the sandbox: tflab sandbox down", markup=False, highlight=False)
    return int(result.exit_code)


def cmd_ca_show(ctx: Context) -> int:
    """The lab CA certificate users install to trust their workspace URLs (never its key).

    The PEM alone goes to stdout, so `tflab ca show > lab-ca.crt` is the file to install; the
    fingerprint, subject and expiry go to stderr (compare the fingerprint out of band)."""
    lab_ca = ca.load_lab_ca(ca_dir_of(ctx))
    if ctx.args.json:
        ctx.out.print_json(data=lab_ca.as_json())
        return int(ExitCode.OK)
    sys.stdout.write(lab_ca.pem)
    sys.stdout.flush()
    ctx.err.print(f"{lab_ca.path}\n  SHA-256 fingerprint: {lab_ca.sha256_fingerprint}\n"
                  f"  subject: {lab_ca.subject}\n  expires: {lab_ca.not_after.isoformat()}", markup=False)
    if lab_ca.expired:
        ctx.err.print("[red]expired[/red]: browsers and curl refuse it; renew the lab CA on the controller")
    return int(ExitCode.OK)


def cmd_init(ctx: Context) -> int:
    """Scaffold an inventory from the commented example."""
    import shutil

    target: Path = ctx.args.directory
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} exists and is not empty; choose a new directory")
    shutil.copytree(ctx.project.root / "inventory" / "example", target, dirs_exist_ok=True)
    ctx.out.print(f"wrote {target}: edit hosts.yml, group_vars/all.yml and host_vars/, then run "
                  f"`tflab check -i {target}`")
    return int(ExitCode.OK)


def cmd_audit_logins(ctx: Context) -> int:
    """Who logged into which workspace, when, from where: SSH and Jupyter logins from the journal
    (the central log host's when the inventory has one). Changes nothing."""
    from . import audit

    try:
        since = audit.parse_since(ctx.args.since)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    request = read_only_request(ctx, "audit.yml")
    request = dataclasses.replace(request, extra_vars={**request.extra_vars,
                                                       "tflab_audit_since": str(int(since.timestamp()))})
    as_json = bool(ctx.args.json)

    def render(result: RunResult) -> None:
        logins = audit.logins_from_reports(result.reports)
        if as_json:
            ctx.out.print_json(data=[login.as_json() for login in logins])
        else:
            title = f"tflab audit logins since {since.isoformat(timespec='minutes')}"
            audit.render_logins(logins, ctx.out, title)
        if result.exit_code != ExitCode.OK:
            render_table(result, ctx.err)

    # execute() prints the run's own JSON for --json; here the records are the answer.
    quiet = dataclasses.replace(ctx, args=argparse.Namespace(**{**vars(ctx.args), "json": False}))
    return int(execute(quiet, request, render).exit_code)


def inventory_options() -> argparse.ArgumentParser:
    """Where the inventory's variables come from: -i, -e and the vault password."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-i", "--inventory", action="append", default=[],
                   help="inventory file or directory (repeatable; default inventory/hosts.yml)")
    p.add_argument("-e", "--vars-file", action="append", default=[], metavar="FILE",
                   help="YAML vars file (mode 0600 or vault-encrypted); never secrets on the command line")
    p.add_argument("--vault-password-file", help="file holding the Ansible Vault password")
    return p


def run_options() -> argparse.ArgumentParser:
    """Flags shared by every command that runs a playbook."""
    p = argparse.ArgumentParser(add_help=False, parents=[inventory_options()])
    p.add_argument("-l", "--limit", help="only these hosts or groups (Ansible pattern)")
    p.add_argument("--forks", type=int, help="parallel hosts (default from ansible.cfg)")
    p.add_argument("--flush-cache", action="store_true", help="ignore cached facts")
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report (one suite per host)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more Ansible output in the artifacts")
    return p


def global_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="where runs, facts and keys are kept (default ~/.local/state/tflab)")
    p.add_argument("--project-dir", type=Path, default=None,
                   help="a tflab-provision checkout or the tflab.provision collection "
                        "(default: this checkout, else the collection installed with tflab)")
    p.add_argument("--accelerator", choices=accelerator.CHOICES, default=None,
                   help=f"run tasks through Mitogen (pip install 'tflab-provision[fast]'); "
                        f"default ${accelerator.ENV}, else none")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = global_options()
    runopts = run_options()
    parser = argparse.ArgumentParser(
        prog="tflab", description="Provision NVIDIA GPU servers as shared TensorFlow training nodes.",
        epilog="Exit codes: 0 ok · 1 bad usage or config (no host contacted) · 2 a task failed · "
               "3 a host unreachable · 4 cancelled.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tags = argparse.ArgumentParser(add_help=False)
    tags.add_argument("--tags", type=lambda s: [t for t in s.split(",") if t], default=[],
                      help=f"only these parts: {','.join(SITE_TAGS)}")
    tags.add_argument("--skip-tags", type=lambda s: [t for t in s.split(",") if t], default=[])

    p = sub.add_parser("apply", parents=[common, runopts, tags], help="provision hosts (site.yml)")
    p.add_argument("--serial", help="rolling batches: a host count or percentage")
    p.add_argument("--max-fail-percent", type=int, help="stop when more than this share of a batch fails")
    p.add_argument("--retry-failed", action="store_true", help="only the hosts that failed last time")
    p.add_argument("--playbook", default="site.yml", help="playbook under playbooks/ or a path")
    p.add_argument("--validate-only", action="store_true",
                   help="validate the inventory and stop (no host contacted)")
    p.set_defaults(handler=cmd_apply)

    p = sub.add_parser("check", parents=[common, runopts],
                       help="preflight: reachability, sudo, OS, disk, apt lock, GPUs, Secure Boot")
    p.set_defaults(handler=cmd_check)
    p = sub.add_parser("plan", parents=[common, runopts, tags],
                       help="what apply would change, per host (check + diff mode)")
    p.set_defaults(handler=cmd_plan)
    p = sub.add_parser("status", parents=[common, runopts],
                       help="fleet table: GPUs, driver, Docker runtime, workspaces")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("workspace", help="add, remove, list and show users' workspaces")
    wsub = p.add_subparsers(dest="workspace_command", required=True, metavar="ACTION")
    wp = wsub.add_parser("list", parents=[common, runopts], help="workspaces in the inventory")
    wp.set_defaults(handler=cmd_workspace_list)
    wp = wsub.add_parser("show", parents=[common, runopts], help="connection details of one workspace")
    wp.add_argument("host")
    wp.add_argument("name")
    wp.add_argument("--reveal-secret", action="store_true",
                    help="also fetch and print the Jupyter token (kept 0600 on the host)")
    wp.set_defaults(handler=cmd_workspace_show)
    wp = wsub.add_parser("rotate-secret", parents=[common, runopts],
                         help="replace a workspace's generated Jupyter token and restart it")
    wp.add_argument("host")
    wp.add_argument("name")
    wp.set_defaults(handler=cmd_workspace_rotate_secret)
    wp = wsub.add_parser("add", parents=[common, runopts], help="add a user's workspace and apply it")
    wp.add_argument("host")
    wp.add_argument("name")
    wp.add_argument("--uid", type=int, required=True)
    wp.add_argument("--gpus", help="'all', 'none' or indices like 0,1")
    wp.add_argument("--memory")
    wp.add_argument("--cpus", type=float)
    wp.add_argument("--ssh-port", type=int)
    wp.add_argument("--jupyter-port", type=int)
    wp.add_argument("--key", action="append", help="file with the user's SSH public key(s)")
    wp.add_argument("--no-apply", action="store_true", help="only edit the inventory")
    wp.set_defaults(handler=cmd_workspace_add)
    wp = wsub.add_parser("remove", parents=[common, runopts],
                         help="remove a workspace (its data is archived unless --purge)")
    wp.add_argument("host")
    wp.add_argument("name")
    wp.add_argument("--purge", action="store_true", help="delete the user's data instead of archiving")
    wp.add_argument("--yes-delete-data", action="store_true", help="confirm --purge")
    wp.add_argument("--no-apply", action="store_true", help="only edit the inventory")
    wp.set_defaults(handler=cmd_workspace_remove)

    p = sub.add_parser("ca", help="the lab CA that signs every host's HTTPS certificate")
    csub = p.add_subparsers(dest="ca_command", required=True, metavar="ACTION")
    cp = csub.add_parser("show", parents=[common, inventory_options()],
                         help="print the CA certificate (PEM on stdout) and its SHA-256 fingerprint")
    cp.set_defaults(handler=cmd_ca_show)

    p = sub.add_parser("audit", help="the login record: who logged into which workspace, when, from where")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    ap = asub.add_parser("logins", parents=[common, runopts],
                         help="SSH and Jupyter logins of the workspaces, accepted and refused (the journal)")
    ap.add_argument("--since", default="24h",
                    help="a span back from now (30m, 1h, 2d, 1w) or a time (2026-12-01T10:00, UTC); "
                         "default 24h")
    ap.set_defaults(handler=cmd_audit_logins)

    p = sub.add_parser("init", parents=[common], help="scaffold an inventory from the example")
    p.add_argument("directory", type=Path, nargs="?", default=DEFAULT_INVENTORY)
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("demo", parents=[common, runopts],
                       help="provision a local sandbox host end to end (no server needed)")
    p.add_argument("--privileged", action=argparse.BooleanOptionalAction, default=None,
                   help="run the sandbox host privileged (default: $TFLAB_TESTBED_PRIVILEGED, else not)")
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("sandbox", help="local bare-host containers for demos and tests")
    ssub = p.add_subparsers(dest="sandbox_command", required=True, metavar="ACTION")
    sp = ssub.add_parser("image", parents=[common], help="build the bare-host image (cached)")
    sp.set_defaults(handler=cmd_sandbox_image)
    sp = ssub.add_parser("up", parents=[common], help="start sandbox hosts, write their inventory")
    sp.add_argument("--count", type=int, default=1)
    sp.add_argument("--prefix", default=DEMO_PREFIX)
    sp.add_argument("--privileged", action=argparse.BooleanOptionalAction, default=None,
                    help="privileged hosts instead of the capability list "
                         "(default: $TFLAB_TESTBED_PRIVILEGED, else not)")
    sp.set_defaults(handler=cmd_sandbox_up)
    sp = ssub.add_parser("down", parents=[common], help="remove sandbox hosts")
    sp.add_argument("--prefix", default=DEMO_PREFIX)
    sp.set_defaults(handler=cmd_sandbox_down)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    # No emoji codes: a fingerprint (…:AB:…) or an IPv6 address (fd00::ab:1) would lose characters.
    err = Console(stderr=True, soft_wrap=True, emoji=False)
    try:
        try:
            accel = accelerator.resolve(getattr(args, "accelerator", None), environ=os.environ)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if accel.note:
            err.print(f"[yellow]note:[/yellow] {accel.note}")
        ctx = Context(args=args, project=Project.locate(args.project_dir),
                      state=StateDir(args.state_dir or default_state_dir()),
                      out=Console(soft_wrap=True, emoji=False), err=err, accelerator=accel)
        handler: Handler = args.handler
        return handler(ctx)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return int(ExitCode.USAGE)
    except InventoryInvalid as exc:
        err.print(f"[red]invalid inventory[/red] ({len(exc.problems)} problem(s); no host was contacted):")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False)
        return int(ExitCode.USAGE)
    except sandbox.SandboxError as exc:
        err.print(f"[red]sandbox:[/red] {exc}")
        return int(ExitCode.USAGE)


if __name__ == "__main__":
    sys.exit(main())
