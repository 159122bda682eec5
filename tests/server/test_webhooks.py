"""Webhooks through the service (issue 8.5): a rule's ``webhook "name"`` is stored with the
rule's other effects and posted after the commit, signed, to the URL the settings declare
under that name, by the embedded sender thread. The receivers are real HTTP servers on
127.0.0.1 started here (no mocks): one answers as each test scripts it, one hangs, and a
closed port refuses connections."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from server import webhooks as W

SECRET = "whsec-0123456789abcdef"
RULES = '''
rule crm_on_close {
  on chat.closed
  then webhook "crm"
}
rule audit_every_message {
  on message.created
  then webhook "audit"
}
'''


class Receiver:
    """A local HTTP server that records each POST and answers with the next scripted
    status (then 200s); ``delay`` seconds before answering."""

    def __init__(self, statuses=(), delay: float = 0.0):
        self.requests: list = []
        self.statuses = list(statuses)
        self.delay = delay
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((dict(self.headers), body, time.time()))
                if outer.delay:
                    time.sleep(outer.delay)
                code = outer.statuses.pop(0) if outer.statuses else 200
                answer = b"upstream broke" if code >= 500 else b"ok"
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:  # the sender gave up waiting
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now: a connection is refused
    return port


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def slow_receiver():
    r = Receiver(delay=3.0)
    yield r
    r.close()


@pytest.fixture
def app_config(receiver, slow_receiver):
    return {
        "WEBHOOKS": {
            "crm": {"url": receiver.url("/crm?source=chatflow"), "secret": SECRET},
            "audit": {"url": receiver.url("/audit"), "secret": SECRET + "-audit"},
            "elsewhere": {"url": f"http://localhost:{receiver.port}/x", "secret": SECRET},  # host not allowed
            "down": {"url": f"http://127.0.0.1:{_closed_port()}/", "secret": SECRET},
            "slow": {"url": slow_receiver.url(), "secret": SECRET},
        },
        "WEBHOOK_HOSTS": ["127.0.0.1"],
        "WEBHOOK_CONNECT_TIMEOUT": 1.0,
        "WEBHOOK_READ_TIMEOUT": 0.5,
        "WEBHOOK_BACKOFF": 30.0,
        "WEBHOOK_MAX_ATTEMPTS": 3,
    }


@pytest.fixture(autouse=True)
def stop_sender(app):
    yield
    app.extensions["chatflow_webhooks"].stop()


def _rules(api, text=RULES, status=201):
    r = api.client.post("/api/admin/rulesets", json={"files": {"hooks.rules": text}}, headers=api.admin)
    assert r.status_code == status, r.get_json()
    return r.get_json()


def _deliveries(api, **query) -> list:
    r = api.client.get("/api/admin/webhooks/deliveries", query_string=query, headers=api.admin)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["deliveries"]


def _wait_for(api, predicate, timeout=10.0, **query) -> list:
    """The delivery log once ``predicate`` holds of it (the sender thread works meanwhile)."""
    until = time.monotonic() + timeout
    while True:
        rows = _deliveries(api, **query)
        if predicate(rows):
            return rows
        if time.monotonic() > until:
            raise AssertionError(f"the delivery log never got there: {rows}")
        time.sleep(0.05)


def _closed_chat(api, note="the customer is rude, keep this inside"):
    agents = api.agents("alice")
    chat_id, customer = api.start_chat("Hi, my order is late")
    api.post(f"/api/chats/{chat_id}/join", agents["alice"], status=200)
    api.post(f"/api/chats/{chat_id}/reply", agents["alice"], json={"text": "Looking into it"}, status=201)
    api.post(f"/api/chats/{chat_id}/note", agents["alice"], json={"text": note}, status=201)
    api.post(f"/api/chats/{chat_id}/close", agents["alice"], status=200)
    return chat_id


def test_a_rule_posts_a_signed_body_without_private_notes(api, receiver, clock):
    _rules(api)
    chat_id = _closed_chat(api)
    rows = _wait_for(api, lambda rows: [r["status"] for r in rows if r["webhook"] == "crm"] == ["delivered"],
                     webhook="crm")
    crm = rows[0]
    assert (crm["chat_id"], crm["rule"], crm["event"], crm["attempts"], crm["response_code"], crm["last_error"]) == \
        (chat_id, "crm_on_close", "chat.closed", 1, 200, None)
    posted = [(h, b) for h, b, _ in receiver.requests if h.get("X-Chatflow-Webhook") == "crm"]
    assert len(posted) == 1
    headers, raw = posted[0]
    # the signature is over "timestamp.body" with crm's secret; the timestamp is the clock's
    assert W.verify(SECRET, headers, raw, now=clock())
    assert not W.verify(SECRET + "-audit", headers, raw, now=clock())  # another webhook's secret
    assert not W.verify(SECRET, headers, raw + b" ", now=clock())  # a changed body
    assert not W.verify(SECRET, headers, raw, now=clock() + 301)  # replayed after five minutes
    assert headers["X-Chatflow-Delivery"] == str(crm["id"]) and headers["X-Chatflow-Event"] == "chat.closed"
    assert headers["Content-Type"] == "application/json"
    body = json.loads(raw)
    assert body["event"]["type"] == "chat.closed" and body["rule"] == "crm_on_close" and body["webhook"] == "crm"
    assert body["chat"]["id"] == chat_id and body["chat"]["status"] == "closed"
    assert [m["text"] for m in body["chat"]["last_messages"]] == ["Hi, my order is late", "Looking into it"]
    assert b"rude" not in raw  # the private note never leaves
    # the note's own event reached the audit webhook without its text, id or mentions
    audit = [json.loads(b) for h, b, _ in receiver.requests if h.get("X-Chatflow-Webhook") == "audit"]
    note_events = [a["event"] for a in audit if "message" not in a["event"]]
    assert note_events and all(set(e) == {"id", "type", "at", "actor", "agent_id", "rule"} for e in note_events)
    assert all("rude" not in json.dumps(a) for a in audit)
    one = api.client.get(f"/api/admin/webhooks/deliveries/{crm['id']}", headers=api.admin).get_json()
    assert one["body"] == body


def test_a_500_is_retried_after_the_backoff_with_the_same_delivery_id(api, receiver, clock):
    receiver.statuses = [500]
    _rules(api, 'rule r { on chat.closed then webhook "crm" }')
    _closed_chat(api)
    first = _wait_for(api, lambda rows: rows and rows[0]["attempts"] == 1)[0]
    assert (first["status"], first["response_code"], first["last_error"]) == ("pending", 500, "HTTP 500: upstream broke")
    assert first["next_attempt_at"] == pytest.approx(clock() + 30.0)
    time.sleep(1.5)  # the sender looks again, but the retry is not due yet
    assert _deliveries(api)[0]["attempts"] == 1 and len(receiver.requests) == 1
    clock.advance(30.0)
    done = _wait_for(api, lambda rows: rows[0]["status"] == "delivered")[0]
    assert (done["attempts"], done["response_code"], done["last_error"]) == (2, 200, None)
    ids = [h["X-Chatflow-Delivery"] for h, _, _ in receiver.requests]
    assert ids == [str(done["id"])] * 2
    bodies = {b for _, b, _ in receiver.requests}
    assert len(bodies) == 1  # the same body each time (only the timestamp and signature move)


def test_the_backoff_doubles_and_the_last_attempt_fails_the_delivery(api, receiver, clock):
    receiver.statuses = [503, 502, 500]
    _rules(api, 'rule r { on chat.closed then webhook "crm" }')
    _closed_chat(api)
    row = _wait_for(api, lambda rows: rows and rows[0]["attempts"] == 1)[0]
    assert row["next_attempt_at"] == pytest.approx(clock() + 30.0)
    clock.advance(30.0)
    row = _wait_for(api, lambda rows: rows[0]["attempts"] == 2)[0]
    assert row["next_attempt_at"] == pytest.approx(clock() + 60.0)  # doubled
    clock.advance(60.0)
    row = _wait_for(api, lambda rows: rows[0]["status"] == "failed")[0]
    assert (row["attempts"], row["response_code"], row["next_attempt_at"]) == (3, 500, None)
    assert len(receiver.requests) == 3
    # an admin can try it again: from the first attempt, the same delivery
    r = api.client.post(f"/api/admin/webhooks/deliveries/{row['id']}/retry", headers=api.admin)
    assert r.status_code == 200 and r.get_json()["status"] == "pending"
    row = _wait_for(api, lambda rows: rows[0]["status"] == "delivered")[0]
    assert row["attempts"] == 1 and len(receiver.requests) == 4
    r = api.client.post(f"/api/admin/webhooks/deliveries/{row['id']}/retry", headers=api.admin)
    assert r.status_code == 409 and r.get_json()["error"] == "not_retryable"


def test_a_4xx_answer_fails_at_once(api, receiver):
    receiver.statuses = [410]
    _rules(api, 'rule r { on chat.closed then webhook "crm" }')
    _closed_chat(api)
    row = _wait_for(api, lambda rows: rows and rows[0]["status"] != "pending")[0]
    assert (row["status"], row["attempts"], row["response_code"]) == ("failed", 1, 410)


def test_a_host_outside_the_allowlist_is_refused_and_never_contacted(api, receiver):
    _rules(api, 'rule r { on chat.closed then webhook "elsewhere" }')
    _closed_chat(api)
    row = _wait_for(api, lambda rows: rows and rows[0]["status"] != "pending")[0]
    assert (row["status"], row["attempts"], row["response_code"]) == ("refused", 1, None)
    assert row["last_error"] == "host localhost is not in WEBHOOK_HOSTS"
    assert receiver.requests == []
    listed = api.client.get("/api/admin/webhooks", headers=api.admin).get_json()
    hooks = {h["name"]: h for h in listed["webhooks"]}
    assert hooks["elsewhere"]["host_allowed"] is False and hooks["crm"]["host_allowed"] is True
    assert hooks["elsewhere"]["deliveries"]["refused"] == 1
    assert SECRET not in json.dumps(listed)  # secrets never leave the settings
    assert "?source" not in hooks["crm"]["url"]  # nor does a URL's query (it may carry a token)


def test_a_refused_connection_is_retried_then_fails(api, clock):
    _rules(api, 'rule r { on chat.closed then webhook "down" }')
    _closed_chat(api)
    row = _wait_for(api, lambda rows: rows and rows[0]["attempts"] == 1)[0]
    assert row["status"] == "pending" and row["response_code"] is None
    assert "ConnectionRefusedError" in row["last_error"]
    clock.advance(30.0)
    _wait_for(api, lambda rows: rows[0]["attempts"] == 2)
    clock.advance(60.0)
    row = _wait_for(api, lambda rows: rows[0]["status"] == "failed")[0]
    assert row["attempts"] == 3


def test_a_slow_receiver_times_out_and_holds_back_no_command(api, slow_receiver):
    _rules(api, 'rule r { on message.created then webhook "slow" }')
    agents = api.agents("alice")
    chat_id, customer = api.start_chat("Hi")
    api.post(f"/api/chats/{chat_id}/join", agents["alice"], status=200)
    started = time.monotonic()
    for i in range(5):  # each reply fires the webhook; none waits for the receiver
        api.post(f"/api/chats/{chat_id}/reply", agents["alice"], json={"text": f"reply {i}"}, status=201)
    assert time.monotonic() - started < 2.0
    row = _wait_for(api, lambda rows: len(rows) == 5 and all(r["attempts"] >= 1 for r in rows))[-1]
    assert row["status"] == "pending" and row["response_code"] is None
    assert row["last_error"].startswith("timed out")


def test_a_rule_set_naming_an_undeclared_webhook_is_not_activated(api, client):
    text = 'rule ok { on chat.closed then webhook "crm" }\nrule bad {\n  on chat.closed\n  then webhook "billing"\n}\n'
    r = client.post("/api/admin/rulesets", json={"files": {"hooks.rules": text}}, headers=api.admin)
    assert r.status_code == 422
    data = r.get_json()
    assert data["error"] == "unknown_webhook"
    d, = data["details"]["diagnostics"]
    assert (d["path"], d["line"], d["column"], d["code"]) == ("hooks.rules", 4, 8, "unknown_webhook")
    assert "billing" in d["message"] and "crm" in d["hint"]
    # nothing was stored
    assert [v["version"] for v in client.get("/api/admin/rulesets", headers=api.admin).get_json()["rulesets"]] == [1]
    # the validation says the same
    v = client.post("/api/admin/rulesets/validate", json={"files": {"hooks.rules": text}}, headers=api.admin).get_json()
    assert v["ok"] is False and [x["code"] for x in v["diagnostics"]] == ["unknown_webhook"]
    # stored without activating, it cannot be activated later either
    r = client.post("/api/admin/rulesets", json={"files": {"hooks.rules": text}, "activate": False}, headers=api.admin)
    assert r.status_code == 201
    version = r.get_json()["version"]
    r = client.post(f"/api/admin/rulesets/{version}/activate", headers=api.admin)
    assert r.status_code == 422 and r.get_json()["error"] == "unknown_webhook"
    active = [v for v in client.get("/api/admin/rulesets", headers=api.admin).get_json()["rulesets"] if v["active"]]
    assert [v["version"] for v in active] == [1]


def test_the_delivery_log_filters_and_pages(api, receiver):
    _rules(api)
    chat_id = _closed_chat(api)
    rows = _wait_for(api, lambda rows: len(rows) == 3 and all(r["status"] == "delivered" for r in rows))
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)  # newest first
    assert {r["webhook"] for r in _deliveries(api, webhook="audit")} == {"audit"}
    assert len(_deliveries(api, chat_id=chat_id)) == 3 and _deliveries(api, chat_id="nope") == []
    page = _deliveries(api, limit=2)
    assert len(page) == 2 and _deliveries(api, before=page[-1]["id"]) == rows[2:]
    assert _deliveries(api, status="failed") == []
    r = api.client.get("/api/admin/webhooks/deliveries?status=lost", headers=api.admin)
    assert r.status_code == 400
    r = api.client.get("/api/admin/webhooks/deliveries/999999", headers=api.admin)
    assert r.status_code == 404 and r.get_json()["error"] == "not_found"


def test_a_redelivered_event_posts_nothing_twice(api, runtime, receiver):
    _rules(api, 'rule r { on chat.closed then webhook "crm" }')
    chat_id = _closed_chat(api)
    _wait_for(api, lambda rows: rows and rows[0]["status"] == "delivered")
    from sqlalchemy import update

    from server import store as S

    with runtime.db.begin() as conn:  # as if the worker died before marking its events processed
        conn.execute(update(S.events).where(S.events.c.chat_id == chat_id).values(processed_at=None))
    runtime.process_pending(chat_id)
    runtime.after_change()
    time.sleep(1.2)
    assert len(_deliveries(api)) == 1 and len(receiver.requests) == 1


def test_settings_are_checked_at_start():
    base = {"WEBHOOK_HOSTS": ["hooks.example.com"]}
    good = {"url": "https://hooks.example.com/in", "secret": "s" * 16}
    W.check_settings({**base, "WEBHOOKS": {"crm": good}})
    for hooks in ({"bad name": good}, {"crm": {"url": "ftp://hooks.example.com/", "secret": "s" * 16}},
                  {"crm": {"url": "https://hooks.example.com/in", "secret": "short"}}, {"crm": {"url": "x"}},
                  ["crm"]):
        with pytest.raises(W.WebhookSettingsError):
            W.check_settings({**base, "WEBHOOKS": hooks})
    assert W.host_allowed("https://a.hooks.example.com/x", ["*.hooks.example.com"])
    assert not W.host_allowed("https://hooks.example.com/x", ["*.hooks.example.com"])
    assert not W.host_allowed("https://evilhooks.example.com/x", ["*.hooks.example.com"])
    assert W.host_allowed("https://HOOKS.example.com./x", ["hooks.example.com"])
