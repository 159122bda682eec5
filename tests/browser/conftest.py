"""Browser tests: the real app served over HTTP on a free port (werkzeug, in a thread), on
SQLite in a temporary folder with the deadline thread on, and Debian's Chromium driven by
Playwright.

Real parts only (STYLE rule 12): when Chromium is missing the tests fail and say how to
install it; they do not skip. Screenshots go to ``tests/browser/screenshots/`` (git
ignored), or to ``$CHATFLOW_SCREENSHOTS``.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from server.app import create_app

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request drowns a failure

CHROMIUM = os.environ.get("CHATFLOW_CHROMIUM", "/usr/bin/chromium")
ADMIN_TOKEN = "browser-admin-token"
SCREENSHOTS = Path(os.environ.get("CHATFLOW_SCREENSHOTS") or Path(__file__).resolve().parent / "screenshots")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}


class ShiftedClock:
    """The app's CLOCK: the wall clock plus an offset a test moves forward, so deadlines
    ten minutes away fire now, on the app's own deadline thread."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Live:
    """The running service, and its API for setting up what a test needs."""

    admin_token = ADMIN_TOKEN

    def __init__(self, url: str, app, clock: ShiftedClock):
        self.url, self.app, self.clock = url, app, clock

    def api(self, method: str, path: str, body=None, token: str | None = ADMIN_TOKEN, status: int | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                code, payload = resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            code, payload = e.code, json.loads(e.read() or b"null")
        if status is not None:
            assert code == status, (method, path, code, payload)
        return payload

    def create_agent(self, agent_id: str, **fields) -> str:
        """An agent made through the admin API; returns its token."""
        return self.api("POST", "/api/admin/agents", {"id": agent_id, **fields}, status=201)["token"]

    def sign_in(self, page, path: str, token: str) -> None:
        """Sign in on the console (``/``) or the rules page (``/rules``) as a person does."""
        page.goto(self.url + path)
        page.get_by_label("token").fill(token)
        page.get_by_role("button", name="Sign in").click()

    def wait_for(self, predicate, timeout: float = 8.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: the browser tests need it. Install it with "
                    "`apt-get install -y chromium` (.ci/run does when it runs as root).", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]'", pytrace=False)
    with sync_playwright() as p:
        # Playwright's own browser download is not used: Debian's Chromium is
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def live(tmp_path):
    clock = ShiftedClock()
    config = {"DATA_DIR": str(tmp_path / "data"), "CLOCK": clock, "TIMERS": True, "ADMIN_TOKEN": ADMIN_TOKEN,
              "SECRET_KEY": "browser-tests", "STREAM_SECONDS": 120}
    app = create_app(config)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="browser-test-server", daemon=True)
    thread.start()
    try:
        yield Live(f"http://127.0.0.1:{server.server_port}", app, clock)
    finally:
        server.shutdown()
        app.extensions["chatflow_stop"].set()
        app.extensions["chatflow"].db.dispose()


class Pages:
    """Opens pages, each in a browser context of its own (its own storage: a customer and
    an operator are two people), and checks at the end that none had a script error or
    a Content-Security-Policy violation."""

    def __init__(self, browser):
        self.browser = browser
        self.contexts = []
        self.errors = []

    def open(self, url: str | None = None, viewport=DESKTOP, name: str = "page"):
        context = self.browser.new_context(viewport=viewport)
        context.set_default_timeout(8000)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: self.errors.append(f"{name}: {e}"))
        page.on("console", lambda m: m.type == "error" and not _expected_console_error(m.text)
                and self.errors.append(f"{name}: console: {m.text}"))
        if url:
            page.goto(url)
        return page

    def close(self):
        for c in self.contexts:
            c.close()


def _expected_console_error(text: str) -> bool:
    # a refused command answers 4xx by design (the page shows the refusal); the browser
    # logs those responses as "Failed to load resource"
    return "Failed to load resource" in text and "status of 4" in text


@pytest.fixture
def pages(browser):
    p = Pages(browser)
    yield p
    p.close()
    assert not p.errors, "errors in the pages:\n" + "\n".join(p.errors)


@pytest.fixture
def shot():
    """shot(page, "name"): a full-page screenshot saved for review."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str):
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    return take
