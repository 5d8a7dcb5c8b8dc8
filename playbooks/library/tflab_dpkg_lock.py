#!/usr/bin/python
"""Wait until no other process holds the apt/dpkg locks (e.g. unattended-upgrades)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tflab_dpkg_lock
short_description: Wait for apt/dpkg locks held by another process
description:
  - Probes the dpkg and apt lock files with non-blocking POSIX record locks (the kind apt and
    dpkg take) and waits until all are free, naming the holder while it waits.
  - Fails after I(timeout) seconds with the holder's PID and command, instead of letting a
    later apt task fail with a less clear message.
options:
  timeout:
    description: Seconds to wait before failing.
    type: int
    default: 600
  lock_files:
    description: Lock files to probe.
    type: list
    elements: path
    default:
      - /var/lib/dpkg/lock-frontend
      - /var/lib/dpkg/lock
      - /var/lib/apt/lists/lock
      - /var/cache/apt/archives/lock
author: tflab-provision maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Wait for unattended-upgrades to finish
  tflab_dpkg_lock:
    timeout: 300
"""

RETURN = r"""
waited:
  description: Seconds spent waiting.
  returned: always
  type: float
holders:
  description: Processes seen holding a lock while waiting (pid and command).
  returned: always
  type: list
"""

import errno
import fcntl
import os
import time

from ansible.module_utils.basic import AnsibleModule


def lock_holder(path: str, procfs: str = "/proc") -> dict[str, object] | None:
    """The process holding a POSIX lock on `path`, from /proc/locks, or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open(os.path.join(procfs, "locks")) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        # "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; waiters carry an extra "->".
        fields = [f for f in line.split() if f != "->"]
        if len(fields) >= 6 and fields[5] == wanted:
            pid = fields[4]
            try:
                with open(os.path.join(procfs, pid, "cmdline"), "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            return {"pid": int(pid), "command": cmd, "lock": path}
    return None


def is_locked(path: str) -> bool:
    """True if another process holds a lock on `path` (we release ours at once)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "timeout": {"type": "int", "default": 600},
            "lock_files": {
                "type": "list",
                "elements": "path",
                "default": [
                    "/var/lib/dpkg/lock-frontend",
                    "/var/lib/dpkg/lock",
                    "/var/lib/apt/lists/lock",
                    "/var/cache/apt/archives/lock",
                ],
            },
        },
        supports_check_mode=True,
    )
    started = time.monotonic()
    holders: list[dict[str, object]] = []
    while True:
        busy = [p for p in module.params["lock_files"] if is_locked(p)]
        if not busy:
            module.exit_json(
                changed=False, waited=round(time.monotonic() - started, 1), holders=holders
            )
        for path in busy:
            holder = lock_holder(path)
            if holder and holder not in holders:
                holders.append(holder)
        if time.monotonic() - started > module.params["timeout"]:
            who = "; ".join(f"PID {h['pid']} ({h['command']}) on {h['lock']}" for h in holders)
            module.fail_json(
                msg=f"apt/dpkg lock still held after {module.params['timeout']} s by "
                f"{who or 'an unknown process'}. Wait for it to finish (unattended-upgrades "
                "often runs after boot) or stop it, then re-run.",
                holders=holders,
                waited=round(time.monotonic() - started, 1),
            )
        time.sleep(2)


if __name__ == "__main__":
    main()
