"""Turning ansible-runner events into run state, and showing that state live.

Events arrive on ansible-runner's thread; the handler only enqueues them. One consumer (the
CLI's main thread) applies them to `RunProgress` and redraws the view.
"""

from __future__ import annotations

import queue
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .hints import hint_for
from .report import HostStats, TaskFailure, TaskRetry, merge_stats

Event = Mapping[str, Any]


# Per-host routine: most of a fleet run's events, and all in the run's stdout file already.
_ROUTINE = frozenset({"runner_on_start", "runner_on_skipped", "runner_item_on_skipped"})


def worth_writing(event: Event, verbosity: int = 0) -> bool:
    """Whether ansible-runner should also write this event to the run's job_events/ directory.

    Changes, failures, retries, unreachable hosts, play and task starts and the final stats are
    kept; unchanged results and per-host starts are not (unless the run is verbose). Writing each
    one costs a JSON dump and a file per event, on the controller's busiest thread.
    """
    if verbosity > 0:
        return True
    kind = event.get("event", "")
    if kind in _ROUTINE:
        return False
    if kind in ("runner_on_ok", "runner_item_on_ok"):
        res = (event.get("event_data") or {}).get("res") or {}
        return bool(res.get("changed"))
    return True


def failure_message(res: Mapping[str, Any]) -> str:
    """The most useful single line of a failed task's result."""
    if "results" in res:  # a loop: the first failed item says more than "One or more items failed"
        for item in res["results"]:
            if isinstance(item, Mapping) and item.get("failed"):
                return failure_message(item)
    for key in ("msg", "stderr", "reason", "module_stderr", "stdout"):
        value = res.get(key)
        if value:
            text = str(value).strip()
            return text if len(text) <= 600 else text[:600] + "…"
    return "task failed (no message)"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def result_changed(event: Event, res: Mapping[str, Any]) -> bool:
    """Whether a task result changed something. A no_log result is censored down to one key
    (no "changed"); the line Ansible printed for it still says "changed: [host]"."""
    if "censored" in res and "changed" not in res:
        return _ANSI.sub("", str(event.get("stdout") or "")).lstrip().startswith("changed:")
    return bool(res.get("changed"))


@dataclass
class RunProgress:
    """Everything the run has reported so far, per host."""

    hosts: dict[str, HostStats] = field(default_factory=dict)
    current_task: dict[str, str] = field(default_factory=dict)
    failures: list[TaskFailure] = field(default_factory=list)
    retries: list[TaskRetry] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)
    # host → what changed (or would change, in check mode): "task" or "task [item]".
    changes: dict[str, list[str]] = field(default_factory=dict)
    # host → data returned by tasks named "tflab report …" (check and status plays).
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    play: str = ""
    task: str = ""
    finished: bool = False
    _final_stats: bool = False

    def host(self, name: str) -> HostStats:
        if name not in self.hosts:
            self.hosts[name] = HostStats()
        if self.batches and name not in self.batches[-1]:
            self.batches[-1].append(name)
        return self.hosts[name]

    def apply(self, event: Event) -> None:
        kind = event.get("event", "")
        data: Mapping[str, Any] = event.get("event_data") or {}
        host = data.get("host") or ""
        task = str(data.get("task") or "").strip()
        res: Mapping[str, Any] = data.get("res") or {}
        if kind == "playbook_on_play_start":
            self.play = str(data.get("play") or data.get("name") or "")
            self.batches.append([])
        elif kind == "playbook_on_task_start":
            self.task = task
        elif kind == "runner_on_start" and host:
            self.host(host)
            self.current_task[host] = task
        elif kind == "runner_on_ok" and host:
            stats = self.host(host)
            stats.ok += 1
            changed = result_changed(event, res)
            stats.changed += changed
            if changed and "results" not in res:
                self.changes.setdefault(host, []).append(task)
            if task.lower().startswith("tflab report") and isinstance(res.get("tflab_report"), Mapping):
                self.reports.setdefault(host, {}).update(res["tflab_report"])
        elif kind == "runner_item_on_ok" and host and result_changed(event, res):
            label = res.get("_ansible_item_label", res.get("item", ""))
            self.changes.setdefault(host, []).append(f"{task} [{label}]")
        elif kind == "runner_on_skipped" and host:
            self.host(host).skipped += 1
        elif kind == "runner_on_failed" and host:
            stats = self.host(host)
            if data.get("ignore_errors"):
                stats.ignored += 1
            else:
                stats.failed += 1
                message = failure_message(res)
                self.failures.append(TaskFailure(host=host, task=task, message=message,
                                                 hint=hint_for(message)))
        elif kind == "runner_retry" and host:
            self.retries.append(TaskRetry(host=host, task=task, attempt=int(res.get("attempts") or 1),
                                          attempts=int(res.get("retries") or 0),
                                          message=failure_message(res)))
        elif kind == "runner_on_unreachable" and host:
            self.host(host).unreachable += 1
            self.failures.append(TaskFailure(host=host, task=task, unreachable=True,
                                             message=failure_message(res)))
        elif kind == "playbook_on_stats":
            merge_stats(self.hosts, dict(data))
            self._final_stats = True
        if kind in ("runner_on_ok", "runner_on_failed", "runner_on_skipped",
                    "runner_on_unreachable") and host:
            self.current_task[host] = f"{task} ✓" if kind == "runner_on_ok" else task


def consume(events: queue.Queue[Event | None], progress: RunProgress, alive: Callable[[], bool],
            on_update: Callable[[RunProgress], None] | None = None, poll_s: float = 0.1) -> None:
    """Apply queued events as they arrive, redrawing once per batch, until the producer's end
    marker (None). The marker lets the run end the moment ansible-runner is done, not on the next
    poll; `alive` ends the loop without it, should ansible-runner's thread die first."""
    while True:
        try:
            batch = [events.get(timeout=poll_s)]
        except queue.Empty:
            if alive():
                continue
            batch = [None]  # died without the marker: apply what it queued, then stop
        while True:
            try:
                batch.append(events.get_nowait())
            except queue.Empty:
                break
        arrived = [event for event in batch if event is not None]
        for event in arrived:
            progress.apply(event)
        if arrived and on_update:
            on_update(progress)
        if None in batch:
            return


def render_progress(progress: RunProgress, title: str) -> RenderableType:
    table = Table(title=title, expand=False)
    table.add_column("host", no_wrap=True)
    table.add_column("current task", overflow="ellipsis", max_width=60)
    for name in ("ok", "changed", "failed", "unreachable"):
        table.add_column(name, justify="right")
    for host in sorted(progress.hosts):
        s = progress.hosts[host]
        table.add_row(host, progress.current_task.get(host, ""), str(s.ok), str(s.changed),
                      Text(str(s.failed), style="red" if s.failed else ""),
                      Text(str(s.unreachable), style="magenta" if s.unreachable else ""))
    totals = HostStats()
    for s in progress.hosts.values():
        totals.ok += s.ok
        totals.changed += s.changed
        totals.failed += s.failed
        totals.unreachable += s.unreachable
    footer = Text(
        f"play: {progress.play or '…'} · hosts {len(progress.hosts)} · ok {totals.ok} · "
        f"changed {totals.changed} · failed {totals.failed} · unreachable {totals.unreachable}"
    )
    return Group(table, footer)
