#!/usr/bin/env python3
"""Check a tflab workspace's Jupyter from outside, the way a browser or client would.

Used by the Molecule verify play from the client container. Each check prints one JSON line and
the script exits non-zero on the first failure, so the verify play can assert on the output.

  jupyter_check.py URL unauthenticated
  jupyter_check.py URL wrong-token
  jupyter_check.py URL file PATH TEXT          (credentials from JUPYTER_TOKEN or JUPYTER_PASSWORD)
  jupyter_check.py URL kernel CODE EXPECTED    (runs CODE in a new kernel over the websocket API)

Credentials come from the environment, never from the command line (process lists are visible).
URL is the workspace's https://<lab>/<name> through the front door; the lab CA that must sign the
front door's certificate is JUPYTER_CA (no unverified TLS, for requests and the websocket alike).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

import requests
import websocket

TIMEOUT = 60
CA = os.environ.get("JUPYTER_CA", "")


def new_session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # no proxy from the environment: a proxy's own 403 must not pass for Jupyter's
    s.verify = CA or True
    return s


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def fail(**fields: Any) -> None:
    emit(ok=False, **fields)
    sys.exit(1)


def session(base: str) -> tuple[requests.Session, dict[str, str]]:
    """An authenticated session: token header, or the login form with the password."""
    s = new_session()
    token = os.environ.get("JUPYTER_TOKEN", "")
    password = os.environ.get("JUPYTER_PASSWORD", "")
    if token:
        return s, {"Authorization": f"token {token}"}
    if not password:
        fail(check="login", error="set JUPYTER_TOKEN or JUPYTER_PASSWORD")
    s.get(f"{base}/login", timeout=TIMEOUT)
    xsrf = s.cookies.get("_xsrf", "")
    r = s.post(f"{base}/login", data={"password": password, "_xsrf": xsrf}, allow_redirects=False,
               timeout=TIMEOUT)
    if r.status_code not in (302, 303):
        fail(check="login", status=r.status_code)
    return s, {"X-XSRFToken": s.cookies.get("_xsrf", xsrf)}


def unauthenticated(base: str) -> None:
    s = new_session()
    api = s.get(f"{base}/api/contents", timeout=TIMEOUT)
    kernels = s.post(f"{base}/api/kernels", json={}, timeout=TIMEOUT)
    tree = s.get(f"{base}/tree", allow_redirects=False, timeout=TIMEOUT)
    refused = api.status_code == 403 and kernels.status_code == 403 and tree.status_code in (301, 302)
    login = "/login" in tree.headers.get("Location", "")
    emit(ok=refused and login, check="unauthenticated", contents=api.status_code,
         kernels=kernels.status_code, tree=tree.status_code, location=tree.headers.get("Location", ""))
    if not (refused and login):
        sys.exit(1)


def wrong_token(base: str) -> None:
    s = new_session()
    r = s.get(f"{base}/api/contents", headers={"Authorization": "token not-the-token"}, timeout=TIMEOUT)
    emit(ok=r.status_code == 403, check="wrong-token", status=r.status_code)
    if r.status_code != 403:
        sys.exit(1)


def file(base: str, path: str, text: str) -> None:
    s, headers = session(base)
    r = s.get(f"{base}/api/contents/{path}", params={"content": "1", "type": "file"}, headers=headers,
              timeout=TIMEOUT)
    if r.status_code != 200:
        fail(check="file", status=r.status_code)
    body = r.json()
    ok = text in body.get("content", "")
    emit(ok=ok, check="file", path=body.get("path"), content=body.get("content", "")[:200])
    if not ok:
        sys.exit(1)


def kernel(base: str, code: str, expected: str) -> None:
    s, headers = session(base)
    r = s.post(f"{base}/api/kernels", json={"name": "python3"}, headers=headers, timeout=TIMEOUT)
    if r.status_code not in (200, 201):
        fail(check="kernel", step="start", status=r.status_code, body=r.text[:300])
    kernel_id = r.json()["id"]
    ws_url = base.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
    cookie = "; ".join(f"{k}={v}" for k, v in s.cookies.get_dict().items())
    ws_headers = [f"{k}: {v}" for k, v in headers.items()] + ([f"Cookie: {cookie}"] if cookie else [])
    ws = websocket.create_connection(ws_url, header=ws_headers, timeout=TIMEOUT,
                                     sslopt={"ca_certs": CA} if CA else None)
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "molecule", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    out, error, deadline = "", "", time.monotonic() + 300
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream" and msg["content"].get("name") == "stdout":
            out += msg["content"]["text"]
        elif kind == "error":
            error = f"{msg['content']['ename']}: {msg['content']['evalue']}"
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            break
    ws.close()
    s.delete(f"{base}/api/kernels/{kernel_id}", headers=headers, timeout=TIMEOUT)
    lines = out.strip().splitlines()
    ok = not error and bool(lines) and lines[-1].strip() == expected
    emit(ok=ok, check="kernel", stdout=out.strip()[-300:], error=error)
    if not ok:
        sys.exit(1)


def main(argv: list[str]) -> None:
    base, action, *rest = argv
    base = base.rstrip("/")
    actions = {"unauthenticated": unauthenticated, "wrong-token": wrong_token, "file": file,
               "kernel": kernel}
    actions[action](base, *rest)


if __name__ == "__main__":
    main(sys.argv[1:])
