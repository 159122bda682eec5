"""An agent's event stream gets a notification committed after a newer one.

``/api/stream`` (server/live.py, ``agent_stream.read_new``) sent only the notifications
whose id is greater than the last one it sent. Ids come from a sequence when the row is
inserted, but transactions commit in any order: two workers store notifications N and
N+1, N+1 commits first, the stream sends it and moves past N; when N commits, no read
(nor a reconnect with ``Last-Event-ID: N+1``) returns it. The fault-test run with two
workers sees this every time (a few of ~1,000 notifications per stream).

Reproduced here without races: worker A's batch is held just before its commit (this
test locks the event row A will mark processed), worker B stores and commits a later
notification, the stream sends it, then A is let go. (Found failing; the stream now also
looks back for rows below its cursor it has not sent, and sends them with their own id.)
"""
from __future__ import annotations

from sqlalchemy import text

from scaled_service import ADMIN, AgentStream, Http, wait_until


def test_a_notification_committed_after_a_newer_one_still_reaches_the_stream(service):
    port = service.web()
    c = Http(port)
    status, body = c.call("POST", "/api/admin/agents", {"id": "alice"}, ADMIN)
    assert status == 201
    alice = {"Authorization": "Bearer " + body["token"]}
    chats = {}
    for name in ("x", "y"):
        status, body = c.call("POST", "/api/widget/chats", {"text": f"hello from {name}"})
        assert status == 201
        chats[name] = (body["chat"]["id"], {"Authorization": "Bearer " + body["token"]})
    service.worker("worker0")
    wait_until(lambda: not service.scalar("SELECT count(*) FROM events WHERE processed_at IS NULL"), 30,
               "the first events to be processed")
    service.kill("worker0")
    stream = AgentStream(port, alice, "sse")
    try:
        wait_until(lambda: len(stream.received) == 2, 20, "the stream to send the two new_chat notifications")
        x_id, x_token = chats["x"]
        status, _ = c.call("POST", f"/api/widget/chats/{x_id}/messages", {"text": "x again"}, x_token)
        assert status == 201
        # hold worker A just before its commit: it will wait on this lock at its last UPDATE
        lock = service.db().connect()
        tx = lock.begin()
        try:
            lock.execute(text("SELECT seq FROM events WHERE chat_id = :c AND processed_at IS NULL FOR UPDATE"),
                         {"c": x_id})
            service.worker("worker_a")
            wait_until(lambda: service.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE events%'"), 30,
                "worker A to wait for its commit")
            service.worker("worker_b")
            y_id, y_token = chats["y"]
            status, _ = c.call("POST", f"/api/widget/chats/{y_id}/messages", {"text": "y again"}, y_token)
            assert status == 201
            wait_until(lambda: len(stream.received) == 3, 20, "the stream to send worker B's notification")
        finally:
            tx.rollback()
            lock.close()
        wait_until(lambda: not service.scalar("SELECT count(*) FROM events WHERE processed_at IS NULL"), 30,
                   "worker A to commit")
        # one more notification wakes the stream up, so it reads again
        status, _ = c.call("POST", f"/api/widget/chats/{y_id}/messages", {"text": "y once more"}, y_token)
        assert status == 201
        wait_until(lambda: len(service.rows("SELECT id FROM notifications")) == 5, 20, "the last notification")
        stored = {r[0] for r in service.rows("SELECT id FROM notifications WHERE agent_id = 'alice'")}
        wait_until(lambda: stream.last_id >= max(stored), 20, "the stream to send the last notification")
    finally:
        stream.close()
        c.close()
    assert sorted(stream.received) == sorted(stored)
