"""Agents' batched notification emails in scaled mode (issue 8.8), on real PostgreSQL and
Redis: the worker that stored a chat's first notification for an agent who wants email
sends it at once; what comes within the window waits, and when the window ends the
scheduler enqueues the job that sends one email listing it all."""
from __future__ import annotations

import mailbox
import os

import pytest

from server.scheduler import Scheduler

from scaled_mode import T0, work


@pytest.fixture
def scaled(start_scaled, clock, tmp_path):
    s = start_scaled({"AGENT_EMAIL_WINDOW": 300.0}, tables=("agent_email_items", "agent_emails"))
    return s.app, s.runtime, s.queue, clock, os.path.join(str(tmp_path), "maildir")


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
