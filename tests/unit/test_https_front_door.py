"""The HTTPS front door as the CLI shows it: `tflab ca show`, workspace URLs and fingerprints,
the end-of-run report of apply and demo, and the extra var `tflab_ca_dir` on every run.

A throwaway CA is made with `cryptography`, as the playbook leaves one on the controller. Runs
go through the CLI entry point; `ansible_runner.run_async` is replaced by a stand-in that
records its arguments and replays the events of a converged host (no Ansible, no host).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tflab_provision import cli, runner, sandbox

ROOT = Path(__file__).resolve().parents[2]
CA_SUBJECT = "O=tflab test,CN=tflab lab CA"  # RFC 4514: the last RDN first


def make_ca(directory: Path, days: int = 3650) -> x509.Certificate:
    """A self-signed CA certificate and its 0600 key, where the playbook puts them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tflab lab CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tflab test")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lab-ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = directory / "lab-ca.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert


def fingerprint_of(cert: x509.Certificate) -> str:
    """SHA-256 over the DER, AB:CD:… (computed apart from the code under test)."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def key_text(directory: Path) -> str:
    return "".join((directory / "lab-ca.key").read_text().splitlines()[1:-1])


def write_inventory(root: Path, group_vars: dict[str, Any] | None = None,
                    host_vars: dict[str, Any] | None = None) -> Path:
    inv = root / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "host_vars").mkdir()
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {
        "gpu01": {"ansible_host": "192.0.2.11"}, "gpu02": {"ansible_host": "192.0.2.12"}}}}))
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(
        {"tflab_admin_cidrs": ["192.0.2.0/24"], **(group_vars or {})}))
    (inv / "host_vars" / "gpu01.yml").write_text(yaml.safe_dump(
        {"tflab_workspaces": [{"name": "alice", "uid": 2001}, {"name": "bob", "uid": 2002}],
         **(host_vars or {})}))
    return inv


def tflab(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it."""
    return subprocess.run([sys.executable, "-m", "tflab_provision.cli", *args, "--state-dir", str(state)],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=120)


# --- tflab ca show -----------------------------------------------------------------------

def test_ca_show_prints_the_certificate_and_its_fingerprint_never_the_key(tmp_path: Path) -> None:
    cert = make_ca(tmp_path / "state" / "ca")
    proc = tflab(tmp_path / "state", "ca", "show")
    assert proc.returncode == 0, proc.stderr
    # stdout is exactly the certificate: `tflab ca show > lab-ca.crt` is the file to install.
    assert proc.stdout == cert.public_bytes(serialization.Encoding.PEM).decode()
    assert x509.load_pem_x509_certificate(proc.stdout.encode()) == cert
    assert f"SHA-256 fingerprint: {fingerprint_of(cert)}" in proc.stderr
    assert f"subject: {CA_SUBJECT}" in proc.stderr
    assert f"expires: {cert.not_valid_after_utc.isoformat()}" in proc.stderr
    assert key_text(tmp_path / "state" / "ca") not in proc.stdout + proc.stderr
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr


def test_ca_show_fingerprint_is_openssls(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    make_ca(tmp_path / "state" / "ca")
    openssl = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                              str(tmp_path / "state" / "ca" / "lab-ca.crt")],
                             capture_output=True, text=True, check=True)
    proc = tflab(tmp_path / "state", "ca", "show", "--json")
    assert openssl.stdout.strip().split("=", 1)[1] == json.loads(proc.stdout)["sha256_fingerprint"]


