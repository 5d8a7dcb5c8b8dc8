"""Run a Python entry-point script in this process, then record this process' own peak RSS.

Usage: python bench/_peakrss.py OUT.json SCRIPT [ARGS...]

`getrusage(RUSAGE_SELF).ru_maxrss` counts this process only: not the ansible-playbook that
`tflab` starts, nor Ansible's forked workers (they leave through os._exit, never reaching the
`finally` below; the pid check makes sure of it). Running the real console script with runpy
keeps what is measured identical to what a user runs.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys


def main() -> None:
    out, script, *args = sys.argv[1:]
    pid = os.getpid()
    sys.argv = [script, *args]
    code: int = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        if os.getpid() == pid:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            with open(out, "w") as fh:
                json.dump({"self_maxrss_kb": usage.ru_maxrss, "self_cpu_s":
                           round(usage.ru_utime + usage.ru_stime, 3)}, fh)
    sys.exit(code)


if __name__ == "__main__":
    main()
