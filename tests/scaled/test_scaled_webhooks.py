"""Webhooks in scaled mode on real PostgreSQL and Redis: the worker that stored a
delivery enqueues a job on the webhooks queue (the rules' queue is not held up by it);
a failed attempt waits out its backoff in the database, and the scheduler hands the
retry to a new job when it comes due. The receiver is a real local HTTP server."""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading

import pytest
from sqlalchemy import select

from server import jobs
from server import store as S
from server import webhooks as W
from server.scheduler import Scheduler

from scaled_mode import T0, work

SECRET = "scaled-secret-0123456789"


@pytest.fixture
def receiver():
    got, statuses = [], [500]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((dict(self.headers), body))
            self.send_response(statuses.pop(0) if statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/in", got
    server.shutdown()
    server.server_close()


@pytest.fixture
def scaled(start_scaled, clock, pg_url, tmp_path, receiver):
    url, _ = receiver
    rules = tmp_path / "hooks.rules"
    rules.write_text('rule crm { on chat.closed then webhook "crm" }\n', encoding="utf-8")
    db = S.make_db(S.database_url(pg_url, "unused"))
    with db.connect() as conn:
        before = conn.execute(select(S.rulesets.c.version).where(S.rulesets.c.active.is_(True))).scalar()
    db.dispose()
    s = start_scaled({"RULES": (str(rules),), "WEBHOOKS": {"crm": {"url": url, "secret": SECRET}},
                      "WEBHOOK_HOSTS": ["127.0.0.1"], "WEBHOOK_BACKOFF": 10.0}, tables=("webhook_deliveries",))
    hooks = jobs.webhook_queue(s.worker_runtime.settings, s.redis)
    jobs.hand_webhooks_to(s.worker_runtime, hooks)
    yield s.app, s.runtime, s.queue, hooks, clock
    hooks.empty()
    hooks.delete(delete_jobs=True)
    if before is not None:  # the other scaled tests run on the rule set they found
        s.runtime.activate(before)


def _delivery(runtime):
    with runtime.db.connect() as conn:
        return conn.execute(select(S.webhook_deliveries)).mappings().one()


def test_a_webhook_goes_through_rq_and_its_retry_through_the_scheduler(scaled, receiver):
    app, runtime, queue, hooks, clock = scaled
    _, got = receiver
    c = app.test_client()
    admin = {"Authorization": "Bearer admintok"}
    r = c.post("/api/admin/agents", json={"id": "alice"}, headers=admin)
    alice = {"Authorization": "Bearer " + r.json["token"]}
    chat_id = c.post("/api/widget/chats", json={"text": "Hi"}).json["chat"]["id"]
    c.post(f"/api/chats/{chat_id}/join", headers=alice)
    c.post(f"/api/chats/{chat_id}/close", headers=alice)
    work(queue)  # the rules run: the delivery is stored and a job enqueued on the webhooks queue
    assert got == [] and len(hooks) == 1
    work(queue, hooks)
    row = _delivery(runtime)
    assert (row["status"], row["attempts"], row["response_code"]) == ("pending", 1, 500)
    assert row["next_attempt_at"] == T0 + 10.0
    sched = Scheduler(runtime, queue, clock, webhook_queue=hooks)
    clock.now = T0 + 9
    sched.tick()
    assert len(hooks) == 0  # not due yet
    clock.now = T0 + 10
    sched.tick()
    assert len(hooks) == 1
    work(queue, hooks)
    row = _delivery(runtime)
    assert (row["status"], row["attempts"], row["response_code"]) == ("delivered", 2, 200)
    assert len(got) == 2 and got[0][1] == got[1][1]
    headers, body = got[1]
    assert W.verify(SECRET, headers, body, now=clock())
    assert json.loads(body)["chat"]["id"] == chat_id
    clock.now = T0 + 100
    sched.tick()
    assert len(hooks) == 0  # delivered: nothing left to hand over
