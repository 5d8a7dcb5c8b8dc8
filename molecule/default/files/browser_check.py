#!/usr/bin/python3
"""Real-browser check of a workspace's Jupyter, run ON a Debian 12 client.

Debian 12 packages it needs (apt-get install --no-install-recommends):
    chromium chromium-driver python3-selenium libnss3-tools

What it proves, as a user would see it: headless Chromium, trusting the lab CA the way Chromium
on Linux really does (the NSS shared DB, never --ignore-certificate-errors), opens the workspace
URL, logs in through Jupyter's own login form, creates a notebook, types a cell, runs it with
Shift+Enter (so the kernel websocket goes through the lab's proxy), waits for the expected
TensorFlow version in the output, saves with Ctrl+S and checks through the Contents API that the
saved file holds that output. Works with notebook 7 (jupyter_server 2) and classic notebook 6.

    browser_check.py --url https://lab.example/alice/ --token-file /root/alice.token \
        --ca /root/lab-ca.crt --notebook tflab-browser-check.ipynb --expect 2.9.3 \
        --screenshot /tmp/alice.png
    browser_check.py --url https://lab.example/alice/ --ca /root/lab-ca.crt --expect-no-answer
    browser_check.py --url https://mon.example/prometheus/consoles/tflab-overview.html \
        --ca /root/lab-ca.crt --page-shows alice --page-shows bob --screenshot /tmp/overview.png

--page-shows opens a page that needs no login (the admin's monitoring pages, reachable only from
the admin CIDRs) and waits until its rendered text holds every given string.

Exit codes: 0 check passed; 1 check failed (one line "FAIL: reason" on stderr; a screenshot is
still written if a page was open); 2 usage or local set-up error (missing file, certutil failed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CODE = 'import tensorflow as tf; print("TF", tf.__version__)'
# Chromium's network errors that mean "nobody answered" (firewall DROP or REJECT, reset).
NO_ANSWER_ERRORS = {
    "ERR_CONNECTION_REFUSED",
    "ERR_CONNECTION_TIMED_OUT",
    "ERR_CONNECTION_RESET",
    "ERR_CONNECTION_CLOSED",
    "ERR_CONNECTION_FAILED",
    "ERR_TIMED_OUT",
    "ERR_ADDRESS_UNREACHABLE",
    "ERR_NETWORK_UNREACHABLE",
    "ERR_EMPTY_RESPONSE",
}
NET_ERROR = re.compile(r"\b(?:NET::)?(ERR_[A-Z0-9_]+)\b")


class CheckFailed(Exception):
    """The check's verdict: the lab did not behave as a user needs. The message is the reason."""


class SetupError(Exception):
    """This client could not even run the check (missing file, certutil failure)."""


@dataclass(frozen=True)
class Args:
    url: str
    secret: str | None
    ca: Path | None
    notebook: str
    expect: str
    screenshot: Path | None
    expect_no_answer: bool
    page_shows: tuple[str, ...]
    no_answer_timeout: float
    run_timeout: float
    window: tuple[int, int]


def parse_args(argv: list[str]) -> Args:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="workspace URL, e.g. https://lab.example/alice/")
    p.add_argument("--token-file", type=Path, help="file holding the Jupyter token")
    p.add_argument("--password-file", type=Path, help="file holding the Jupyter password (wins over token)")
    p.add_argument("--ca", type=Path, help="PEM CA certificate to trust (imported into NSS)")
    p.add_argument("--notebook", default="tflab-browser-check.ipynb", help="notebook path under the root")
    p.add_argument("--expect", default="2.9.3", help="text the cell's output must contain")
    p.add_argument("--screenshot", type=Path, help="PNG written at the end (also on failure)")
    p.add_argument(
        "--expect-no-answer",
        action="store_true",
        help="pass only if the page gets no answer (refused, timed out, reset)",
    )
    p.add_argument("--page-shows", action="append", default=[], metavar="TEXT",
                   help="no login: pass once the page's rendered text holds TEXT (repeatable)")
    p.add_argument("--no-answer-timeout", type=float, default=15.0, help="seconds (default 15)")
    p.add_argument(
        "--run-timeout",
        type=float,
        default=240.0,
        help="seconds for kernel start + cell run (default 240; TF import is slow)",
    )
    p.add_argument("--window", default="1400x1000", help="browser window WxH (default 1400x1000)")
    a = p.parse_args(argv)
    if not a.url.endswith("/"):
        a.url += "/"
    secret = None
    if not a.expect_no_answer and not a.page_shows:
        source = a.password_file or a.token_file
        if source is None:
            p.error("--token-file or --password-file is needed (unless --expect-no-answer)")
        secret = read_secret(source)
    w, _, h = a.window.partition("x")
    return Args(
        a.url,
        secret,
        a.ca,
        a.notebook.lstrip("/"),
        a.expect,
        a.screenshot,
        a.expect_no_answer,
        tuple(a.page_shows),
        a.no_answer_timeout,
        a.run_timeout,
        (int(w), int(h)),
    )


