"""Scaled-mode fixtures: a scratch PostgreSQL database and a scratch RQ queue per test run.

PostgreSQL and Redis are real (.ci/run starts them); when one is not reachable the
fixture fails with the reason instead of skipping.
"""
from __future__ import annotations

import os
import secrets

import pytest

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
