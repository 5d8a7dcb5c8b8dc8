"""The typed result of a run, its exit code, and how it is shown (table, JSON, JUnit)."""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table


class ExitCode(enum.IntEnum):
    """Exit codes of every `tflab` command (documented in the README)."""

    OK = 0
    USAGE = 1  # bad usage or configuration: no host was contacted
    TASK_FAILED = 2
    UNREACHABLE = 3
    CANCELLED = 4


class HostStats(BaseModel):
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @property
    def state(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "ok"


class TaskFailure(BaseModel):
    host: str
    task: str
    message: str
    unreachable: bool = False
    # The known cause and next step, when the message is a known one (hints.py).
    hint: str | None = None


class TaskRetry(BaseModel):
    """A task that failed and was tried again (until/retries): visible even when it then passed."""

    host: str
    task: str
    attempt: int
    attempts: int  # how many it may have in all
    message: str


class RunResult(BaseModel):
    """What a run did: per-host stats, each failure, timing, where its artifacts are."""

    playbook: str
    status: str  # ansible-runner's final status: successful, failed, canceled, timeout
    exit_code: ExitCode
    started_at: datetime
    duration_s: float
    private_data_dir: str
    hosts: dict[str, HostStats] = Field(default_factory=dict)
    failures: list[TaskFailure] = Field(default_factory=list)
    retries: list[TaskRetry] = Field(default_factory=list)
    batches: list[list[str]] = Field(default_factory=list)
    changes: dict[str, list[str]] = Field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # host → workspace → its HTTPS URL, for the workspaces the run reported (site.yml).
    workspace_urls: dict[str, dict[str, str]] = Field(default_factory=dict)
    # The lab CA users trust those URLs with (`tflab ca show`), when it exists.
    ca_fingerprint: str | None = None
    # How tasks reached the hosts: "mitogen" (tflab_provision/accelerator.py) or "none".
    accelerator: str = "none"
    rc: int | None = None

    def failed_hosts(self) -> list[str]:
        return sorted(h for h, s in self.hosts.items() if s.state != "ok")

    def totals(self) -> HostStats:
        total = HostStats()
        for stats in self.hosts.values():
            for name in HostStats.model_fields:
                setattr(total, name, getattr(total, name) + getattr(stats, name))
        return total


def exit_code_for(status: str, rc: int | None, hosts: dict[str, HostStats]) -> ExitCode:
    """Map a finished run to the documented exit codes.

    An unreachable host outranks a failed task: the fix (network, SSH) comes first.
    A failure without any host result means the playbook, options or installation were bad.
    """
    if status == "canceled":
        return ExitCode.CANCELLED
    if any(s.unreachable for s in hosts.values()):
        return ExitCode.UNREACHABLE
    if any(s.failed for s in hosts.values()):
        return ExitCode.TASK_FAILED
    if status == "successful" and rc in (0, None):
        return ExitCode.OK
    if not hosts:
        # Failed before any host ran: bad playbook, options or missing ansible-playbook.
        return ExitCode.USAGE
    return ExitCode.TASK_FAILED


def render_table(result: RunResult, console: Console) -> None:
    table = Table(title=f"{result.playbook}: {result.status} in {result.duration_s:.1f} s")
    table.add_column("host")
    for name in ("ok", "changed", "failed", "unreachable", "skipped"):
        table.add_column(name, justify="right")
    table.add_column("state")
    for host in sorted(result.hosts):
        s = result.hosts[host]
        style = {"ok": "green", "failed": "red", "unreachable": "magenta"}[s.state]
        table.add_row(host, str(s.ok), str(s.changed), str(s.failed), str(s.unreachable),
                      str(s.skipped), f"[{style}]{s.state}[/{style}]")
    console.print(table)
    for retry in result.retries:
        console.print(f"[yellow]RETRIED[/yellow] {retry.host} · {retry.task} "
                      f"(attempt {retry.attempt} of {retry.attempts}): {retry.message}")
    print_failures(result, console)
    for host in sorted(result.reports):
        for key, value in result.reports[host].items():
            lines = value if isinstance(value, list) else [value]
            for line in lines:
                console.print(f"{host} · {key.replace('_', ' ')}: {line}")
    if result.ca_fingerprint:
        console.print(f"lab CA SHA-256 fingerprint: {result.ca_fingerprint} "
                      "(trust the URLs with it: tflab ca show > lab-ca.crt)", markup=False)
    if len(result.batches) > 1:
        for i, batch in enumerate(result.batches, 1):
            console.print(f"batch {i}: {', '.join(batch)}")
    console.print(f"artifacts: {result.private_data_dir}")


def print_failures(result: RunResult, console: Console) -> None:
    for failure in result.failures:
        kind = "UNREACHABLE" if failure.unreachable else "FAILED"
        console.print(f"[red]{kind}[/red] {failure.host} · {failure.task}: {failure.message}")
        if failure.hint:
            console.print(f"  [bold]→[/bold] {failure.hint}")


def junit_xml(result: RunResult) -> str:
    """One test suite per host; each failure a failed test case (for CI dashboards)."""
    suites = ET.Element("testsuites", name=result.playbook)
    for host in sorted(result.hosts):
        host_failures = [f for f in result.failures if f.host == host]
        suite = ET.SubElement(suites, "testsuite", name=host,
                              tests=str(max(1, len(host_failures))),
                              failures=str(len(host_failures)), time=f"{result.duration_s:.3f}")
        if not host_failures:
            ET.SubElement(suite, "testcase", name=f"{result.playbook} converged", classname=host)
        for failure in host_failures:
            case = ET.SubElement(suite, "testcase", name=failure.task, classname=host)
            ET.SubElement(case, "failure", message=failure.message).text = failure.message
    return ET.tostring(suites, encoding="unicode")


def merge_stats(into: dict[str, HostStats], stats_event: dict[str, dict[str, int]]) -> None:
    """Overwrite per-host counters with the authoritative playbook_on_stats numbers."""
    fields = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
              "skipped": "skipped", "rescued": "rescued", "ignored": "ignored"}
    hosts: Iterable[str] = {h for key in fields for h in (stats_event.get(key) or {})}
    for host in hosts:
        stats = HostStats(**{
            ours: int((stats_event.get(theirs) or {}).get(host, 0)) for theirs, ours in fields.items()
        })
        into[host] = stats


def render_reports(result: RunResult, console: Console, title: str, columns: list[str]) -> None:
    """A table of what a read-only play reported per host (check, status)."""
    table = Table(title=title)
    table.add_column("host")
    for column in columns:
        table.add_column(column.replace("_", " "))
    for host in sorted(result.hosts):
        report = result.reports.get(host)
        if report is None:
            state = result.hosts[host].state
            table.add_row(host, *([f"[red]{state}[/red]"] + [""] * (len(columns) - 1)))
            continue
        cells = []
        for column in columns:
            value = report.get(column, "")
            if isinstance(value, list):
                value = "\n".join(str(v) for v in value) or "-"
            cells.append(str(value))
        table.add_row(host, *cells)
    console.print(table)
    print_failures(result, console)


def render_plan(result: RunResult, console: Console) -> None:
    table = Table(title=f"plan: what {result.playbook} would change (nothing was changed)")
    table.add_column("host")
    table.add_column("changes", justify="right")
    table.add_column("items")
    for host in sorted(result.hosts):
        items = result.changes.get(host, [])
        table.add_row(host, str(len(items)), "\n".join(items) or "[green]up to date[/green]")
    console.print(table)
    print_failures(result, console)
