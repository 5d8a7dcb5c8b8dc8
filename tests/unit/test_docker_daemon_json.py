"""Tests for playbooks/library/docker_daemon_json.py: the merge that keeps admins' keys.

Pure functions are tested directly; the write path runs the module as Ansible would
(a subprocess reading its arguments from a JSON file), against a temporary daemon.json.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

MODULE_PATH = Path(__file__).resolve().parents[2] / "playbooks" / "library" / "docker_daemon_json.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docker_daemon_json", MODULE_PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ddj = _load()


def run_module(tmp_path: Path, args: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
    """Run the module file the way Ansible's direct-execution path does; return its JSON."""
    payload = dict(args)
    payload["_ansible_check_mode"] = check_mode
    payload["_ansible_tmpdir"] = str(tmp_path)
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    proc = subprocess.run(
        [sys.executable, str(MODULE_PATH), str(args_file)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize(
    ("base", "extra", "mode", "expected"),
    [
        (
            {"debug": False},
            {"live-restore": True},
            "replace",
            {"debug": False, "live-restore": True},
        ),
        (
            {"log-opts": {"max-size": "10m", "labels": "a"}},
            {"log-opts": {"max-size": "50m"}},
            "replace",
            {"log-opts": {"max-size": "50m", "labels": "a"}},
        ),
        (
            {"runtimes": {"kata": {"path": "/k"}}},
            {"runtimes": {"nvidia": {"path": "/n"}}},
            "replace",
            {"runtimes": {"kata": {"path": "/k"}, "nvidia": {"path": "/n"}}},
        ),
        ({"exec-opts": ["a=1"]}, {"exec-opts": ["b=2"]}, "replace", {"exec-opts": ["b=2"]}),
        (
            {"exec-opts": ["a=1"]},
            {"exec-opts": ["b=2", "a=1"]},
            "union",
            {"exec-opts": ["a=1", "b=2"]},
        ),
        ({"x": {"y": 1}}, {"x": 5}, "replace", {"x": 5}),
    ],
)
def test_deep_merge(base: dict[str, Any], extra: dict[str, Any], mode: str, expected: dict[str, Any]) -> None:
    """Mappings merge key by key; lists follow list_merge; scalars from settings win."""
    before = json.dumps(base, sort_keys=True)
    assert ddj.deep_merge(base, extra, mode) == expected
    assert json.dumps(base, sort_keys=True) == before, "the input must not be mutated"


@pytest.mark.parametrize("text", ["", "  \n"])
def test_empty_file_is_empty_document(text: str) -> None:
    """dockerd treats an empty daemon.json as no settings; so do we."""
    assert ddj.parse_document(text, "/x") == {}


@pytest.mark.parametrize(("text", "needle"), [("{", "not valid JSON"), ("[1]", "list, not an object")])
def test_invalid_document_names_the_file(text: str, needle: str) -> None:
    """The error says which file is wrong and that Docker was not touched."""
    with pytest.raises(ddj.DaemonJsonError) as err:
        ddj.parse_document(text, "/etc/docker/daemon.json")
    assert needle in str(err.value)
    assert "/etc/docker/daemon.json" in str(err.value)
    assert "untouched" in str(err.value)


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (
            {"exec-opts": ["native.cgroupdriver=systemd", "native.cgroupdriver=cgroupfs"]},
            "cgroup drivers",
        ),
        ({"default-runtime": "nvidia"}, "not defined under runtimes"),
        ({"runtimes": {"nvidia": {}}}, "needs a path"),
        ({"registry-mirrors": "https://m"}, "must be a list"),
        ({"log-opts": {"max-file": 5}}, "must be a string"),
    ],
)
def test_check_document_catches_what_dockerd_would_refuse(doc: dict[str, Any], needle: str) -> None:
    """The semantic checks that stand in for --validate on Docker 20.10."""
    assert any(needle in problem for problem in ddj.check_document(doc))


def test_check_document_accepts_good_document() -> None:
    """A toolkit-style document passes."""
    doc = {
        "default-runtime": "nvidia",
        "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
        "exec-opts": ["native.cgroupdriver=cgroupfs"],
    }
    assert ddj.check_document(doc) == []


def test_admin_key_survives_and_second_run_is_unchanged(tmp_path: Path) -> None:
    """The heart of the contract: merge keeps the admin's key; rerun changes nothing."""
    target = tmp_path / "daemon.json"
    target.write_text('{"labels": ["rack=b7"], "log-opts": {"max-size": "1m"}}')
    args = {"path": str(target), "settings": {"live-restore": True, "log-opts": {"max-file": "5"}}}
    first = run_module(tmp_path, args)
    assert first["changed"] is True, first
    written = json.loads(target.read_text())
    assert written == {
        "labels": ["rack=b7"],
        "live-restore": True,
        "log-opts": {"max-size": "1m", "max-file": "5"},
    }
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    second = run_module(tmp_path, args)
    assert second["changed"] is False, second


