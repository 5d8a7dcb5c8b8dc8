"""TFLAB_TESTBED_PRIVILEGED is one switch: every sandbox host and every Molecule systemd platform.

Sandbox hosts (the fixtures' fleet, the fault lab, the demo and plan host) all start through
`tflab sandbox up` or `tflab demo`, which read the variable; the `docker run` they issue is
recorded by a stand-in docker CLI. Molecule platforms read it in molecule.yml.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tflab_provision import sandbox

ROOT = Path(__file__).resolve().parents[2]

# A docker CLI stand-in: answers what `tflab sandbox up` asks and logs every call (one JSON argv
# per line). Images are "current", containers do not exist yet, sshd is up at once.
FAKE_DOCKER = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:2] == ["container", "inspect"]:
    sys.exit(1)
if args[:2] == ["image", "inspect"] and "--format" in args:
    print(json.dumps({{"{label}": "{digest}"}}))
if args[:1] == ["port"]:
    print("127.0.0.1:40022")
"""


def sandbox_up_runs(tmp_path: Path, env_value: str | None, *flags: str) -> list[list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "docker"
    fake.write_text(FAKE_DOCKER.format(python=sys.executable, label=sandbox.RECIPE_LABEL,
                                       digest=sandbox.BaseImageRecipe().digest()))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "docker.log"
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != sandbox.PRIVILEGED_ENV}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_DOCKER_LOG=str(log))
    if env_value is not None:
        env[sandbox.PRIVILEGED_ENV] = env_value
    proc = subprocess.run([sys.executable, "-m", "tflab_provision.cli", "sandbox", "up", "--count", "2",
                           "--prefix", "tflab-priv", "--state-dir", str(tmp_path / "state"), *flags],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return [call for call in calls if call[:1] == ["run"]]


@pytest.mark.parametrize(("env_value", "flags", "privileged"), [
    (None, (), False),
    ("false", (), False),
    ("true", (), True),
    ("TRUE", (), True),
    ("true", ("--no-privileged",), False),
    (None, ("--privileged",), True),
])
def test_sandbox_up_follows_the_switch(tmp_path: Path, env_value: str | None, flags: tuple[str, ...],
                                       privileged: bool) -> None:
    runs = sandbox_up_runs(tmp_path, env_value, *flags)
    assert len(runs) == 2  # one `docker run` per host, each switched
    for argv in runs:
        assert ("--privileged" in argv) is privileged, argv
        caps = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--cap-add"]
        assert caps == ([] if privileged else list(sandbox.HOST_CAPABILITIES)), argv


def test_a_value_molecule_would_read_differently_is_refused(tmp_path: Path) -> None:
    with pytest.raises(sandbox.SandboxError, match="true or false"):
        sandbox.privileged_from_env({sandbox.PRIVILEGED_ENV: "yes"})
    assert sandbox.privileged_from_env({}) is False


def systemd_platforms() -> list[tuple[str, dict[str, object]]]:
    found = []
    for path in sorted((ROOT / "molecule").glob("*/molecule.yml")):
        for platform in yaml.safe_load(path.read_text())["platforms"]:
            if str(platform.get("command", "")).startswith("/lib/systemd/systemd"):
                found.append((path.parent.name, platform))
    return found


def test_every_molecule_systemd_platform_reads_the_switch() -> None:
    platforms = systemd_platforms()
    scenarios = {p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml")}
    assert {name for name, _ in platforms} == scenarios  # each scenario has its systemd lab host
    for name, platform in platforms:
        assert platform.get("privileged") == "${TFLAB_TESTBED_PRIVILEGED:-false}", (name, platform["name"])
        # Unprivileged, they get the same capability list as sandbox hosts (which work here).
        assert platform.get("capabilities") == list(sandbox.HOST_CAPABILITIES), (name, platform["name"])
        assert set(platform.get("security_opts", [])) == {"seccomp=unconfined", "apparmor=unconfined"}


def test_no_test_starts_a_host_around_the_switch() -> None:
    """Tests start sandbox hosts only through tflab (which reads the switch), never `docker run`
    with capabilities or --privileged of their own."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        text = path.read_text()
        for needle in ('"--privileged"', '"--cap-add"', "host_run_args(", "start_host("):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []
