"""Fixtures for the service's integration tests: the Flask app on both backends (a SQLite
file and a scratch PostgreSQL database), a virtual clock, and helpers that drive the API
the way clients do.

Real parts only (STYLE rule 12): the PostgreSQL backend talks to the server on
127.0.0.1:5432, which ``.ci/run`` starts; when it is not reachable the tests fail, they
do not skip.
"""
from __future__ import annotations

import mailbox
import os
import secrets
from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, text

from server import store as S
from server.app import create_app

ADMIN_TOKEN = "admintok"
# CHATFLOW_TEST_PG names another server, as for tests/scaled
_PG = os.environ.get("CHATFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG_ADMIN_URLS = (_PG, _PG.replace("postgres@", "root@", 1))
START = datetime(2026, 1, 5, 9, 0, 0, tzinfo=timezone.utc).timestamp()


class VirtualClock:
    """The CLOCK the app reads: epoch seconds that move only when a test moves them."""

    def __init__(self, now: float = START):
        self.start = float(now)
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def at(self, seconds: float) -> float:
        """Set the time to ``seconds`` after the start."""
        self.now = self.start + seconds
        return self.now


# ------------------------------------------------------------------ PostgreSQL scratch database

def _pg_admin_connection():
    import psycopg

    errors = []
    for url in PG_ADMIN_URLS:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=5), url
        except psycopg.Error as e:
            errors.append(f"{url}: {e}".strip())
    pytest.fail("PostgreSQL is not reachable; the integration tests need it (.ci/run starts it).\n"
                + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL database made for this test session, with the tables created; dropped at the end."""
    conn, admin_url = _pg_admin_connection()
    name = f"chatflow_test_{os.getpid()}_{secrets.token_hex(4)}"
    conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        S.make_db(S.database_url(url, "unused")).dispose()  # migrates to the newest schema once
        yield url
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="session")
def pg_cleaner(pg_url):
    """Empties every table of the scratch database and restarts its ids, for the next
    test. DELETE, not TRUNCATE: on a few rows it is ten times faster."""
    db = create_engine(S.database_url(pg_url, "unused"), pool_pre_ping=True)  # outlives killed connections
    serials = [(t.name, c.name) for t in S.metadata.sorted_tables for c in t.primary_key.columns
               if c.autoincrement is True]

    def clean():
        with db.begin() as conn:
            for table in reversed(S.metadata.sorted_tables):
                if table is not S.revisions:  # counters the triggers keep: left as they are
                    conn.execute(table.delete())
            for table, column in serials:
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), 1, false)"))

    yield clean
    db.dispose()


# ------------------------------------------------------------------ the app

@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    return request.param


@pytest.fixture
def app_config():
    """Settings a test module adds to the app's (override this fixture in the module)."""
    return {}


@pytest.fixture
def app(request, backend, tmp_path, clock, app_config):
    # DATA_DIR exists, as `chatflow serve` makes it (the maildir lives there)
    os.makedirs(tmp_path / "data")
    config = {"DATA_DIR": str(tmp_path / "data"), "CLOCK": clock, "TIMERS": False,
              "ADMIN_TOKEN": ADMIN_TOKEN, "SECRET_KEY": "test-secret", **app_config}
    if backend == "postgresql":
        request.getfixturevalue("pg_cleaner")()
        config["DATABASE_URL"] = request.getfixturevalue("pg_url")
    app = create_app(config)
    app.config["TESTING"] = True
    yield app
    app.extensions["chatflow"].db.dispose()


@pytest.fixture
def runtime(app):
    return app.extensions["chatflow"]


@pytest.fixture
def client(app):
    return app.test_client()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


class Api:
    """The API as a client uses it; each helper asserts the status it expects."""

    def __init__(self, client, app):
        self.client = client
        self.app = app
        self.admin = bearer(ADMIN_TOKEN)

    def create_agent(self, agent_id: str, **fields) -> str:
        """Create an agent through the admin API; returns its token."""
        r = self.client.post("/api/admin/agents", json={"id": agent_id, **fields}, headers=self.admin)
        assert r.status_code == 201, r.get_json()
        return r.get_json()["token"]

    def agents(self, *specs) -> dict:
        """``agents("alice", ("tess", {"channels": ["telegram"]}))`` → {id: Authorization headers}."""
        out = {}
        for spec in specs:
            agent_id, fields = (spec, {}) if isinstance(spec, str) else spec
            out[agent_id] = bearer(self.create_agent(agent_id, **fields))
        return out

    def upload_rules(self, files: dict) -> dict:
        """Upload and activate a rule set of ``files`` ({name: text}); returns the answer."""
        r = self.client.post("/api/admin/rulesets", json={"files": files}, headers=self.admin)
        assert r.status_code == 201, r.get_json()
        return r.get_json()

    def start_chat(self, text: str = "Hi", **body) -> tuple[str, dict]:
        """Start a widget chat; returns (chat id, the customer's Authorization headers)."""
        r = self.client.post("/api/widget/chats", json={"text": text, **body})
        assert r.status_code == 201, r.get_json()
        data = r.get_json()
        return data["chat"]["id"], bearer(data["token"])

    def notifications(self, headers) -> list[tuple[str, str]]:
        """The agent's notifications as (chat id, template), oldest first."""
        r = self.client.get("/api/notifications", headers=headers)
        assert r.status_code == 200, r.get_json()
        return [(n["chat_id"], n["template"]) for n in r.get_json()["notifications"]]

    def templates(self, headers, chat_id: str | None = None) -> list[str]:
        return [t for c, t in self.notifications(headers) if chat_id is None or c == chat_id]

    def agent_chat(self, chat_id: str, headers) -> dict:
        r = self.client.get(f"/api/chats/{chat_id}", headers=headers)
        assert r.status_code == 200, r.get_json()
        return r.get_json()

    def customer_chat(self, chat_id: str, headers) -> dict:
        r = self.client.get(f"/api/widget/chats/{chat_id}", headers=headers)
        assert r.status_code == 200, r.get_json()
        return r.get_json()

    def customer_texts(self, chat_id: str, headers) -> list[str]:
        r = self.client.get(f"/api/widget/chats/{chat_id}/messages", headers=headers)
        assert r.status_code == 200, r.get_json()
        return [m["text"] for m in r.get_json()["messages"]]

    def post(self, path: str, headers, json=None, status: int | None = None):
        r = self.client.post(path, json=json, headers=headers)
        if status is not None:
            assert r.status_code == status, (r.status_code, r.get_json())
        return r

    def maildir(self) -> list:
        """The messages delivered to the app's maildir, oldest first."""
        path = self.app.config["MAILDIR"]
        if not os.path.isdir(path):
            return []
        box = mailbox.Maildir(path, create=False)
        return sorted(box, key=lambda m: m.get_date())  # in delivery order


@pytest.fixture
def api(client, app):
    return Api(client, app)
