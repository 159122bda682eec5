"""Agents' batched notification emails in scaled mode (issue 8.8), on real PostgreSQL and
Redis: the worker that stored a chat's first notification for an agent who wants email
sends it at once; what comes within the window waits, and when the window ends the
scheduler enqueues the job that sends one email listing it all."""
from __future__ import annotations

import mailbox
import os
import secrets

import pytest
from sqlalchemy import text

from server import jobs
from server.app import create_app, make_runtime, make_settings
from server.scheduler import Scheduler

T0 = 1767603600.0


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture
def scaled(pg_url, redis_url, tmp_path):
    clock = Clock()
    config = {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, "QUEUE": f"chatflow-test-{secrets.token_hex(4)}",
              "CLOCK": clock, "ADMIN_TOKEN": "admintok", "DATA_DIR": str(tmp_path), "AGENT_EMAIL_WINDOW": 300.0}
    app = create_app(config)
    runtime = app.extensions["chatflow"]
    with runtime.db.begin() as conn:
        for table in ("events", "timers", "notifications", "emails", "traces", "agent_email_items", "agent_emails",
                      "chats"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("DELETE FROM agents WHERE id <> 'admin'"))
    worker_runtime = make_runtime(make_settings(config))
    jobs.set_runtime(worker_runtime)
    queue = jobs.make_queue(worker_runtime.settings, jobs.make_redis(redis_url))
    yield app, runtime, queue, clock, os.path.join(str(tmp_path), "maildir")
    queue.empty()
    queue.delete(delete_jobs=True)
    app.extensions["chatflow_stop"].set()


def work(queue):
    from rq import SimpleWorker

    jobs.flush_dispatchers()
    SimpleWorker([queue], connection=queue.connection, serializer=queue.serializer).work(burst=True)


def _subjects(maildir):
    if not os.path.isdir(maildir):
        return []
    return sorted(m["Subject"] for m in mailbox.Maildir(maildir, create=False))


def test_the_window_end_is_handed_to_a_worker_by_the_scheduler(scaled):
    app, runtime, queue, clock, maildir = scaled
    c = app.test_client()
    r = c.post("/api/admin/agents", json={"id": "alice", "email": "alice@example.com"},
               headers={"Authorization": "Bearer admintok"})
    alice = {"Authorization": "Bearer " + r.json["token"]}
    r = c.patch("/api/me/preferences", json={"notifications": {"*": "email"}}, headers=alice)
    assert r.status_code == 200
    r = c.post("/api/widget/chats", json={"text": "Hi"})
    chat_id, customer = r.json["chat"]["id"], {"Authorization": "Bearer " + r.json["token"]}
    work(queue)
    assert _subjects(maildir) == [f"[chatflow] new chat in chat {chat_id}"]
    for i in range(5):
        clock.now += 10
        assert c.post(f"/api/widget/chats/{chat_id}/messages", json={"text": f"m{i}"}, headers=customer).status_code == 201
        work(queue)
    assert len(_subjects(maildir)) == 1  # within the window: waiting
    sched = Scheduler(runtime, queue, clock)
    clock.now = T0 + 299
    sched.tick()
    assert len(queue) == 0
    clock.now = T0 + 300
    sched.tick()
    assert len(queue) == 1
    work(queue)
    assert _subjects(maildir) == [f"[chatflow] 5 notifications in chat {chat_id}",
                                  f"[chatflow] new chat in chat {chat_id}"]
    clock.now = T0 + 2000
    sched.tick()
    assert len(queue) == 0  # nothing waits
