"""Helpers for the NVIDIA tests: load the library module by path, replay command doubles.

A plain module (not conftest.py) so other suites' conftest files never collide with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "nvidia_gpu"


def load_library_module(name: str) -> ModuleType:
    """Import playbooks/library/<name>.py (not a package: Ansible loads it by path too)."""
    return load_module(name, REPO / "playbooks" / "library" / f"{name}.py")


class CommandDouble:
    """Test double for dpkg-query and nvidia-smi: replays fixtures/<case>/commands.json.

    Keys: "which" (binaries that exist), "dpkg-query", and the nvidia-smi query flag
    ("--query-gpu", "--query-compute-apps"); values are [rc, stdout, stderr].
    """

    def __init__(self, case: str, overrides: dict[str, Any] | None = None) -> None:
        self.spec: dict[str, Any] = json.loads((FIXTURES / case / "commands.json").read_text())
        self.spec.update(overrides or {})
        self.calls: list[list[str]] = []

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if name in self.spec["which"] else None

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        if argv[0].endswith("dpkg-query"):
            key = "dpkg-query"
        else:
            key = next(arg.split("=")[0] for arg in argv[1:] if arg.startswith("--query-"))
        if key not in self.spec:
            raise AssertionError(f"unexpected command {argv}")
        rc, out, err = self.spec[key]
        return int(rc), str(out), str(err)