def test_invalid_live_file_fails_and_is_not_touched(tmp_path: Path) -> None:
    """An invalid live file is reported and left exactly as it was."""
    target = tmp_path / "daemon.json"
    target.write_text('{"debug": tru')
    result = run_module(tmp_path, {"path": str(target), "settings": {"live-restore": True}})
    assert result.get("failed") is True
    assert "not valid JSON" in result["msg"]
    assert target.read_text() == '{"debug": tru'


def test_failed_validation_keeps_live_file(tmp_path: Path) -> None:
    """A validate command that rejects the candidate stops the write."""
    target = tmp_path / "daemon.json"
    target.write_text('{"debug": false}\n')
    result = run_module(tmp_path, {"path": str(target), "settings": {"debug": True}, "validate": "false %s"})
    assert result.get("failed") is True
    assert "failed validation" in result["msg"]
    assert target.read_text() == '{"debug": false}\n'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".daemon.json.")] == []


def test_validate_sees_the_candidate(tmp_path: Path) -> None:
    """The validate command gets the merged candidate, not the live file."""
    target = tmp_path / "daemon.json"
    result = run_module(
        tmp_path,
        {"path": str(target), "settings": {"debug": True}, "validate": "grep -q debug %s"},
    )
    assert result["changed"] is True, result
    assert json.loads(target.read_text()) == {"debug": True}


def test_check_mode_and_read_state_write_nothing(tmp_path: Path) -> None:
    """Check mode reports the change; state=read returns the live document."""
    target = tmp_path / "daemon.json"
    target.write_text('{"debug": false}')
    checked = run_module(tmp_path, {"path": str(target), "settings": {"debug": True}}, check_mode=True)
    assert checked["changed"] is True
    assert target.read_text() == '{"debug": false}'
    read = run_module(tmp_path, {"path": str(target), "state": "read"})
    assert read["changed"] is False
    assert read["config"] == {"debug": False}


def test_missing_file_read_is_empty(tmp_path: Path) -> None:
    """Before Docker is configured there is no file: that reads as {} and writes nothing."""
    target = tmp_path / "absent" / "daemon.json"
    read = run_module(tmp_path, {"path": str(target), "state": "read"})
    assert read["config"] == {}
    assert not target.exists()


def test_remove_keys(tmp_path: Path) -> None:
    """remove_keys drops a key a role stopped wanting."""
    target = tmp_path / "daemon.json"
    target.write_text('{"debug": false, "icc": false}')
    result = run_module(tmp_path, {"path": str(target), "remove_keys": ["icc"]})
    assert result["changed"] is True
    assert json.loads(target.read_text()) == {"debug": False}


def test_proxy_credentials_are_masked_in_results_and_diff(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"proxies": {"http-proxy": "http://lab:s3cret-old@proxy.lab:3128"}}))
    result = run_module(tmp_path, {"path": str(path), "settings": {
        "proxies": {"https-proxy": "https://lab:s3cret-new@proxy.lab:3128", "no-proxy": "localhost"}}})
    # The module's own arguments (invocation) are the task's: the role hides those with no_log.
    shown = json.dumps({key: result[key] for key in ("config", "previous", "diff")})
    assert "s3cret" not in shown, shown
    assert result["config"]["proxies"]["https-proxy"] == "https://***@proxy.lab:3128"
    assert result["previous"]["proxies"]["http-proxy"] == "http://***@proxy.lab:3128"
    assert "https://***@proxy.lab:3128" in result["diff"]["after"]
    # The file itself keeps the real credentials: dockerd needs them.
    written = json.loads(path.read_text())
    assert written["proxies"]["https-proxy"] == "https://lab:s3cret-new@proxy.lab:3128"
    assert written["proxies"]["http-proxy"] == "http://lab:s3cret-old@proxy.lab:3128"


def test_mask_credentials_leaves_urls_without_userinfo_alone() -> None:
    doc = {"registry-mirrors": ["https://mirror.lab:5000", "https://u:p@m.lab"],
           "data-root": "/var/lib/docker"}
    assert ddj.mask_credentials(doc) == {
        "registry-mirrors": ["https://mirror.lab:5000", "https://***@m.lab"],
        "data-root": "/var/lib/docker"}
