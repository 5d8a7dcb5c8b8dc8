"""`tflab audit logins`: who logged into which workspace, when, from where.

The record is the workspace containers' own log in the journal (the tf_workspace role uses
Docker's journald driver, so each line carries the workspace and owner as fields, and
journal_upload forwards it to the central log host). playbooks/audit.yml returns the raw entries;
this module turns sshd's and Jupyter's lines into login records. Formats are those the test
images really print (OpenSSH 8.4 at LogLevel VERBOSE running as the user; jupyter_server 2 /
notebook 7 and notebook 6 behind the front door with trust_xheaders); fixtures in
tests/unit/fixtures/audit/.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

CONTAINER_PREFIX = "tflab-ws-"
TAG_PREFIX = "tflab-ws/"

Method = Literal["ssh", "jupyter"]
Result = Literal["accepted", "refused"]

# Anything that looks like a token in a URL or header is blanked before it can reach a record.
_SECRET = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)

# sshd (OpenSSH 8.4, LogLevel VERBOSE, -e: no "sshd[pid]:" prefix in the container's output).
_ADDR = r"(?P<addr>[0-9A-Fa-f:.]+)"
_SSH_CONNECTION = re.compile(rf"^Connection from {_ADDR} port (?P<port>\d+) on ")
_SSH_ACCEPTED = re.compile(rf"^Accepted (?P<how>\S+) for (?P<user>\S+) from {_ADDR} port (?P<port>\d+) ssh2"
                           r"(?:: (?P<alg>\S+) (?P<fp>SHA256:\S+))?")
_SSH_FAILED = re.compile(rf"^Failed (?P<how>\S+) for (?:invalid user )?(?P<user>\S+) from {_ADDR} "
                         r"port (?P<port>\d+) ssh2(?:: (?P<alg>\S+) (?P<fp>SHA256:\S+))?")
_SSH_INVALID = re.compile(rf"^Invalid user (?P<user>.*?) from {_ADDR} port (?P<port>\d+)")
_SSH_CLOSED = re.compile(r"^(?:Connection (?:closed|reset) by|Disconnected from) "
                         rf"(?P<kind>authenticating|invalid) user (?P<user>.*?) {_ADDR} port (?P<port>\d+)")
_SSH_DISCONNECTING = re.compile(r"^Disconnecting (?P<kind>authenticating|invalid) user (?P<user>.*?) "
                                rf"{_ADDR} port (?P<port>\d+): (?P<reason>.*?)(?: \[preauth\])?$")
_SSH_TIMEOUT = re.compile(r"^Timeout before authentication for (?:connection from )?"
                          rf"{_ADDR} port (?P<port>\d+)")

# Jupyter's request log: "[W 2026-12-02 06:06:18.489 ServerApp] 401 POST /alice/login (@192.0.2.10) ..."
# (jupyter_server 2: "(user@addr)"), "[I 06:07:05.619 NotebookApp] 302 POST /alice/login (192.0.2.10)"
# (notebook 6).
_JUPYTER_REQUEST = re.compile(r"^\[[A-Z] [^\]]*\] (?P<status>\d{3}) (?P<verb>[A-Z]+) (?P<uri>\S+) "
                              r"\((?:(?P<juser>[^@()\s]*)@)?(?P<addr>[^()\s]*)\)")


@dataclass(frozen=True)
class Login:
    """One login attempt. `time` is ISO 8601 UTC; `key_fingerprint` is SSH only."""

    time: str
    host: str
    workspace: str
    user: str
    method: Method
    result: Result
    source: str
    key_fingerprint: str | None = None
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def redact(text: str) -> str:
    return _SECRET.sub(r"\1[secret]", text)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: a span back from now (90s, 30m, 1h, 2d, 1w) or a time (2026-12-01T10:00, a date;
    UTC unless it names an offset)."""
    now = now or datetime.now(UTC)
    span = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if span:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[span[2]]
        return now - timedelta(**{unit: int(span[1])})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r}: give a span back from now (30m, 1h, 2d, 1w) "
                         f"or a time such as 2026-12-01T10:00 (UTC) or 2026-12-01") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text(value: Any) -> str:
    """A journal JSON field: a string, or a list of byte values for non-UTF-8 data."""
    if isinstance(value, list):
        return bytes(v for v in value if isinstance(v, int) and 0 <= v < 256).decode("utf-8", "replace")
    return "" if value is None else str(value)


def _workspace(entry: Mapping[str, Any]) -> str:
    name = _text(entry.get("IO_TFLAB_WORKSPACE"))
    if name:
        return name
    container = _text(entry.get("CONTAINER_NAME"))
    if container.startswith(CONTAINER_PREFIX):
        return container[len(CONTAINER_PREFIX):]
    tag = _text(entry.get("CONTAINER_TAG"))
    return tag[len(TAG_PREFIX):] if tag.startswith(TAG_PREFIX) else ""