def read_secret(path: Path) -> str:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise SetupError(f"cannot read {path}: {e.strerror}") from e
    if not secret:
        raise SetupError(f"{path} is empty")
    return secret


def make_home(ca: Path | None) -> Path:
    """A fresh HOME whose NSS shared DB (~/.pki/nssdb) trusts only the given CA.

    Fresh on every run so a CA imported by an earlier run cannot hide a missing one; Chromium
    on Linux reads exactly this DB for locally trusted roots.
    """
    if ca is not None and not ca.is_file():
        raise SetupError(f"CA file {ca} not found")
    home = Path(tempfile.mkdtemp(prefix="tflab-browser-"))
    try:
        nssdb = home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True)
        certutil(["-N", "--empty-password"], nssdb)
        if ca is not None:
            certutil(["-A", "-t", "C,,", "-n", "tflab-lab-ca", "-i", str(ca)], nssdb)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    return home


def certutil(args: list[str], nssdb: Path) -> None:
    cmd = ["certutil", "-d", f"sql:{nssdb}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SetupError(f"{' '.join(cmd)} failed: {(r.stderr or r.stdout).strip()}")


def start_browser(home: Path, a: Args) -> WebDriver:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    opts.add_argument("--headless=new")
    opts.add_argument(f"--window-size={a.window[0]},{a.window[1]}")
    opts.add_argument(f"--user-data-dir={home / 'profile'}")
    # Containers give a 64 MiB /dev/shm, too small for Chromium's renderer.
    opts.add_argument("--disable-dev-shm-usage")
    # Chromium refuses to run as root with its sandbox (the clients run the check as root).
    if os.geteuid() == 0:
        opts.add_argument("--no-sandbox")
    # No quiet fallbacks: a bad certificate must fail, never be clicked through.
    opts.set_capability("acceptInsecureCerts", False)
    env = dict(os.environ, HOME=str(home))
    service = Service(CHROMEDRIVER, env=env)
    try:
        return webdriver.Chrome(service=service, options=opts)
    except WebDriverException as e:
        raise SetupError(f"cannot start Chromium/chromedriver: {first_line(e.msg)}") from e


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else "(no message)"


def page_net_error(driver: WebDriver) -> str | None:
    """Chromium's error code if the current page is its error page or TLS interstitial."""
    try:
        url = driver.current_url
        source = driver.page_source
    except WebDriverException:
        return None
    is_error_page = url.startswith("chrome-error://") or "main-frame-error" in source
    # The certificate interstitial keeps the target URL; its body carries the NET::ERR_CERT_ code.
    is_interstitial = "ERR_CERT_" in source or "ERR_SSL_" in source
    if not (is_error_page or is_interstitial):
        return None
    m = NET_ERROR.search(source)
    return m.group(1) if m else "unknown browser error page"


def load(driver: WebDriver, url: str) -> str | None:
    """Open url; return Chromium's network error code, or None when a real page loaded."""
    try:
        driver.get(url)
    except TimeoutException:
        return "ERR_TIMED_OUT (page load timeout)"
    except WebDriverException as e:
        m = NET_ERROR.search(e.msg or "")
        if m:
            return m.group(1)
        raise CheckFailed(f"browser error opening {url}: {first_line(e.msg)}") from e
    return page_net_error(driver)


def check_no_answer(driver: WebDriver, a: Args) -> str:
    driver.set_page_load_timeout(a.no_answer_timeout)
    started = time.monotonic()
    err = load(driver, a.url)
    took = time.monotonic() - started
    if err is None:
        raise CheckFailed(f"{a.url} answered (title {driver.title!r}) but no answer was expected")
    code = err.split()[0]
    if code not in NO_ANSWER_ERRORS:
        # A TLS or HTTP-level error means a server answered; a DNS error proves nothing.
        raise CheckFailed(f"{a.url} failed with {err}, which is not 'no answer'")
    return f"no answer from {a.url} as expected ({err}, {took:.1f} s)"


def check_page_shows(driver: WebDriver, a: Args) -> str:
    driver.set_page_load_timeout(60)
    err = load(driver, a.url)
    if err is not None:
        raise CheckFailed(f"{a.url} did not load: {err}")

    def missing() -> list[str]:
        text = driver.find_element(By.TAG_NAME, "body").text
        return [t for t in a.page_shows if t not in text]

    # Graphs and tables may fill in after the page loads (the console libraries query the API).
    wait_for(lambda: not missing() or None, a.run_timeout,
             f"{a.url} to show {', '.join(a.page_shows)}")
    return f"{a.url} shows {', '.join(a.page_shows)} (title {driver.title!r})"


def login(driver: WebDriver, a: Args) -> None:
    driver.set_page_load_timeout(60)
    err = load(driver, a.url)
    if err is not None:
        hint = " (is the lab CA trusted? --ca)" if "CERT" in err or "SSL" in err else ""
        raise CheckFailed(f"cannot open {a.url}: {err}{hint}")
    # Classic notebook 6 keeps the page hidden until its JS has loaded: wait until it can be typed in.
    try:
        field = wait_for(lambda: usable(driver, "password_input"), 30, "the login form")
    except CheckFailed as e:
        raise CheckFailed(
            f"no usable Jupyter login form at {driver.current_url} (title {driver.title!r})"
        ) from e
    field.send_keys(a.secret or "")
    submit = driver.find_elements(By.ID, "login_submit")
    if submit:
        submit[0].click()
    else:
        field.send_keys(Keys.ENTER)
    wait_for(
        lambda: (
            "/login" not in urllib.parse.urlparse(driver.current_url).path
            or bool(driver.find_elements(By.CSS_SELECTOR, ".message.error, .alert-danger, .alert"))
        ),
        30,
        "the login form's answer",
    )
    if "/login" in urllib.parse.urlparse(driver.current_url).path:
        raise CheckFailed(f"login rejected at {driver.current_url}: {login_message(driver)}")


def usable(driver: WebDriver, element_id: str) -> WebElement | None:
    found = [e for e in driver.find_elements(By.ID, element_id) if e.is_displayed() and e.is_enabled()]
    return found[0] if found else None


def login_message(driver: WebDriver) -> str:
    for css in (".message.error", ".alert-danger", ".alert", ".message"):
        found = driver.find_elements(By.CSS_SELECTOR, css)
        if found and found[0].text.strip():
            return found[0].text.strip().replace("\n", " ")
    return "still on the login page"


def wait_for(cond: Callable[[], T | None], timeout: float, what: str, poll: float = 0.5) -> T:
    """Poll cond until it returns something truthy (returned), else fail naming what we waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = cond()
            if result:
                return result
        except WebDriverException:
            pass  # the page is still rendering or navigating; ask again
        time.sleep(poll)
    raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}")


# Contents API calls from inside the logged-in page: the browser's own cookie and the _xsrf
# token, as the Jupyter UI itself does it (no separate HTTP client with its own TLS trust).
API_JS = """
const [method, path, body, done] = arguments;
const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
fetch(path, {method: method, credentials: "same-origin",
             headers: {"Content-Type": "application/json", "X-XSRFToken": decodeURIComponent(xsrf)},
             body: body})
  .then(r => r.text().then(t => done({status: r.status, text: t})))
  .catch(e => done({status: 0, text: String(e)}));
"""


def api(driver: WebDriver, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    driver.set_script_timeout(60)
    r = driver.execute_async_script(API_JS, method, path, json.dumps(body) if body else None)
    return int(r["status"]), str(r["text"])


def contents_path(a: Args) -> str:
    base = urllib.parse.urlparse(a.url).path
    return base + "api/contents/" + urllib.parse.quote(a.notebook)


def create_notebook(driver: WebDriver, a: Args) -> None:
    """An empty Python 3 notebook (kernelspec set, so the UI asks no kernel question)."""
    nb = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": ""}
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 4,
    }
    status, text = api(driver, "PUT", contents_path(a), {"type": "notebook", "format": "json", "content": nb})
    if status not in (200, 201):
        raise CheckFailed(f"creating {a.notebook} through the Contents API: HTTP {status} {text[:200]}")


# Signs of each UI flavour, read by JS so one wait covers both.
FLAVOUR_JS = """
if (window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel !== undefined) return "nb6";
if (document.querySelector(".jp-Notebook .jp-Cell")) return "nb7";
return null;
"""
KERNEL_IDLE_JS = """
if (window.Jupyter && Jupyter.notebook) {
  const k = Jupyter.notebook.kernel;
  return !!(k && k.is_connected() && document.querySelector("#kernel_indicator_icon.kernel_idle_icon"));
}
return !!document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']");
"""
CELL_TEXT_JS = """
if (window.Jupyter && Jupyter.notebook) return Jupyter.notebook.get_cell(0).get_text();
const lines = document.querySelectorAll(".jp-Notebook .jp-Cell")[0].querySelectorAll(".cm-line");
return Array.from(lines).map(l => l.textContent).join("\\n");
"""
# Started: the first cell's prompt shows [*] or [N], or it has output.
STARTED_JS = """
const cell = document.querySelectorAll(".jp-Notebook .jp-Cell, #notebook-container .cell")[0];
const prompt = cell && cell.querySelector(".jp-InputPrompt, .input_prompt");
const out = cell && cell.querySelector(".jp-OutputArea-output, .output_subarea");
return !!((prompt && /\\[(\\*|\\d+)\\]/.test(prompt.innerText)) || out);
"""
OUTPUT_JS = """
const cell = document.querySelectorAll(".jp-Notebook .jp-Cell, #notebook-container .cell")[0];
const out = cell && cell.querySelector(".jp-OutputArea, .output_wrapper");
return out ? out.innerText : "";
"""


def open_notebook(driver: WebDriver, a: Args) -> str:
    url = urllib.parse.urljoin(a.url, "notebooks/" + urllib.parse.quote(a.notebook))
    err = load(driver, url)
    if err is not None:
        raise CheckFailed(f"cannot open {url}: {err}")
    flavour: str = wait_for(lambda: driver.execute_script(FLAVOUR_JS), 90, f"the notebook UI at {url}")
    # The kernel must be connected (websocket through the proxy) before we type and run.
    # Idle on two polls in a row: notebook 7 reports idle a moment before its session settles.
    idle_polls = [0]

    def settled() -> bool:
        idle_polls[0] = idle_polls[0] + 1 if driver.execute_script(KERNEL_IDLE_JS) else 0
        return idle_polls[0] >= 2

    wait_for(settled, a.run_timeout, "the kernel to be idle (kernel websocket through the proxy?)", poll=1.0)
    return flavour


def cell_input(driver: WebDriver, flavour: str) -> WebElement:
    """Focus the first cell's editor; return where CodeMirror takes keys."""
    css = "#notebook-container .cell .CodeMirror" if flavour == "nb6" else ".jp-Notebook .jp-Cell .cm-content"

    def focused() -> WebElement | None:
        editors = driver.find_elements(By.CSS_SELECTOR, css)
        if not editors or not editors[0].is_displayed():
            return None
        editors[0].click()  # not interactable while the UI still lays the notebook out: retried
        # CodeMirror 5 (nb6) needs the keys in its hidden textarea; CM6 takes them on the content.
        return editors[0].find_element(By.TAG_NAME, "textarea") if flavour == "nb6" else editors[0]

    return wait_for(focused, 30, f"the first cell's editor ({css}) to take focus")


def type_and_run(driver: WebDriver, flavour: str) -> int:
    """Type the code and run it with Shift+Enter; return how many Shift+Enter it took."""
    cell_input(driver, flavour).send_keys(CODE)
    # Auto-closed brackets/quotes are overtyped by CodeMirror, but check what the cell holds.
    text = driver.execute_script(CELL_TEXT_JS)
    if text.strip() != CODE:
        raise CheckFailed(f"the cell holds {text!r} after typing, not {CODE!r}")
    for attempt in range(1, 4):
        if attempt > 1:
            cell_input(driver, flavour)
        webdriver.ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
        # Notebook 7 right after the kernel turned idle sometimes drops the run silently (prompt
        # stays "[ ]"): a user would press Shift+Enter again, so do that, a few times at most.
        try:
            wait_for(lambda: driver.execute_script(STARTED_JS), 15, "the cell to start")
            return attempt
        except CheckFailed:
            continue
    raise CheckFailed("Shift+Enter 3 times, the cell never started (prompt stayed '[ ]', no output)")


def wait_output(driver: WebDriver, a: Args) -> str:
    seen: list[str] = [""]

    def has_expected() -> bool:
        seen[0] = driver.execute_script(OUTPUT_JS) or ""
        if "Error" in seen[0] and "Traceback" in seen[0]:
            raise CheckFailed(f"the cell failed: {seen[0].strip().splitlines()[-1]}")
        return a.expect in seen[0]

    try:
        wait_for(has_expected, a.run_timeout, f"output containing {a.expect!r}")
    except CheckFailed as e:
        raise CheckFailed(f"{e} (output so far: {seen[0].strip()[-200:]!r})") from e
    # TF's start-up chatter (oneDNN notes on stderr) is not the answer: report the matching line.
    return next(line for line in seen[0].splitlines() if a.expect in line).strip()


def last_modified(driver: WebDriver, a: Args) -> str:
    # content=0 only stats the file: reading it while the UI writes could catch it half-written,
    # and jupyter_server then moves it aside as NAME.invalid (seen here, breaking the save).
    status, text = api(driver, "GET", contents_path(a) + "?content=0")
    return str(json.loads(text)["last_modified"]) if status == 200 else f"HTTP {status}"


def save_and_verify(driver: WebDriver, a: Args) -> None:
    before = last_modified(driver, a)
    # Escape to command mode, then the UI's own save shortcut (both flavours bind Ctrl+S).
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    webdriver.ActionChains(driver).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
    wait_for(lambda: last_modified(driver, a) not in (before, "HTTP 404"), 30, "Ctrl+S to save the notebook")
    # The same time stamp twice, 1 s apart: the UI's save (and its checkpoint) is done.
    seen = [before]

    def quiet() -> bool:
        now = last_modified(driver, a)
        same, seen[0] = now == seen[0], now
        return same

    wait_for(quiet, 30, "the saved notebook to stay unchanged", poll=1.0)
    status, text = api(driver, "GET", contents_path(a) + "?content=1&type=notebook")
    if status != 200:
        raise CheckFailed(f"reading the saved {a.notebook}: HTTP {status} {text[:200]}")
    cells = json.loads(text)["content"].get("cells") or [{}]
    outputs = json.dumps(cells[0].get("outputs", []))
    if CODE not in "".join(cells[0].get("source", "")) or a.expect not in outputs:
        raise CheckFailed(f"the saved notebook lacks the code or {a.expect!r}; outputs: {outputs[:200]!r}")


def screenshot(driver: WebDriver | None, path: Path | None) -> None:
    if driver is None or path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
    except (WebDriverException, OSError) as e:
        print(f"warning: no screenshot: {first_line(str(e))}", file=sys.stderr)


def run(a: Args) -> str:
    home = make_home(a.ca)
    driver: WebDriver | None = None
    try:
        driver = start_browser(home, a)
        if a.expect_no_answer:
            return check_no_answer(driver, a)
        if a.page_shows:
            return check_page_shows(driver, a)
        login(driver, a)
        create_notebook(driver, a)
        flavour = open_notebook(driver, a)
        presses = type_and_run(driver, flavour)
        output = wait_output(driver, a)
        save_and_verify(driver, a)
        again = f", after {presses} Shift+Enter" if presses > 1 else ""
        return f"{a.url}{a.notebook} ran in the browser ({flavour}{again}), output {output!r}, saved"
    finally:
        screenshot(driver, a.screenshot)
        if driver is not None:
            driver.quit()
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str]) -> int:
    try:
        a = parse_args(argv)
        print("OK: " + run(a))
        return 0
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except SetupError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    except WebDriverException as e:
        # The UI did not let a user do the step (element missing, not interactable, page gone).
        print(f"FAIL: browser: {type(e).__name__}: {first_line(e.msg)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
