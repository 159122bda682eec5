"""store.insert_rows / update_rows / among: a batch's rows of one kind in one statement on
PostgreSQL (one JSON parameter through json_populate_recordset), executemany on SQLite.
What is stored must be exactly what SQLAlchemy's own INSERT and UPDATE would have stored."""
from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from server import store as S

# values a JSON column must keep as they are: nesting, unicode, escapes, integers beyond
# 64 bits (json_dumps falls back to json for them), floats that must round-trip exactly
AWKWARD = [
    {"nested": {"list": [1, 2.5, None, True, "x"], "empty": {}}},
    {"text": "żółw 🐢 \"quoted\" \\ back\nslash\ttab \u2028"},
    {"big": 123456789012345678901234567890, "neg": -(2 ** 70)},
    {"float": 0.1 + 0.2, "tiny": 5e-324, "huge": 1.7976931348623157e308, "at": 1764121234.123456},
    [],
    "a plain string",
]


@pytest.fixture
def db(runtime):
    return runtime.db


def _event(i, payload=None, chat="c_bulk"):
    return dict(id=f"e_bulk_{i:05d}", chat_id=chat, type="message.created",
                payload=payload if payload is not None else {"i": i}, at=1764121200.0 + i / 7)


def test_inserted_rows_are_what_sqlalchemy_would_store_and_keep_the_list_order(db, backend):
    rows = [_event(i, AWKWARD[i % len(AWKWARD)]) for i in range(600)]
    random.Random(4).shuffle(rows)
    with db.begin() as conn:
        S.insert_rows(conn, S.events, rows)
    with db.connect() as conn:
        stored = conn.execute(select(S.events.c.id, S.events.c.chat_id, S.events.c.type, S.events.c.payload,
                                     S.events.c.at).order_by(S.events.c.seq)).mappings().all()
    assert [dict(r) for r in stored] == rows  # the serial key numbered them in the list's order


def test_python_side_defaults_are_filled_as_sqlalchemy_does(db, backend):
    # notifications.read has default=False (no server default): a raw INSERT would store NULL
    rows = [dict(key=f"k{i}", agent_id="alice", chat_id="c1", rule="r", template="t", text=None, at=1.0 + i)
            for i in range(3)]
    with db.begin() as conn:
        S.insert_rows(conn, S.notifications, rows)
    with db.connect() as conn:
        got = conn.execute(select(S.notifications.c.key, S.notifications.c.read, S.notifications.c.text)
                           .order_by(S.notifications.c.id)).all()
    assert [tuple(r) for r in got] == [("k0", False, None), ("k1", False, None), ("k2", False, None)]


def test_conflicting_keys_are_left_out_and_the_rest_inserted(db, backend):
    first = [dict(key="k1", agent_id="alice", chat_id="c1", rule="r", template="t", text="first", at=1.0)]
    again = [dict(key="k1", agent_id="bob", chat_id="c1", rule="r", template="t", text="again", at=2.0),
             dict(key="k2", agent_id="bob", chat_id="c1", rule="r", template="t", text="new", at=3.0)]
    with db.begin() as conn:
        S.insert_rows(conn, S.notifications, first, conflict_key=["key"])
    with db.begin() as conn:
        S.insert_rows(conn, S.notifications, again, conflict_key=["key"])
    with db.connect() as conn:
        got = dict(conn.execute(select(S.notifications.c.key, S.notifications.c.text)).all())
    assert got == {"k1": "first", "k2": "new"}


def test_update_rows_changes_exactly_the_named_rows_and_columns(db, backend):
    with db.begin() as conn:
        S.insert_rows(conn, S.timers, [dict(chat_id=f"c{i}", rule_id="r", due=float(i), lease_until=None)
                                       for i in range(5)])
        S.insert_rows(conn, S.chats, [dict(id=f"c{i}", channel="widget", status="open", assignee=None,
                                           customer_id="u", token_hash=None, state={"n": i}, rule_state={},
                                           event_seq=0, created_at=1.0, updated_at=1.0) for i in range(5)])
    changes = [dict(id="c1", status="closed", state=AWKWARD[2], event_seq=7, updated_at=2.5),
               dict(id="c3", status="pending", state=AWKWARD[1], event_seq=9, updated_at=3.5)]
    with db.begin() as conn:
        S.update_rows(conn, S.chats, changes)
    with db.connect() as conn:
        got = {r.id: r for r in conn.execute(select(S.chats)).all()}
    assert (got["c1"].status, got["c1"].state, got["c1"].event_seq, got["c1"].updated_at) == \
        ("closed", AWKWARD[2], 7, 2.5)
    assert (got["c3"].status, got["c3"].state, got["c3"].event_seq) == ("pending", AWKWARD[1], 9)
    for cid in ("c0", "c2", "c4"):  # untouched
        assert (got[cid].status, got[cid].state, got[cid].updated_at) == ("open", {"n": int(cid[1])}, 1.0)
    assert got["c1"].customer_id == "u" and got["c1"].created_at == 1.0  # columns not named: kept


def test_rows_must_share_their_columns(db, backend):
    with db.begin() as conn, pytest.raises(ValueError):
        S.insert_rows(conn, S.events, [_event(1), {**_event(2), "processed_at": 1.0}])


@pytest.mark.parametrize("n", [1, 2, 150])
def test_among_selects_the_listed_values(db, backend, n):
    rows = [_event(i) for i in range(200)]
    with db.begin() as conn:
        S.insert_rows(conn, S.events, rows)
    wanted = [r["id"] for r in rows[:n]]
    with db.connect() as conn:
        got = [r[0] for r in conn.execute(select(S.events.c.id).where(S.among(conn, S.events.c.id, wanted)))]
        seqs = [r[0] for r in conn.execute(select(S.events.c.seq).where(S.among(conn, S.events.c.id, wanted)))]
        by_seq = [r[0] for r in conn.execute(select(S.events.c.id).where(S.among(conn, S.events.c.seq, seqs)))]
    assert sorted(got) == sorted(wanted) == sorted(by_seq)