def test_ca_show_json(tmp_path: Path) -> None:
    cert = make_ca(tmp_path / "state" / "ca")
    proc = tflab(tmp_path / "state", "ca", "show", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data == {
        "path": str(tmp_path / "state" / "ca" / "lab-ca.crt"),
        "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "sha256_fingerprint": fingerprint_of(cert), "subject": CA_SUBJECT,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(), "expired": False}
    assert key_text(tmp_path / "state" / "ca") not in proc.stdout


def test_ca_show_without_a_ca_says_to_apply(tmp_path: Path) -> None:
    proc = tflab(tmp_path / "state", "ca", "show")
    assert proc.returncode == 1
    assert proc.stdout == ""
    expected = f"no lab CA yet at {tmp_path / 'state' / 'ca' / 'lab-ca.crt'}: run tflab apply first"
    assert expected in " ".join(proc.stderr.split())


def test_ca_show_reads_tflab_ca_dir_and_never_a_key_stored_with_the_certificate(tmp_path: Path) -> None:
    ca_dir = tmp_path / "lab-ca"
    cert = make_ca(ca_dir)
    # A key pasted after the certificate in the .crt file is not printed either.
    crt = ca_dir / "lab-ca.crt"
    crt.write_text(crt.read_text() + (ca_dir / "lab-ca.key").read_text())
    inv = write_inventory(tmp_path, {"tflab_ca_dir": str(ca_dir)})
    proc = tflab(tmp_path / "state", "ca", "show", "-i", str(inv))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == cert.public_bytes(serialization.Encoding.PEM).decode()
    assert key_text(ca_dir) not in proc.stdout + proc.stderr


def test_ca_show_refuses_two_ca_dirs(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path, {"tflab_ca_dir": "/srv/ca-a"}, {"tflab_ca_dir": "/srv/ca-b"})
    proc = tflab(tmp_path / "state", "ca", "show", "-i", str(inv))
    assert proc.returncode == 1
    assert "tflab_ca_dir must be one directory for the whole inventory" in " ".join(proc.stderr.split())


def test_an_expired_ca_is_named(tmp_path: Path) -> None:
    make_ca(tmp_path / "state" / "ca", days=-1)
    proc = tflab(tmp_path / "state", "ca", "show")
    assert proc.returncode == 0 and "expired" in proc.stderr
    assert json.loads(tflab(tmp_path / "state", "ca", "show", "--json").stdout)["expired"] is True


# --- workspace show / list -----------------------------------------------------------------

@pytest.mark.parametrize(("group_vars", "host_vars", "url"), [
    ({}, {}, "https://192.0.2.11/alice/"),
    ({"tflab_https_port": 8443}, {}, "https://192.0.2.11:8443/alice/"),
    ({"tflab_https_port": 443}, {"tflab_public_name": "gpu01.lab.example.org"},
     "https://gpu01.lab.example.org/alice/"),
    ({"tflab_public_name": "fd00::11", "tflab_https_port": 4443}, {}, "https://[fd00::11]:4443/alice/"),
    # ":ab:" is an emoji code to rich; fingerprints have such pairs too.
    ({}, {"tflab_public_name": "fd00::ab:1"}, "https://[fd00::ab:1]/alice/"),
])
def test_workspace_show_prints_the_https_url_and_the_ca_fingerprint(
        tmp_path: Path, group_vars: dict[str, Any], host_vars: dict[str, Any], url: str) -> None:
    cert = make_ca(tmp_path / "state" / "ca")
    inv = write_inventory(tmp_path, group_vars, host_vars)
    proc = tflab(tmp_path / "state", "workspace", "show", "gpu01", "alice", "-i", str(inv), "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["url"] == url
    assert row["ca_fingerprint"] == fingerprint_of(cert)
    assert row["ssh"] == "ssh -p 22001 alice@192.0.2.11"
    assert row["jupyter_port"] == 28001  # still allocated, no longer a URL
    assert "jupyter" not in row
    text = tflab(tmp_path / "state", "workspace", "show", "gpu01", "alice", "-i", str(inv))
    assert text.returncode == 0, text.stderr
    assert f"url: {url}" in text.stdout
    assert f"ca_fingerprint: {fingerprint_of(cert)}" in text.stdout
    assert "tflab ca show > lab-ca.crt" in text.stdout
    assert "http://" not in text.stdout


def test_workspace_list_before_the_first_apply(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path)
    proc = tflab(tmp_path / "state", "workspace", "list", "-i", str(inv), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["alice"]["url"] == "https://192.0.2.11/alice/"
    assert rows["bob"]["url"] == "https://192.0.2.11/bob/"
    assert rows["alice"]["ca_fingerprint"] is None
    text = tflab(tmp_path / "state", "workspace", "list", "-i", str(inv))
    assert "https://192.0.2.11/alice/" in text.stdout and "http://" not in text.stdout
    assert "no lab CA yet at" in " ".join(text.stdout.split())


# --- runs: the extra var and the end-of-run report ----------------------------------------------

def report_events(host: str, lines: list[str]) -> list[dict[str, Any]]:
    """What ansible-runner hands over for a converged host with the tf_workspace report."""
    return [
        {"event": "playbook_on_play_start", "event_data": {"play": "Provision"}},
        {"event": "runner_on_ok", "event_data": {
            "host": host, "task": "Tflab report | Workspaces",
            "res": {"changed": False, "tflab_report": {"workspaces": lines, "recreated": []}}}},
        {"event": "playbook_on_stats", "event_data": {"ok": {host: 12}, "changed": {host: 0}}},
    ]


FakeRunner = tuple[list[dict[str, Any]], Callable[..., None]]


@pytest.fixture
def fake_runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRunner]:
    """Replaces ansible_runner.run_async: records each call's keywords, replays set events."""
    calls: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []

    def run_async(event_handler: Callable[[dict[str, Any]], bool], cancel_callback: Callable[[], bool],
                  **kwargs: Any) -> tuple[threading.Thread, Any]:
        calls.append(kwargs)
        thread = threading.Thread(target=lambda: [event_handler(e) for e in events])
        thread.start()
        return thread, SimpleNamespace(status="successful", rc=0)

    def replay(new: list[dict[str, Any]]) -> None:
        events[:] = new

    monkeypatch.setattr(runner.ansible_runner, "run_async", run_async)
    yield calls, replay


OLD_LINES = ["alice: ssh -p 22001 alice@gpu01  jupyter http://gpu01:28001/",
             "bob: ssh -p 22002 bob@gpu01  jupyter http://gpu01:28002/",
             "alice: created"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_apply_reports_https_urls_and_the_fingerprint_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        fake_runner: FakeRunner) -> None:
    calls, replay = fake_runner
    cert = make_ca(tmp_path / "state" / "ca")
    inv = write_inventory(tmp_path, {"tflab_https_port": 8443}, {"tflab_public_name": "gpu01.lab"})
    replay(report_events("gpu01", OLD_LINES))
    state = str(tmp_path / "state")
    rc, out, err = run_cli(capsys, "apply", "-i", str(inv), "--state-dir", state, "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["workspace_urls"] == {"gpu01": {"alice": "https://gpu01.lab:8443/alice/",
                                                  "bob": "https://gpu01.lab:8443/bob/"}}
    assert result["ca_fingerprint"] == fingerprint_of(cert)
    assert result["reports"]["gpu01"]["workspaces"] == [
        "alice: ssh -p 22001 alice@gpu01  jupyter https://gpu01.lab:8443/alice/",
        "bob: ssh -p 22002 bob@gpu01  jupyter https://gpu01.lab:8443/bob/",
        "alice: created"]
    assert calls[-1]["extravars"] == {"tflab_ca_dir": str(tmp_path / "state" / "ca")}

    rc, out, err = run_cli(capsys, "apply", "-i", str(inv), "--state-dir", state)
    assert rc == 0, err
    flat = " ".join(out.split())
    assert "gpu01 · workspaces: alice: ssh -p 22001 alice@gpu01 jupyter https://gpu01.lab:8443/alice/" in flat
    assert out.count(fingerprint_of(cert)) == 1
    assert "tflab ca show > lab-ca.crt" in flat
    assert "http://" not in out


@pytest.mark.parametrize(("line", "url"), [
    # The role's own https URL (what nginx serves) stays, once.
    ("alice: ssh -p 22001 alice@gpu01  jupyter https://gpu01.lab:8443/alice/", "https://gpu01.lab:8443/alice/"),
    ("alice: ssh -p 22001 alice@gpu01  jupyter https://10.1.0.5/alice/", "https://10.1.0.5/alice/"),
    # No URL from the role: the inventory's.
    ("alice: ssh -p 22001 alice@gpu01", "https://192.0.2.11/alice/"),
])
def test_the_report_keeps_the_roles_https_url(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_runner: FakeRunner,
        line: str, url: str) -> None:
    _, replay = fake_runner
    replay(report_events("gpu01", [line]))
    rc, out, err = run_cli(capsys, "apply", "-i", str(write_inventory(tmp_path)),
                           "--state-dir", str(tmp_path / "state"), "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["workspace_urls"] == {"gpu01": {"alice": url}}
    assert result["reports"]["gpu01"]["workspaces"] == [f"alice: ssh -p 22001 alice@gpu01  jupyter {url}"]


def test_a_report_without_a_ca_yet_still_gets_urls(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        fake_runner: FakeRunner) -> None:
    _, replay = fake_runner
    replay(report_events("gpu01", OLD_LINES[:1]))
    rc, out, err = run_cli(capsys, "apply", "-i", str(write_inventory(tmp_path)),
                           "--state-dir", str(tmp_path / "state"), "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["workspace_urls"] == {"gpu01": {"alice": "https://192.0.2.11/alice/"}}
    assert result["ca_fingerprint"] is None


@pytest.mark.parametrize("argv", [
    ("apply",),
    ("apply", "--tags", "workspaces", "--serial", "1"),
    ("plan",),
    ("check",),
    ("status",),
    ("workspace", "rotate-secret", "gpu01", "alice"),
    ("workspace", "add", "gpu01", "carol", "--uid", "2003"),
    ("workspace", "remove", "gpu01", "bob"),
], ids=lambda a: "-".join(a))
@pytest.mark.parametrize("ca_dir", [None, "/srv/tflab-ca", "~/lab-ca"])
def test_every_run_gets_the_effective_ca_dir(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], ca_dir: str | None,
        fake_runner: FakeRunner) -> None:
    calls, _ = fake_runner
    inv = write_inventory(tmp_path, {"tflab_ca_dir": ca_dir} if ca_dir else {})
    rc, _, err = run_cli(capsys, *argv, "-i", str(inv), "--state-dir", str(tmp_path / "state"))
    assert rc == 0, err
    expected = Path(ca_dir).expanduser() if ca_dir else tmp_path / "state" / "ca"
    assert len(calls) == 1
    assert calls[0]["extravars"]["tflab_ca_dir"] == str(expected)
    assert str(expected) not in calls[0]["cmdline"]  # one place: the extra vars


def test_a_vars_file_may_set_the_ca_dir_and_two_values_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        fake_runner: FakeRunner) -> None:
    calls, _ = fake_runner
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text(yaml.safe_dump({"tflab_ca_dir": "/srv/from-e"}))
    vars_file.chmod(0o600)
    state = str(tmp_path / "state")
    rc, _, err = run_cli(capsys, "apply", "-i", str(write_inventory(tmp_path)), "-e", str(vars_file),
                         "--state-dir", state)
    assert rc == 0, err
    assert calls[-1]["extravars"]["tflab_ca_dir"] == "/srv/from-e"
    other = tmp_path / "other"
    other.mkdir()
    rc, _, err = run_cli(capsys, "apply", "-i", str(write_inventory(other, {"tflab_ca_dir": "/srv/inv"})),
                         "-e", str(vars_file), "--state-dir", state)
    assert rc == 1
    assert "tflab_ca_dir must be one directory for the whole inventory" in " ".join(err.split())
    assert len(calls) == 1


# --- tflab demo --------------------------------------------------------------------------

class FakeDocker:
    def run(self, *args: str, check: bool = True, stdin: bytes | None = None) -> str:
        return ""


def test_demo_prints_the_https_url_and_how_to_trust_the_ca(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        fake_runner: FakeRunner) -> None:
    calls, replay = fake_runner
    state = tmp_path / "state"
    cert = make_ca(state / "ca")
    published = {22: 40022, cli.DEMO_SSH_PORT: 40023, cli.DEMO_HTTPS_PORT: 40443}
    started: list[tuple[int, ...]] = []

    def sandbox_up(ctx: cli.Context, prefix: str, count: int, privileged: bool,
                   extra_ports: tuple[int, ...] = ()) -> Path:
        started.append(extra_ports)
        path = state / "sandbox" / "inventory.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"sandbox": {"hosts": {cli.DEMO_HOST: {
            "ansible_host": "127.0.0.1", "ansible_port": 40022}}}}))
        return path

    def ssh_key(root: Path) -> Path:
        (root / "sandbox").mkdir(parents=True, exist_ok=True, mode=0o700)
        key = root / "sandbox" / "id_ed25519"
        key.with_suffix(".pub").write_text(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2bX1uQy7p3Yv0mJ8s5k2T9cR4wE6nH1aL0dF3gV7s demo\n")
        return key

    monkeypatch.setattr(cli, "sandbox_docker", FakeDocker)
    monkeypatch.setattr(cli, "sandbox_up", sandbox_up)
    monkeypatch.setattr(sandbox, "ensure_base_image", lambda docker, recipe: recipe.tag)
    monkeypatch.setattr(sandbox, "copy_image_to_host", lambda *a: None)
    monkeypatch.setattr(sandbox, "ensure_ssh_key", ssh_key)
    monkeypatch.setattr(sandbox, "published_port", lambda docker, name, port=22: published[port])
    replay(report_events(cli.DEMO_HOST, [f"demo: ssh -p 22001 demo@{cli.DEMO_HOST}  jupyter "
                                         "https://127.0.0.1/demo/"]))

    rc, out, err = run_cli(capsys, "demo", "--state-dir", str(state))
    assert rc == 0, err
    assert started == [(cli.DEMO_SSH_PORT, cli.DEMO_HTTPS_PORT)]  # the Jupyter port is not published
    url = "https://127.0.0.1:40443/demo/"
    lines = [line.strip() for line in out.splitlines()]
    assert f"ssh -p 40023 -i {state / 'sandbox' / 'id_ed25519'} demo@127.0.0.1" in lines
    assert any(line.startswith(f"Jupyter: {url}  (token: docker exec {cli.DEMO_HOST} cat ") for line in lines)
    assert f"Trust the lab CA (SHA-256 {fingerprint_of(cert)}) that signed the URL's certificate:" in lines
    assert f"tflab ca show --state-dir {state} > lab-ca.crt; curl --cacert lab-ca.crt {url}api" in lines
    assert f"{cli.DEMO_HOST} · workspaces: demo: ssh -p 22001 demo@{cli.DEMO_HOST}  jupyter {url}" in out
    assert "http://" not in out
    # The certificate must name the address of the URL; the demo's vars say so and validate.
    demo_vars = yaml.safe_load((state / "sandbox" / "demo-vars.yml").read_text())
    assert demo_vars["tflab_public_name"] == "127.0.0.1"
    assert calls[0]["extravars"] == {"tflab_ca_dir": str(state / "ca")}