def _time(entry: Mapping[str, Any]) -> str:
    micros = int(_text(entry.get("__REALTIME_TIMESTAMP")) or 0)
    moment = datetime.fromtimestamp(micros / 1_000_000, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class _Attempt:
    """An SSH connection that has not logged in (yet): what its refused tries said."""

    time: str
    user: str
    fingerprints: list[str] = field(default_factory=list)
    invalid_user: bool = False


def parse_entries(entries: Iterable[Mapping[str, Any]], default_host: str = "") -> list[Login]:
    """Login records from journal entries (any order; sorted by time here). An SSH connection
    that logs in is one `accepted` record, whatever keys it tried first; one that ends without
    logging in is one `refused` record with the last key it offered."""
    ordered = sorted(entries, key=lambda e: int(_text(e.get("__REALTIME_TIMESTAMP")) or 0))
    logins: list[Login] = []
    pending: dict[tuple[str, str, str, str], _Attempt] = {}
    # Connections already recorded as refused: sshd may log two closing lines for one.
    finished: set[tuple[str, str, str, str]] = set()
    for entry in ordered:
        workspace = _workspace(entry)
        if not workspace:
            continue
        host = _text(entry.get("_HOSTNAME")) or default_host
        owner = _text(entry.get("IO_TFLAB_OWNER")) or workspace
        message = _text(entry.get("MESSAGE")).strip()
        when = _time(entry)

        def refused(key: tuple[str, str, str, str], user: str, detail: str, when: str = when) -> None:
            """The connection `key` (host, workspace, address, port) ended without a login."""
            if key in finished:
                return
            finished.add(key)
            attempt = pending.pop(key, None) or _Attempt(when, user)
            tried = len(attempt.fingerprints)
            reason = detail or ("invalid user" if attempt.invalid_user
                                else f"{tried} key(s) refused" if tried else "no key accepted")
            logins.append(Login(when, key[0], key[1], user or attempt.user, "ssh", "refused", key[2],
                                attempt.fingerprints[-1] if attempt.fingerprints else None, redact(reason)))

        if m := _SSH_CONNECTION.match(message):
            # A new connection from this address and port (ports are reused over days).
            finished.discard((host, workspace, m["addr"], m["port"]))
            pending.pop((host, workspace, m["addr"], m["port"]), None)
        elif m := _SSH_ACCEPTED.match(message):
            finished.add((host, workspace, m["addr"], m["port"]))
            pending.pop((host, workspace, m["addr"], m["port"]), None)
            logins.append(Login(when, host, workspace, m["user"], "ssh", "accepted", m["addr"], m["fp"],
                                m["how"]))
        elif m := _SSH_FAILED.match(message):
            attempt = pending.setdefault((host, workspace, m["addr"], m["port"]), _Attempt(when, m["user"]))
            if m["fp"]:
                attempt.fingerprints.append(m["fp"])
        elif m := _SSH_INVALID.match(message):
            attempt = pending.setdefault((host, workspace, m["addr"], m["port"]), _Attempt(when, m["user"]))
            attempt.invalid_user = True
        elif m := _SSH_DISCONNECTING.match(message):
            refused((host, workspace, m["addr"], m["port"]), m["user"], m["reason"].lower())
        elif m := _SSH_CLOSED.match(message):
            refused((host, workspace, m["addr"], m["port"]), m["user"],
                    "invalid user" if m["kind"] == "invalid" else "")
        elif m := _SSH_TIMEOUT.match(message):
            key = (host, workspace, m["addr"], m["port"])
            if key in pending:
                refused(key, pending[key].user, "timeout before authentication")
        elif m := _JUPYTER_REQUEST.match(message):
            record = _jupyter(m, when, host, workspace, owner)
            if record:
                logins.append(record)
    # Connections whose end is not in the record (still open, or the line was lost) but that
    # already had keys refused.
    for (host, workspace, addr, _port), attempt in pending.items():
        logins.append(Login(attempt.time, host, workspace, attempt.user, "ssh", "refused", addr,
                            attempt.fingerprints[-1] if attempt.fingerprints else None,
                            "no end of the connection in the record"))
    return sorted(logins, key=lambda r: r.time)


def _jupyter(m: re.Match[str], when: str, host: str, workspace: str, owner: str) -> Login | None:
    """A login form post (302: logged in, 4xx: refused) or a refused token in a URL. Jupyter
    logs successful requests at debug level only, so a token in a URL that works leaves no
    line: such logins are not in the record (the login form is)."""
    status, verb, uri = int(m["status"]), m["verb"], m["uri"]
    path, _, query = uri.partition("?")
    if verb == "POST" and path.rstrip("/").endswith("/login"):
        if status == 302:
            return Login(when, host, workspace, owner, "jupyter", "accepted", m["addr"], None, "login form")
        if 400 <= status < 500:
            return Login(when, host, workspace, owner, "jupyter", "refused", m["addr"], None,
                         f"login form ({status})")
        return None
    if status in (401, 403) and re.search(r"(^|&)token=", query):
        return Login(when, host, workspace, owner, "jupyter", "refused", m["addr"], None,
                     f"token in URL refused ({status})")
    return None


def logins_from_reports(reports: Mapping[str, Mapping[str, Any]]) -> list[Login]:
    """The records in audit.yml's reports (`audit_entries` per host that answered)."""
    logins: list[Login] = []
    for host, report in reports.items():
        entries = report.get("audit_entries") or []
        if isinstance(entries, list):
            logins.extend(parse_entries([e for e in entries if isinstance(e, Mapping)], host))
    unique = {(r.time, r.host, r.workspace, r.method, r.source, r.result, r.key_fingerprint, r.detail): r
              for r in logins}
    return sorted(unique.values(), key=lambda r: r.time)


COLUMNS = ("time", "host", "workspace", "user", "method", "result", "source", "key_fingerprint", "detail")


def render_logins(logins: list[Login], console: Console, title: str) -> None:
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, no_wrap=column in ("time", "key_fingerprint"))
    for login in logins:
        row = login.as_json()
        style = "red" if login.result == "refused" else None
        table.add_row(*(str(row[c] or "-") for c in COLUMNS), style=style)
    console.print(table)
