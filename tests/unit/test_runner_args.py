"""What crosses the boundary to ansible-runner, and how results map to exit codes."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tflab_provision.report import ExitCode, HostStats, exit_code_for
from tflab_provision.runner import (
    ConfigError,
    Project,
    RunRequest,
    check_secret_file,
    runner_kwargs,
)
from tflab_provision.state import StateDir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project() -> Project:
    return Project(ROOT)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  hosts:\n    a: {}\n")
    return path


def kwargs_for(request: RunRequest, project: Project, tmp_path: Path) -> dict[str, object]:
    state = StateDir(tmp_path / "state")
    return runner_kwargs(request, project, state, tmp_path / "run")


def test_runner_kwargs_keep_secrets_out_of_arguments_and_env_files(
        project: Project, inventory: Path, tmp_path: Path) -> None:
    secrets_file = tmp_path / "secrets.yml"
    secrets_file.write_text("jupyter_token: s3cr3t\n")
    secrets_file.chmod(0o600)
    request = RunRequest(playbook="site.yml", inventories=(inventory,), limit="gpu01",
                         tags=("docker", "toolkit"), vars_files=(secrets_file,),
                         extra_vars={"tflab_serial": "1"})
    kw = kwargs_for(request, project, tmp_path)
    assert kw["suppress_env_files"] is True
    assert kw["playbook"] == str(ROOT / "playbooks" / "site.yml")
    assert kw["project_dir"] == str(ROOT)
    assert shlex.split(str(kw["cmdline"])) == [
        "--limit", "gpu01", "--tags", "docker,toolkit", "-e", f"@{secrets_file}"]
    assert kw["extravars"] == {"tflab_serial": "1"}
    assert "s3cr3t" not in repr(kw)
    env = kw["envvars"]
    assert isinstance(env, dict)
    assert env["ANSIBLE_CONFIG"] == str(ROOT / "ansible.cfg")
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert kw["fact_cache"] == str(tmp_path / "state" / "facts")


@pytest.mark.parametrize("mode, refused", [(0o600, False), (0o400, False), (0o640, True),
                                           (0o644, True), (0o604, True)])
def test_vars_files_readable_by_others_are_refused(tmp_path: Path, mode: int, refused: bool) -> None:
    path = tmp_path / "vars.yml"
    path.write_text("x: 1\n")
    path.chmod(mode)
    if refused:
        with pytest.raises(ConfigError, match="chmod 600"):
            check_secret_file(path)
    else:
        check_secret_file(path)


def test_vault_encrypted_file_may_be_readable(tmp_path: Path) -> None:
    path = tmp_path / "vault.yml"
    path.write_text("$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    path.chmod(0o644)
    check_secret_file(path)


@pytest.mark.parametrize("request_kw, message", [
    ({"playbook": "nope.yml"}, "playbook 'nope.yml' not found"),
    ({"inventories": (Path("/nonexistent/hosts.yml"),)}, "inventory /nonexistent/hosts.yml does not exist"),
])
def test_bad_requests_fail_before_anything_runs(project: Project, inventory: Path, tmp_path: Path,
                                                request_kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"playbook": "site.yml", "inventories": (inventory,), **request_kw}
    with pytest.raises(ConfigError, match=message):
        kwargs_for(RunRequest(**args), project, tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize("status, rc, hosts, expected", [
    ("successful", 0, {"a": HostStats(ok=3)}, ExitCode.OK),
    ("failed", 2, {"a": HostStats(ok=1), "b": HostStats(failed=1)}, ExitCode.TASK_FAILED),
    ("failed", 4, {"a": HostStats(ok=1), "b": HostStats(unreachable=1)}, ExitCode.UNREACHABLE),
    ("failed", 2, {"a": HostStats(failed=1), "b": HostStats(unreachable=1)}, ExitCode.UNREACHABLE),
    ("canceled", 254, {"a": HostStats(ok=1)}, ExitCode.CANCELLED),
    ("failed", 4, {}, ExitCode.USAGE),
    ("failed", 127, {}, ExitCode.USAGE),
    ("failed", 1, {"a": HostStats(ok=1)}, ExitCode.TASK_FAILED),
])
def test_exit_codes(status: str, rc: int, hosts: dict[str, HostStats], expected: ExitCode) -> None:
    assert exit_code_for(status, rc, hosts) is expected


def test_ansible_runner_reads_the_cancel_poll_interval(tmp_path: Path) -> None:
    """ansible-runner drops a `settings=` argument when env/settings is missing; the file works."""
    from ansible_runner.config.runner import RunnerConfig

    from tflab_provision.runner import CANCEL_POLL_S, write_runner_settings

    write_runner_settings(tmp_path)
    config = RunnerConfig(private_data_dir=str(tmp_path), playbook="x.yml")
    config.prepare_env()
    assert config.pexpect_timeout == CANCEL_POLL_S
