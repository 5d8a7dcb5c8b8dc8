"""Shared by the doubles: append this call's argv to TFLAB_DOUBLE_LOG (one JSON line)."""

from __future__ import annotations

import json
import os
import sys


def record(name: str) -> None:
    path = os.environ.get("TFLAB_DOUBLE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps([name, *sys.argv[1:]]) + "\n")
