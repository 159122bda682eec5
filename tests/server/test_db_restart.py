"""PostgreSQL restarts under a running service (SPEC §5: no request turns into a 500 for
it, nothing is lost). The pool does not ping a connection it reuses at once (that round
trip cost every request); one that sat idle is checked and replaced if dead."""
from __future__ import annotations

import psycopg
import pytest

from server import store as S


@pytest.fixture
def backend():
    return "postgresql"


def kill_server_connections(pg_url) -> int:
    """What a restart does to the service's pooled connections: every backend of the
    scratch database is terminated."""
    name = pg_url.rsplit("/", 1)[1]
    admin = pg_url.rsplit("/", 1)[0] + "/test"
    with psycopg.connect(admin, autocommit=True) as conn:
        return len(conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall())


def test_requests_after_the_database_dropped_every_connection_succeed(api, client, runtime, pg_url, monkeypatch):
    team = api.agents("alice")
    cid, cust = api.start_chat("Hi")
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    assert kill_server_connections(pg_url) >= 1
    monkeypatch.setattr(S, "PING_AFTER", 0.0)  # as after a second of quiet

    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "still there?"}, status=201)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Yes!"}, status=201)
    assert api.customer_texts(cid, cust) == ["Hi", "still there?", "Yes!"]
    assert api.templates(team["alice"], cid) == ["new_chat", "new_message"]


def test_a_request_on_a_connection_that_died_in_use_is_a_503_and_the_next_one_works(api, client, pg_url, monkeypatch):
    """A connection reused at once is not checked: if the database dropped it, that one
    request answers 503 with Retry-After (never a 500, nothing half-written), and
    SQLAlchemy replaces the pool, so the retry goes through."""
    monkeypatch.setattr(S, "PING_AFTER", 1e9)
    cid, cust = api.start_chat("Hi")
    assert kill_server_connections(pg_url) >= 1

    r = api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "one"})
    assert (r.status_code, r.get_json()["error"], r.headers["Retry-After"]) == (503, "unavailable", "1")
    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "one"}, status=201)
    assert api.customer_texts(cid, cust) == ["Hi", "one"]
