"""`tflab audit logins`: records from the lines sshd and Jupyter of the test images really print
(fixtures/audit/README.md says how they were captured), the token filter of the entrypoint, the
CLI's --since and --json, and the journal roles' inputs (defaults, spec and README agree)."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tflab_provision import audit, cli

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "audit"
TEST_TOKEN = "tok3nABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefgh"  # the captures' own test token
T0 = 1796191800_000000  # 2026-12-02T06:10:00Z in journal microseconds


def journal(lines: list[str], workspace: str = "alice", host: str = "lab1") -> list[dict[str, Any]]:
    """Each line as the journald driver stores it (fields checked on a sandbox host, see facts.md)."""
    return [{"__REALTIME_TIMESTAMP": str(T0 + i * 1000), "_HOSTNAME": host, "MESSAGE": line,
             "CONTAINER_NAME": f"tflab-ws-{workspace}", "CONTAINER_TAG": f"tflab-ws/{workspace}",
             "IO_TFLAB_WORKSPACE": workspace, "IO_TFLAB_OWNER": workspace} for i, line in enumerate(lines)]


def fixture(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def brief(logins: list[audit.Login]) -> list[tuple[str, str, str, str | None]]:
    return [(r.method, r.result, r.user, r.key_fingerprint) for r in logins]


def test_sshd_sessions_become_one_record_per_connection() -> None:
    logins = audit.parse_entries(journal(fixture("sshd-openssh-8.4-verbose.log")))
    assert brief(logins) == [
        ("ssh", "accepted", "alice", "SHA256:QhrTHXO89T3+Q3g3zTu8VJu0S5pqh+dD/1xPldmCqxE"),
        ("ssh", "refused", "alice", "SHA256:G0FxlWoF79Sn7svuUeoqNYATrNPGrfrNOw30PGL8Mdc"),
        ("ssh", "refused", "alice", "SHA256:JJ1k9VoOhX6ZqthjuzlzIRV9HlD30DZmMCSt/RLTsgc"),
        ("ssh", "refused", "bob", None),
        # two keys refused, then the right one: a login, not a refusal
        ("ssh", "accepted", "alice", "SHA256:QhrTHXO89T3+Q3g3zTu8VJu0S5pqh+dD/1xPldmCqxE"),
        ("ssh", "refused", "alice", "SHA256:52pKR9wGoMqqqPofl71ljHdBWYFytTIGRgeAkWlnk2Y"),
        ("ssh", "refused", "alice", None),  # no key offered
        # ssh-keyscan is no login attempt
        ("ssh", "accepted", "alice", "SHA256:QhrTHXO89T3+Q3g3zTu8VJu0S5pqh+dD/1xPldmCqxE"),
    ]
    assert {r.source for r in logins} == {"127.0.0.1"}
    assert {(r.host, r.workspace) for r in logins} == {("lab1", "alice")}
    assert [r.detail for r in logins if r.result == "refused"] == [
        "1 key(s) refused", "1 key(s) refused", "invalid user", "too many authentication failures",
        "no key accepted"]
    assert logins[0].time == "2026-12-02T06:10:00Z"


@pytest.mark.parametrize("name", ["jupyter-server-2.18-notebook-7.5.log", "notebook-6.5.7.log"])
def test_jupyter_login_form_and_refused_tokens(name: str) -> None:
    logins = audit.parse_entries(journal(fixture(name)))
    assert [(r.result, r.detail) for r in logins] == [
        ("refused", "login form (401)"),
        ("accepted", "login form"),
        ("refused", "token in URL refused (403)"),
    ]
    assert {(r.method, r.user, r.source) for r in logins} == {("jupyter", "alice", "192.0.2.10")}


def test_no_token_reaches_a_record_even_from_an_unfiltered_notebook_6_line() -> None:
    raw = fixture("notebook-6.5.7.log")
    assert any(TEST_TOKEN in line for line in raw)  # notebook 6 really logs it
    text = json.dumps([r.as_json() for r in audit.parse_entries(journal(raw))])
    assert TEST_TOKEN not in text and "nottherightone" not in text


def test_the_entrypoint_filter_blanks_every_token_in_jupyter_output() -> None:
    script = (ROOT / "roles/tf_workspace/files/tflab-entrypoint").read_text()
    sed = re.search(r"^redact_tokens\(\) \{ (sed .*); \}$", script, flags=re.M)
    assert sed, "redact_tokens() not found in the entrypoint"
    assert re.search(r"jupyter notebook .*\| redact_tokens", script)
    raw = (FIXTURES / "notebook-6.5.7.log").read_text()
    out = subprocess.run(["bash", "-c", sed[1]], input=raw, capture_output=True, text=True, check=True).stdout
    assert TEST_TOKEN not in out and "nottherightone" not in out and "wrongtoken1" not in out
    assert "302 GET /alice/?token=[secret] (192.0.2.10)" in out
    assert len(out.splitlines()) == len(raw.splitlines())


def test_entries_of_other_containers_and_the_host_are_ignored() -> None:
    line = "Accepted publickey for admin from 10.0.0.9 port 4000 ssh2: ED25519 SHA256:abc"
    entries = [{"__REALTIME_TIMESTAMP": str(T0), "_HOSTNAME": "lab1", "MESSAGE": line},
               {"__REALTIME_TIMESTAMP": str(T0), "_HOSTNAME": "lab1", "MESSAGE": line,
                "CONTAINER_NAME": "prometheus"}]
    assert audit.parse_entries(entries) == []


def test_workspace_from_the_container_name_when_labels_are_not_fields() -> None:
    line = "Accepted publickey for bob from 2001:db8::7 port 4000 ssh2: ED25519 SHA256:abc"
    entry = journal([line], "bob")[0]
    del entry["IO_TFLAB_WORKSPACE"], entry["IO_TFLAB_OWNER"]
    [login] = audit.parse_entries([entry])
    assert (login.workspace, login.user, login.source) == ("bob", "bob", "2001:db8::7")


def test_a_connection_whose_end_is_missing_is_still_a_refusal() -> None:
    lines = ["Connection from 10.1.2.3 port 5000 on 172.30.0.2 port 22 rdomain \"\"",
             "Failed publickey for alice from 10.1.2.3 port 5000 ssh2: RSA SHA256:xyz"]
    [login] = audit.parse_entries(journal(lines))
    assert (login.result, login.source, login.key_fingerprint) == ("refused", "10.1.2.3", "SHA256:xyz")


def test_records_from_reports_are_merged_sorted_and_deduplicated() -> None:
    entries = journal(fixture("jupyter-server-2.18-notebook-7.5.log"))
    reports = {"logs": {"audit_entries": entries}, "lab1": {"audit_entries": entries[:30]}, "x": {}}
    logins = audit.logins_from_reports(reports)
    assert len(logins) == 3 and [r.time for r in logins] == sorted(r.time for r in logins)


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", datetime(2026, 12, 2, 9, 58, 30, tzinfo=UTC)),
    ("30m", datetime(2026, 12, 2, 9, 30, tzinfo=UTC)),
    ("1h", datetime(2026, 12, 2, 9, 0, tzinfo=UTC)),
    ("2d", datetime(2026, 11, 30, 10, 0, tzinfo=UTC)),
    ("1w", datetime(2026, 11, 25, 10, 0, tzinfo=UTC)),
    ("2026-12-01T10:00", datetime(2026, 12, 1, 10, 0, tzinfo=UTC)),
    ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
    ("2026-12-01T10:00+01:00", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
    ("2026-12-01T10:00Z", datetime(2026, 12, 1, 10, 0, tzinfo=UTC)),
])
def test_since(text: str, expected: datetime) -> None:
    assert audit.parse_since(text, datetime(2026, 12, 2, 10, 0, tzinfo=UTC)) == expected


@pytest.mark.parametrize("text", ["yesterday", "1y", "", "10:00-ish"])
def test_a_bad_since_names_the_flag_and_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"--since .*30m, 1h, 2d, 1w.*2026-12-01T10:00"):
        audit.parse_since(text)


def test_cli_exits_1_on_a_bad_since_before_any_host(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["audit", "logins", "--since", "soon", "--state-dir", str(tmp_path)])
    assert code == 1
    assert "--since 'soon'" in capsys.readouterr().err


def test_cli_passes_since_as_a_unix_time_and_prints_the_records_as_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """What crosses the boundary to the runner (playbook, extra var) and what --json prints."""
    from tflab_provision.report import RunResult

    seen: dict[str, Any] = {}

    def execute(ctx: cli.Context, request: cli.RunRequest, render: Any = None, url_bases: Any = None) -> Any:
        seen.update(playbook=request.playbook, since=request.extra_vars["tflab_audit_since"],
                    json=ctx.args.json)
        result = RunResult(playbook=request.playbook, status="successful", exit_code=0,
                           started_at=datetime.now(UTC), duration_s=1.0, private_data_dir=str(tmp_path),
                           reports={"logs": {"audit_entries": journal(fixture("notebook-6.5.7.log"))}})
        render(result)
        return result

    monkeypatch.setattr(cli, "execute", execute)
    monkeypatch.setattr(cli, "inventories_from", lambda ctx: (tmp_path,))
    before = int(datetime.now(UTC).timestamp()) - 3600
    code = cli.main(["audit", "logins", "--since", "1h", "--json", "--state-dir", str(tmp_path)])
    assert code == 0
    assert seen["playbook"] == "audit.yml" and seen["json"] is False
    assert before - 5 <= int(seen["since"]) <= before + 5
    printed = json.loads(capsys.readouterr().out)
    assert [(r["method"], r["result"], r["source"]) for r in printed] == [
        ("jupyter", "refused", "192.0.2.10"), ("jupyter", "accepted", "192.0.2.10"),
        ("jupyter", "refused", "192.0.2.10")]
    assert set(printed[0]) == {"time", "host", "workspace", "user", "method", "result", "source",
                               "key_fingerprint", "detail"}


@pytest.mark.parametrize("role", ["journal_remote", "journal_upload"])
def test_journal_role_defaults_spec_and_readme_agree(role: str) -> None:
    base = ROOT / "roles" / role
    defaults = yaml.safe_load((base / "defaults/main.yml").read_text())
    spec = yaml.safe_load((base / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert set(defaults) == set(spec)
    for name, value in defaults.items():
        assert name.startswith(role + "_") and spec[name].get("default") == value, name
    listed = re.findall(rf"^\| `({role}_\w+)` \|", (base / "README.md").read_text(), flags=re.M)
    assert listed == list(spec)


def test_the_log_hosts_journal_of_the_end_to_end_run() -> None:
    """Real `journalctl --directory=/var/log/journal/remote -o json` lines: sshd's end in \\r, so the
    journal keeps them as bytes (arrays of numbers in JSON); the health check's connections from
    127.0.0.1 are no logins."""
    entries = [json.loads(line) for line in (FIXTURES / "journal-remote-e2e.json").read_text().splitlines()]
    assert any(isinstance(e["MESSAGE"], list) for e in entries)
    logins = audit.parse_entries(entries)
    assert [(r.method, r.result, r.host, r.workspace, r.user, r.source) for r in logins] == [
        ("ssh", "refused", "tflab-lg-2", "alice", "alice", "172.17.0.3"),
        ("ssh", "accepted", "tflab-lg-2", "alice", "alice", "172.17.0.3"),
        ("jupyter", "refused", "tflab-lg-2", "alice", "alice", "172.17.0.3"),
        ("jupyter", "accepted", "tflab-lg-2", "alice", "alice", "172.17.0.3"),
    ]
    assert logins[1].key_fingerprint == "SHA256:YfW/2xmbVeTL3IMnjOIqpQ8NQiI1hUCk/iN7fGV71XI"
