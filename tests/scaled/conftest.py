"""Scaled-mode fixtures: a scratch PostgreSQL database per test run, Redis, the test's
clock, and ``start_scaled`` for a web process and a worker runtime on a queue of their own.

PostgreSQL and Redis are real (.ci/run starts them); when one is not reachable the
fixture fails with the reason instead of skipping.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from scaled_mode import Clock
from server import jobs
from server.app import create_app, make_runtime, make_settings

PG_ADMIN = os.environ.get("CHATFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CHATFLOW_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _admin_connect():
    import psycopg

    errors = []
    for url in (PG_ADMIN, PG_ADMIN.replace("postgres@", "root@")):
        try:
            return psycopg.connect(url, autocommit=True), url
        except psycopg.Error as e:
            errors.append(f"{url}: {e}")
    pytest.fail("PostgreSQL is not reachable (start it as .ci/run does): " + "; ".join(errors))


@pytest.fixture(scope="session")
def pg_url():
    conn, url = _admin_connect()
    name = f"chatflow_scaled_{os.getpid()}_{secrets.token_hex(4)}"
    conn.execute(f'CREATE DATABASE "{name}"')
    base = url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="session")
def redis_url():
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except RedisError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} (start it as .ci/run does): {e}")
    return REDIS_URL


@pytest.fixture
def clock():
    """The test's clock, at T0 (scaled_mode.py) until the test moves it."""
    return Clock()


@dataclass
class Scaled:
    app: object  # the web process (Flask app)
    runtime: object  # its runtime
    worker_runtime: object  # the runtime the queued jobs run with (jobs.set_runtime)
    queue: object  # the RQ queue the web process enqueues to
    redis: object


# Emptied before each test, children before parents; a test names its own tables besides.
_TABLES = ("events", "timers", "notifications", "emails", "traces")


@pytest.fixture
def start_scaled(pg_url, redis_url, tmp_path, clock):
    """``start(config=None, tables=())`` returns a Scaled: a web process in scaled mode on
    the scratch database, with a queue of its own, ``clock`` as its clock and "admintok"
    as the admin token (``config`` adds to or overrides that), and a worker runtime on the
    same settings. The usual tables, then ``tables``, then chats and every agent but admin
    are emptied first, so each test starts from nothing. Stopped at teardown."""
    started = []

    def start(config=None, tables=()) -> Scaled:
        config = {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, "QUEUE": f"chatflow-test-{secrets.token_hex(4)}",
                  "CLOCK": clock, "ADMIN_TOKEN": "admintok", "DATA_DIR": str(tmp_path), **(config or {})}
        app = create_app(config)
        runtime = app.extensions["chatflow"]
        with runtime.db.begin() as conn:
            for table in _TABLES + tuple(tables) + ("chats",):
                conn.execute(text(f"DELETE FROM {table}"))
            conn.execute(text("DELETE FROM agents WHERE id <> 'admin'"))
        worker_runtime = make_runtime(make_settings(config))
        jobs.set_runtime(worker_runtime)
        redis = jobs.make_redis(redis_url)
        started.append(Scaled(app, runtime, worker_runtime, jobs.make_queue(worker_runtime.settings, redis), redis))
        return started[-1]

    yield start
    for s in started:
        s.queue.empty()
        s.queue.delete(delete_jobs=True)
        s.app.extensions["chatflow_stop"].set()
