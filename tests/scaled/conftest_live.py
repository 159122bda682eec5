"""Fixtures for the live streams in scaled mode: two web processes (two ``create_app``
instances) on one PostgreSQL database and one Redis, and a worker runtime that publishes
wake-ups over Redis as ``chatflow worker`` does.

Imported by tests/scaled/test_live_scaled.py (pytest loads only ``conftest.py`` by
itself); uses ``pg_url`` and ``redis_url`` of tests/scaled/conftest.py.
"""
from __future__ import annotations

import json
import queue as queue_module
import secrets
import time
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from server import jobs
from server.app import create_app, make_runtime, make_settings

ADMIN = {"Authorization": "Bearer admintok"}


@dataclass
class Webs:
    a: object  # web process A (Flask app)
    b: object  # web process B
    worker_runtime: object
    queue: object  # the RQ queue both webs enqueue to
    redis: object
    publisher: object  # the worker runtime's Redis listener (jobs.redis_publisher)


def wait_subscribed(app, redis, seconds: float = 10.0) -> None:
    """Return once ``app``'s Redis subscriber forwards wake-ups to its broker: Redis
    drops a message published before the subscription exists."""
    broker = app.extensions["chatflow_broker"]
    probe = "probe-" + secrets.token_hex(4)
    q = broker.subscribe(f"agent:{probe}")
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            redis.publish(jobs.live_channel(app.config), json.dumps({"kind": "notification",
                                                                     "payload": {"agent_id": probe}}))
            try:
                q.get(timeout=0.1)
                return
            except queue_module.Empty:
                continue
        pytest.fail(f"the web process's Redis subscriber did not start within {seconds} s")
    finally:
        broker.unsubscribe(f"agent:{probe}", q)


def make_webs(pg_url, redis_url, tmp_path, publish: bool = True):
    queue_name = f"chatflow-live-{secrets.token_hex(4)}"
    base = {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, "QUEUE": queue_name, "ADMIN_TOKEN": "admintok",
            "SECRET_KEY": "live-secret"}
    a = create_app({**base, "DATA_DIR": str(tmp_path / "a")})
    with a.extensions["chatflow"].db.begin() as conn:  # each test starts from empty tables (admin kept)
        for table in ("events", "timers", "notifications", "emails", "traces", "chats"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("DELETE FROM agents WHERE id <> 'admin'"))
    b = create_app({**base, "DATA_DIR": str(tmp_path / "b")})
    settings = make_settings({**base, "DATA_DIR": str(tmp_path / "worker")})
    worker_runtime = make_runtime(settings)
    redis = jobs.make_redis(redis_url)
    publisher = jobs.redis_publisher(redis, jobs.live_channel(settings))
    if publish:  # as `chatflow worker` does
        worker_runtime.listeners.append(publisher)
    jobs.set_runtime(worker_runtime)
    queue = jobs.make_queue(settings, redis)
    for app in (a, b):
        wait_subscribed(app, redis)
    return Webs(a, b, worker_runtime, queue, redis, publisher)


def close_webs(webs: Webs) -> None:
    webs.queue.empty()
    webs.queue.delete(delete_jobs=True)
    for app in (webs.a, webs.b):
        app.extensions["chatflow_stop"].set()
        app.extensions["chatflow"].db.dispose()
    webs.worker_runtime.db.dispose()


@pytest.fixture
def webs(pg_url, redis_url, tmp_path):
    w = make_webs(pg_url, redis_url, tmp_path)
    yield w
    close_webs(w)


@pytest.fixture
def webs_without_publisher(pg_url, redis_url, tmp_path):
    """As ``webs``, but the worker tells no web process what it stored."""
    w = make_webs(pg_url, redis_url, tmp_path, publish=False)
    yield w
    close_webs(w)


def parse_frame(block: str) -> dict:
    """One SSE frame: ``{"id", "event", "data"}`` (data decoded), ``{"comment"}`` or ``{"retry"}``."""
    frame: dict = {}
    for line in block.split("\n"):
        if line.startswith(":"):
            frame["comment"] = line[1:].strip()
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            frame["data"] = json.loads(value)
        elif field in ("id", "retry"):
            frame[field] = int(value)
        else:
            frame[field] = value
    return frame


class Frames:
    """A stream opened with the Flask test client (unbuffered), read one frame at a time;
    a frame that never comes blocks until the stream's STREAM_SECONDS end."""

    def __init__(self, client, path, headers, seconds: float):
        config = client.application.config
        before, config["STREAM_SECONDS"] = config["STREAM_SECONDS"], seconds
        try:  # the view reads the limit when the stream opens
            self.response = client.get(path, headers=headers, buffered=False)
        finally:
            config["STREAM_SECONDS"] = before
        assert self.response.status_code == 200, self.response.get_data(as_text=True)
        self._chunks = iter(self.response.response)
        self._buffer = ""

    def next(self) -> dict:
        while "\n\n" not in self._buffer:
            self._buffer += next(self._chunks).decode("utf-8")
        block, self._buffer = self._buffer.split("\n\n", 1)
        return parse_frame(block)

    def close(self) -> None:
        self.response.close()
