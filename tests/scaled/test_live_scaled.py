"""Live streams in scaled mode on real PostgreSQL and Redis: a chat started on one web
process reaches an agent's stream on another web process once a worker has run the rules,
because the worker publishes a wake-up over Redis and every web process forwards it to its
streams (server/jobs.py: redis_publisher, start_redis_subscriber).

Each stream is read frame by frame while it is open. A stream reads the database when it
opens, then only when woken; one that is not woken sends a ``: keepalive`` when its time
is up and reads once more. So each test first lets the stream send something that existed
(proof that its opening read is done), then acts: the next frame arriving before any
keepalive shows that the wake-up crossed from the worker to the other web process. The
control test shows the other case.
"""
from __future__ import annotations

import secrets

from sqlalchemy import select

from server import store as S

from conftest_live import ADMIN, Frames, webs, webs_without_publisher  # noqa: F401 (fixtures)
from scaled_mode import work

OPEN = 20.0  # seconds a stream may stay open; a failing wake-up test waits this long at most


def _agent(client, name) -> dict:
    # a name of this test alone: the live channel is one per Redis server, so another run's
    # worker waking "alice" must not wake (or seem to wake) this test's streams
    agent_id = f"{name}_{secrets.token_hex(4)}"
    r = client.post("/api/admin/agents", json={"id": agent_id}, headers=ADMIN)
    assert r.status_code == 201, r.get_json()
    return {"Authorization": "Bearer " + r.get_json()["token"]}


def _unprocessed(runtime) -> list:
    with runtime.db.connect() as conn:
        return conn.execute(select(S.events.c.type).where(S.events.c.processed_at.is_(None))).scalars().all()


def _earlier_notification(webs, client) -> str:
    """A chat whose new_chat notification exists before a stream opens."""
    chat_id = client.post("/api/widget/chats", json={"text": "earlier"}).get_json()["chat"]["id"]
    work(webs.queue)
    return chat_id


def _opened(stream, earlier) -> None:
    assert stream.next() == {"retry": 2000}  # subscribed on its web process's broker
    frame = stream.next()  # its opening read is done; it now waits for a wake-up
    assert (frame["event"], frame["data"]["chat_id"], frame["data"]["template"]) == (
        "notification", earlier, "new_chat")


def test_a_chat_started_on_web_a_reaches_an_agent_stream_on_web_b(webs):
    a, b = webs.a.test_client(), webs.b.test_client()
    alice = _agent(a, "alice")
    earlier = _earlier_notification(webs, a)
    stream = Frames(b, "/api/stream", alice, OPEN)  # on web process B
    try:
        _opened(stream, earlier)

        r = a.post("/api/widget/chats", json={"text": "Hi from A"})  # on web process A
        assert r.status_code == 201
        chat_id = r.get_json()["chat"]["id"]
        # committed to the outbox, not yet evaluated: no notification anywhere yet
        assert _unprocessed(webs.a.extensions["chatflow"]) == ["chat.created"]
        assert [n["chat_id"] for n in b.get("/api/notifications", headers=alice).get_json()["notifications"]] == [
            earlier]

        work(webs.queue)  # the worker runs the rules and publishes on Redis
        assert _unprocessed(webs.a.extensions["chatflow"]) == []
        frame = stream.next()
        assert "comment" not in frame, "B's stream was not woken: it only re-read at its end"
        assert frame["event"] == "notification"
        assert (frame["data"]["chat_id"], frame["data"]["template"]) == (chat_id, "new_chat")
        assert frame["data"]["rule"] == "default.subscribe_operators"
        listed = b.get("/api/notifications", headers=alice).get_json()["notifications"]
        assert [n["id"] for n in listed][-1] == frame["id"] and len(listed) == 2

        # a second chat, started on B this time, reaches the same stream the same way
        r = b.post("/api/widget/chats", json={"text": "Hi from B"})
        second = r.get_json()["chat"]["id"]
        work(webs.queue)
        frame = stream.next()
        assert "comment" not in frame
        assert (frame["data"]["chat_id"], frame["data"]["template"]) == (second, "new_chat")
    finally:
        stream.close()


def test_a_reply_on_web_a_reaches_the_customer_stream_on_web_b(webs):
    a, b = webs.a.test_client(), webs.b.test_client()
    alice = _agent(a, "alice")
    r = a.post("/api/widget/chats", json={"text": "Hi"})
    chat_id, cust = r.get_json()["chat"]["id"], {"Authorization": "Bearer " + r.get_json()["token"]}
    assert a.post(f"/api/chats/{chat_id}/join", headers=alice).status_code == 200
    work(webs.queue)
    stream = Frames(b, f"/api/widget/chats/{chat_id}/stream", cust, OPEN)
    try:
        assert stream.next() == {"retry": 2000}
        first = stream.next()
        assert (first["event"], first["id"], first["data"]["text"]) == ("message", 1, "Hi")

        assert a.post(f"/api/chats/{chat_id}/note", headers=alice, json={"text": "private 4242"}).status_code == 201
        assert a.post(f"/api/chats/{chat_id}/reply", headers=alice, json={"text": "Hello from A"}).status_code == 201
        work(webs.queue)
        frame = stream.next()
        assert "comment" not in frame, "B's customer stream was not woken"
        assert (frame["event"], frame["id"], frame["data"]["text"]) == ("message", 2, "Hello from A")
    finally:
        stream.close()


def test_without_the_worker_publishing_the_stream_on_b_catches_up_only_at_its_end(webs_without_publisher):
    """The control: no wake-up crosses, so the notification arrives after the closing
    keepalive, when the stream re-reads the database (delayed, not lost)."""
    webs = webs_without_publisher
    a, b = webs.a.test_client(), webs.b.test_client()
    alice = _agent(a, "alice")
    earlier = _earlier_notification(webs, a)
    stream = Frames(b, "/api/stream", alice, 3.0)
    try:
        _opened(stream, earlier)
        chat_id = a.post("/api/widget/chats", json={"text": "Hi"}).get_json()["chat"]["id"]
        work(webs.queue)
        assert stream.next() == {"comment": "keepalive"}
        frame = stream.next()
        assert (frame["event"], frame["data"]["chat_id"], frame["data"]["template"]) == (
            "notification", chat_id, "new_chat")
    finally:
        stream.close()


def test_a_web_process_started_by_gunicorn_reads_its_settings_from_the_environment(
        pg_url, redis_url, tmp_path, monkeypatch):
    from server.app import create_app

    monkeypatch.chdir(tmp_path)  # where a ./var of the wrong mode would land
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("CHATFLOW_DATA_DIR", str(tmp_path / "data"))
    app = create_app()  # what gunicorn 'server.app:create_app()' calls
    try:
        assert app.extensions["chatflow"].db.dialect.name == "postgresql"
        assert app.config["REDIS_URL"] == redis_url
    finally:
        app.extensions["chatflow_stop"].set()
        app.extensions["chatflow"].db.dispose()
