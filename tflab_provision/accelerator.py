"""The optional accelerator: Mitogen's strategy plugin (`pip install 'tflab-provision[fast]'`).

Mitogen keeps one Python interpreter per host for the whole run and sends modules to it once,
instead of one SSH exchange and one fresh interpreter per task; on a no-op `site.yml` that is
most of the cost (docs/facts.md). It changes how tasks reach a host, never what they do, so the
same playbooks give the same results with it and without it (tests/test_accelerator.py).

It is switched on per command (`--accelerator mitogen`) or for a shell (`TFLAB_ACCELERATOR=mitogen`)
and resolved once, before any host is contacted: when Mitogen is not installed, or the installed
ansible-core is not one tflab has run it with, tflab says why and runs without it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path

ENV = "TFLAB_ACCELERATOR"
CHOICES = ("none", "mitogen")
# ansible-core minor versions tflab has run the full site.yml with under Mitogen (0.3.54), with
# the same per-task results as without it. Others run without the accelerator.
TESTED_ANSIBLE_CORE = ((2, 19),)
STRATEGY = "mitogen_linear"
# Each task in a fork of the host's pristine interpreter, not in the long-lived one: a module's
# helpers imported there keep what they found (community.crypto's "cryptography is missing") when
# a later task installs the library. Seen 2026-12-02: a cold site.yml with a workspace failed at the
# front door's first key, after tf_workspace's keys had loaded community.crypto without it.
ISOLATION = {"mitogen_task_isolation": "fork"}


@dataclass(frozen=True)
class Accelerator:
    """What a run uses: `name` is "mitogen" or "none"; `note` says why a requested one is off."""

    name: str = "none"
    requested: str = "none"
    envvars: Mapping[str, str] = field(default_factory=dict)
    extra_vars: Mapping[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def active(self) -> bool:
        return self.name != "none"


def _ansible_core_version() -> str:
    from ansible.release import __version__

    return str(__version__)


def _minor(version: str) -> tuple[int, int]:
    major, minor = (int("".join(ch for ch in part if ch.isdigit()) or 0) for part in version.split(".")[:2])
    return major, minor


def resolve(
    requested: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    ansible_version: Callable[[], str] = _ansible_core_version,
    find_spec: Callable[[str], ModuleSpec | None] = importlib.util.find_spec,
) -> Accelerator:
    """The accelerator a command runs with: the flag, else $TFLAB_ACCELERATOR, else none.

    Raises ValueError for a name that is not one of CHOICES (a usage error, exit code 1)."""
    env_value = (environ or {}).get(ENV, "")
    wanted = (requested or env_value or "none").strip().lower()
    if wanted not in CHOICES:
        source = "--accelerator" if requested else ENV
        raise ValueError(f"{source}={wanted!r} is not an accelerator tflab knows; "
                         f"use one of {', '.join(CHOICES)}")
    if wanted == "none":
        return Accelerator()
    spec = find_spec("ansible_mitogen")
    if spec is None or not spec.submodule_search_locations:
        return Accelerator(requested=wanted, note=(
            "Mitogen is not installed (pip install 'tflab-provision[fast]'); "
            "running without the accelerator"))
    version = ansible_version()
    if _minor(version) not in TESTED_ANSIBLE_CORE:
        tested = ", ".join(f"{a}.{b}" for a, b in TESTED_ANSIBLE_CORE)
        return Accelerator(requested=wanted, note=(
            f"Mitogen is not used with ansible-core {version} "
            f"(tflab runs it with ansible-core {tested} only); running without the accelerator"))
    strategies = Path(next(iter(spec.submodule_search_locations))) / "plugins" / "strategy"
    if not (strategies / f"{STRATEGY}.py").is_file():
        return Accelerator(requested=wanted, note=(
            f"this Mitogen has no {STRATEGY} strategy under {strategies}; running without the accelerator"))
    return Accelerator(name="mitogen", requested=wanted, envvars={
        "ANSIBLE_STRATEGY_PLUGINS": str(strategies),
        "ANSIBLE_STRATEGY": STRATEGY,
    }, extra_vars=ISOLATION)
