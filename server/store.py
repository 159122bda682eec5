"""Storage: SQLAlchemy Core tables on SQLite (WAL, the embedded default) or PostgreSQL.

A chat is one row holding its snapshot (engine.snapshot) plus the engine's memory of it
(each state rule's episode and deadline). Its events go into ``events`` in the same
transaction as the change (a transactional outbox) and are marked processed when the
rules have run on them; effects are rows keyed by their idempotency key, so a
redelivered event never stores a notification or an email twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import orjson
from sqlalchemy import (JSON, BigInteger, Boolean, Column, Float, Index, Integer, LargeBinary, MetaData,
                        String, Table, Text, create_engine, event, exc)

metadata = MetaData()

agents = Table(
    "agents", metadata,
    Column("id", String(100), primary_key=True),
    Column("name", String(200)),
    Column("departments", JSON, nullable=False, default=list),
    Column("access_chats", Boolean, nullable=False, default=True),
    Column("channels", JSON),  # null: every channel
    Column("status", String(10), nullable=False, default="online"),
    Column("max_chats", Integer),
    Column("capacity", JSON),  # {channel: open chats of it} (migration 0007); null: the rule set's
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("token_hash", String(64), unique=True),
    Column("reply_shortcut", String(10), nullable=False, default="enter"),
    Column("email", String(300)),  # migration 0009: where notifications by email go
    Column("notifications", JSON),  # {template | "*": in_app | email | off}; null: in_app for all
)

chats = Table(
    "chats", metadata,
    Column("id", String(100), primary_key=True),
    Column("channel", String(20), nullable=False),
    Column("status", String(10), nullable=False),
    Column("assignee", String(100), index=True),
    Column("customer_id", String(200), nullable=False),
    Column("token_hash", String(64), unique=True),
    Column("state", JSON, nullable=False),  # engine.snapshot.chat_to_dict
    Column("rule_state", JSON, nullable=False, default=dict),  # Engine.chat_state (episodes)
    Column("event_seq", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

events = Table(
    "events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(200), nullable=False, unique=True),
    Column("chat_id", String(100), index=True),
    Column("type", String(40), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("at", Float, nullable=False),
    Column("processed_at", Float),
    Index("ix_events_unprocessed", "processed_at", "seq"),
)

timers = Table(
    "timers", metadata,
    Column("chat_id", String(100), primary_key=True),
    Column("rule_id", String(200), primary_key=True),
    Column("due", Float, nullable=False, index=True),
    Column("lease_until", Float),
)

notifications = Table(
    "notifications", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False, unique=True),
    Column("agent_id", String(100), nullable=False, index=True),
    Column("chat_id", String(100), nullable=False),
    Column("rule", String(200)),
    Column("template", String(100)),
    Column("text", Text),
    Column("at", Float, nullable=False),
    Column("read", Boolean, nullable=False, default=False),
)

emails = Table(
    "emails", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False, unique=True),
    Column("chat_id", String(100), nullable=False, index=True),
    Column("to_addr", String(300), nullable=False),
    Column("template", String(100), nullable=False),
    Column("data", JSON, nullable=False),
    Column("at", Float, nullable=False),
    Column("sent_at", Float),
    Column("message_id", String(300)),
)

agent_email_items = Table(  # migration 0009: notifications waiting for an agent's batched email
    "agent_email_items", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False, unique=True),  # the notification's idempotency key
    Column("agent_id", String(100), nullable=False),
    Column("chat_id", String(100), nullable=False),
    Column("rule", String(200)),
    Column("template", String(100)),
    Column("text", Text),
    Column("at", Float, nullable=False),
    Column("email_id", Integer),  # the agent_emails row that carried it (0: none, no address); null: waiting
    Index("ix_agent_email_items_waiting", "email_id", "agent_id", "chat_id"),
)

agent_emails = Table(  # migration 0009: one per agent, chat and window
    "agent_emails", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("agent_id", String(100), nullable=False),
    Column("chat_id", String(100), nullable=False),
    Column("to_addr", String(300), nullable=False),
    Column("items", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("sent_at", Float),
    Column("message_id", String(300)),
    Index("ix_agent_emails_window", "agent_id", "chat_id", "created_at"),
)

webhook_deliveries = Table(  # migration 0008; server.webhooks posts them after the commit
    "webhook_deliveries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False, unique=True),
    Column("webhook", String(100), nullable=False),
    Column("chat_id", String(100), nullable=False, index=True),
    Column("rule", String(200)),
    Column("event", String(40)),
    Column("body", JSON, nullable=False),
    Column("at", Float, nullable=False),
    Column("status", String(10), nullable=False, server_default="pending"),  # pending | delivered | failed | refused
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Float),
    Column("lease_until", Float),
    Column("response_code", Integer),
    Column("last_error", Text),
    Column("delivered_at", Float),
    Column("updated_at", Float),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
)

rulesets = Table(
    "rulesets", metadata,
    Column("version", Integer, primary_key=True, autoincrement=True),
    Column("files", JSON, nullable=False),  # {name: text}
    Column("defaults", Boolean, nullable=False, default=True),
    Column("active", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(100)),
)

traces = Table(
    "traces", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("chat_id", String(100), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("entries", JSON, nullable=False),
)

revisions = Table(  # counters bumped by triggers (migration 0004): "agents" moves on any change of agents
    "revisions", metadata,
    Column("name", String(50), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

round_robin = Table(  # the agent each department's round robin picked last
    "round_robin", metadata,
    Column("department", String(200), primary_key=True),
    Column("agent_id", String(100), nullable=False),
)

rule_runs = Table(  # per rule and minute: evaluations, firings, effects (migration 0005)
    "rule_runs", metadata,
    Column("rule", String(200), primary_key=True),
    Column("minute", BigInteger, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("evaluated", Integer, nullable=False),
    Column("fired", Integer, nullable=False),
    Column("effects", Integer, nullable=False),
    Column("last_fired", Float),
)

routing_picks = Table(  # each pick of department assignment and the backlog (migration 0006)
    "routing_picks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("agent_id", String(100), nullable=False),
    Column("chat_id", String(100)),
    Column("at", Float, nullable=False),
    Index("ix_routing_picks_agent_at", "agent_id", "at"),
)

# The analytics' samples of closed days (migration 0010; server/analytics_days.py): a cache
# of what the events say, which triggers on ``events`` empty from a day whose events change.
analytics_state = Table(  # one row (id 1): days before ``until`` may be kept
    "analytics_state", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("until", Float, nullable=False),
    Column("changes", BigInteger, nullable=False),
)

analytics_days = Table(  # the days kept, per wait threshold
    "analytics_days", metadata,
    Column("day", Integer, primary_key=True, autoincrement=False),
    Column("wait_minutes", Float, primary_key=True),
    Column("computed_at", Float, nullable=False),
    Column("filling", String(32)),  # migration 0011: a fill's token while it walks the day; NULL once kept
)

analytics_day_chats = Table(  # migration 0011: per day kept, each chat's samples of each figure (for chat filters)
    "analytics_day_chats", metadata,
    Column("wait_minutes", Float, primary_key=True),
    Column("day", Integer, primary_key=True, autoincrement=False),
    Column("chat_id", String(100), primary_key=True),
    Column("metric", String(40), primary_key=True),
    Column("agent", String(100), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("samples", LargeBinary),
)

analytics_day_figures = Table(  # per day kept: each figure's samples
    "analytics_day_figures", metadata,
    Column("day", Integer, primary_key=True, autoincrement=False),
    Column("wait_minutes", Float, primary_key=True),
    Column("metric", String(40), primary_key=True),
    Column("agent", String(100), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("chats", Text),
    Column("samples", LargeBinary),
)

canned = Table(
    "canned_responses", metadata,
    Column("shortcut", String(100), primary_key=True),
    Column("text", Text, nullable=False),
)

articles = Table(
    "articles", metadata,
    Column("slug", String(200), primary_key=True),
    Column("title", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("url", String(500)),
)


def json_dumps(value) -> str:
    """JSON columns are written with orjson (a chat's state is rewritten on every command);
    what it does not take (integers beyond 64 bits in custom fields) falls back to json."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


# An integer of 20 digits or more is beyond 64 bits: orjson would read it as a float. Such a
# run is found by mapping every digit to "0" and everything else to "." (bytes.translate,
# ten times faster than a regular expression over a chat's state) and looking for 20 zeros.
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
_LONG_RUN = b"0" * 20


def json_loads(text):
    """JSON columns and request bodies are read with orjson (a chat's state is read on every
    command; three times faster than json). A text with a run of 20 digits (an integer
    beyond 64 bits, which orjson would turn into a float) and what orjson refuses (NaN,
    lone surrogates) go to json, which reads them as before."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if _LONG_RUN not in raw.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text if isinstance(text, str) else raw)


# ---------------------------------------------------------------- many rows in one statement
#
# On PostgreSQL the runtime writes a batch's rows of one kind as ONE statement whose one
# parameter is the rows as a JSON array (``json_populate_recordset`` turns it into rows of
# the table's type). psycopg's executemany sends each row as its own Bind/Execute, and each
# costs Python 50-100 µs (parameters dumped, SQLAlchemy's per-row processing): a worker's
# batch of 100 chats wrote ~700 rows that way. A JSON column's value is nested as is, so
# what is stored is the same text ``json_dumps`` would have written. SQLite keeps
# executemany (in-process, no round trips).

def _columns(rows) -> list:
    names = list(rows[0])
    if any(len(r) != len(names) or any(n not in r for n in names) for r in rows):
        raise ValueError("every row must have the same columns")
    return names


def _defaults(table, names) -> dict:
    """{column: () -> value} for the table's columns with a Python-side default that the
    rows do not carry."""
    out = {}
    for c in table.columns:
        d = c.default
        if c.name in names or d is None or getattr(d, "is_sequence", False):
            continue
        if d.is_scalar:
            out[c.name] = lambda v=d.arg: v
        elif d.is_callable:
            out[c.name] = lambda f=d.arg: f(None)
    return out


def insert_rows(conn, table, rows, conflict_key: list | None = None) -> None:
    """INSERT ``rows`` (dicts with the same keys); with ``conflict_key``, rows whose key is
    stored already are left out (``ON CONFLICT (key) DO NOTHING``)."""
    if not rows:
        return
    names = _columns(rows)
    if conn.dialect.name != "postgresql":
        from sqlalchemy.dialects.sqlite import insert

        stmt = insert(table)
        if conflict_key:
            stmt = stmt.on_conflict_do_nothing(index_elements=conflict_key)
        conn.execute(stmt, rows)
        return
    from sqlalchemy import text

    defaults = _defaults(table, names)
    if defaults:  # what SQLAlchemy's INSERT would have added (server defaults apply by themselves)
        rows = [{**r, **{n: d() for n, d in defaults.items()}} for r in rows]
        names += list(defaults)
    cols = ", ".join(f'"{n}"' for n in names)
    # in the list's order (a serial key, e.g. events.seq, numbers them in that order)
    sql = (f'INSERT INTO "{table.name}" ({cols}) SELECT {cols} '
           f'FROM json_populate_recordset(NULL::"{table.name}", CAST(:rows AS json)) WITH ORDINALITY AS r '
           f'ORDER BY r.ordinality')
    if conflict_key:
        sql += " ON CONFLICT ({}) DO NOTHING".format(", ".join(f'"{k}"' for k in conflict_key))
    conn.execute(text(sql), {"rows": json_dumps(rows)})


def update_rows(conn, table, rows, key: str = "id") -> None:
    """UPDATE the rows of ``table`` whose ``key`` is each row's ``key`` with the row's other
    values (one row per key)."""
    if not rows:
        return
    names = _columns(rows)
    if key not in names:
        raise ValueError(f"rows must carry {key!r}")
    if conn.dialect.name != "postgresql":
        from sqlalchemy import bindparam, update

        conn.execute(update(table).where(table.c[key] == bindparam("_k"))
                     .values({n: bindparam(n) for n in names if n != key}),
                     [{**{n: r[n] for n in names if n != key}, "_k": r[key]} for r in rows])
        return
    from sqlalchemy import text

    sets = ", ".join(f'"{n}" = r."{n}"' for n in names if n != key)
    conn.execute(text(f'UPDATE "{table.name}" AS t SET {sets} '
                      f'FROM json_populate_recordset(NULL::"{table.name}", CAST(:rows AS json)) AS r '
                      f'WHERE t."{key}" = r."{key}"'), {"rows": json_dumps(rows)})


def among(conn, column, values):
    """``column IN (values)``; on PostgreSQL ``column = ANY(array)``: one parameter however
    many values, so the statement's text is the same for every batch (psycopg caches its
    parse only for texts under 4 KiB; 100 expanded ids made a new, longer text each time)."""
    values = list(values)
    if len(values) == 1:
        return column == values[0]
    if conn.dialect.name != "postgresql":
        return column.in_(values)
    from sqlalchemy import any_, bindparam
    from sqlalchemy.dialects.postgresql import ARRAY

    return column == any_(bindparam(None, values, type_=ARRAY(column.type)))


def token_hash(token: str) -> str:
    """Tokens are stored as their SHA-256: a leaked table opens no chat."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def database_url(url: str | None, data_dir: str) -> str:
    """The SQLAlchemy URL: DATABASE_URL (PostgreSQL via psycopg 3) or a SQLite file."""
    if not url:
        os.makedirs(data_dir, exist_ok=True)
        return f"sqlite:///{os.path.join(data_dir, 'chatflow.db')}"
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_db(url: str):
    """An SQLAlchemy engine with the tables created; SQLite in WAL mode."""
    is_sqlite = url.startswith("sqlite")
    kwargs = {"future": True, "json_serializer": json_dumps, "json_deserializer": json_loads}
    if is_sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        # executemany goes to psycopg's pipelined executemany of one prepared statement;
        # SQLAlchemy's default (one INSERT … VALUES with every row) made psycopg parse a
        # new long query text for each batch
        kwargs["use_insertmanyvalues"] = False
    db = create_engine(url, **kwargs)
    if not is_sqlite:
        _ping_when_idle(db)
    if is_sqlite:
        @event.listens_for(db, "connect")
        def _pragmas(conn, _record):
            cur = conn.cursor()
            if ":memory:" not in url:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    migrate(db)
    return db


PING_AFTER = 1.0  # seconds a pooled connection may sit unused before it is checked on checkout


def _ping_when_idle(db) -> None:
    """Check a pooled connection before use only if it sat idle for PING_AFTER seconds
    (a database restarted meanwhile leaves it dead); a dead one is replaced. Busy
    connections go back out without the extra round trip that ``pool_pre_ping`` costs
    every request; a restart while they are in use fails those requests either way, and
    SQLAlchemy then drops every pooled connection older than the failure."""

    @event.listens_for(db, "checkin")
    def _idle_from(_dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(db, "checkout")
    def _check(dbapi_conn, record, _proxy):
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER:
            return
        try:
            db.dialect.do_ping(dbapi_conn)
        except Exception as e:  # the pool retries the checkout with a new connection
            raise exc.DisconnectionError(f"stale pooled connection: {type(e).__name__}") from e


MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def migrate(db) -> None:
    """Bring the database to the newest schema with Alembic. On PostgreSQL an advisory
    lock keeps several processes starting at once from migrating twice."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    with db.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7243001)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
