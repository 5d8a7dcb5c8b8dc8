"""What a known failure message means, and what to do about it, in one line.

Modules report the symptom ("Error while fetching server API version"); an admin needs the cause
and the next step. Only messages whose cause is certain get a hint.
"""

from __future__ import annotations

import re

# (pattern in the failure message, the hint shown under it)
KNOWN_FAILURES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), hint) for pattern, hint in (
        (r"Error while fetching server API version|Cannot connect to the Docker daemon"
         r"|docker\.sock.*(refused|No such file)",
         "the Docker daemon on this host did not answer (stopped, crashed or restarting): "
         "check `systemctl status docker` there, then re-run; containers and data are untouched"),
        (r"Could not get lock|dpkg was interrupted|Unable to acquire the dpkg",
         "another package manager (unattended-upgrades, apt) holds the dpkg lock: wait for it "
         "or stop it, then re-run"),
        (r"Failed to fetch|Temporary failure resolving|Could not connect to|Unable to connect to"
         r"|Connection failed \[IP",
         "the package mirror could not be reached (after the role's retries): check the host's "
         "network, proxy and apt sources, or raise <role>_download_retries"),
        (r"could not select device driver",
         "Docker has no NVIDIA runtime for --gpus: apply the toolkit role "
         "(tflab apply --tags toolkit) and check `docker info` for Runtimes: nvidia"),
        (r"Failed to initialize NVML|driver/library version mismatch",
         "the loaded NVIDIA kernel module and the installed libraries differ: a reboot is "
         "pending (see `tflab status`)"),
    )
)


def hint_for(message: str) -> str | None:
    """The hint for a known failure message, or None."""
    for pattern, hint in KNOWN_FAILURES:
        if pattern.search(message):
            return hint
    return None
