"""The controller's state directory (XDG): runs, last failures, fact cache, sandbox keys.

Nothing here lives in the repository. Run directories are ansible-runner private data dirs;
they may hold task output, so the tree is created 0700.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tflab"


@dataclass(frozen=True)
class StateDir:
    root: Path
    keep_runs: int = 20

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def facts(self) -> Path:
        return self.root / "facts"

    @property
    def last_failed(self) -> Path:
        return self.root / "last-failed.json"

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def validated(self) -> Path:
        """One empty file per inventory verdict: its name is the hash of everything validated."""
        return self.root / "validated"

    def knows_valid(self, key: str) -> bool:
        return (self.validated / key).exists()

    def remember_valid(self, key: str, keep: int = 50) -> None:
        self.validated.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.validated / key).touch()
        markers = sorted(self.validated.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in markers[: max(0, len(markers) - keep)]:
            old.unlink(missing_ok=True)

    def ensure(self) -> None:
        for path in (self.root, self.runs, self.facts):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def new_run_dir(self, label: str) -> Path:
        """A fresh private data dir, after pruning the oldest beyond keep_runs."""
        self.ensure()
        self.rotate(keep=self.keep_runs - 1)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        run_dir = self.runs / f"{stamp}-{label}-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir(mode=0o700)
        return run_dir

    def rotate(self, keep: int) -> None:
        runs = sorted(p for p in self.runs.iterdir() if p.is_dir())
        for old in runs[: max(0, len(runs) - keep)]:
            shutil.rmtree(old, ignore_errors=True)

    def save_failed_hosts(self, hosts: list[str], playbook: str) -> None:
        self.last_failed.write_text(json.dumps({"playbook": playbook, "hosts": hosts}))

    def load_failed_hosts(self) -> list[str]:
        if not self.last_failed.exists():
            return []
        data = json.loads(self.last_failed.read_text())
        return [str(h) for h in data.get("hosts", [])]

    def append_history(self, record: dict[str, object]) -> None:
        with self.history.open("a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
