"""SPEC §5, the transactional outbox: every command stores its events with the chat
change, the rules run on them once, and a redelivered event or a repeated commit stores
no effect twice (effects are keyed by their idempotency key)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from engine.core import Engine
from engine.snapshot import event_from_dict
from server import store as S


@pytest.fixture
def team(api):
    return api.agents("alice", "bob")


def rows(runtime, table, chat_id=None) -> list[dict]:
    q = select(table)
    if chat_id is not None:
        q = q.where(table.c.chat_id == chat_id)
    with runtime.db.connect() as conn:
        return [dict(r) for r in conn.execute(q.order_by(*table.primary_key.columns)).mappings()]


def effects(runtime) -> tuple:
    """What reached people: (notification keys, email keys), in insertion order."""
    return ([r["key"] for r in rows(runtime, S.notifications)], [r["key"] for r in rows(runtime, S.emails)])


def busy_chat(api, clock, team) -> tuple[str, dict]:
    """A chat with notifications of several kinds and one email sent."""
    cid, cust = api.start_chat("Hi", customer={"email": "ann@example.com"})
    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "hello?"}, status=201)
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/note", team["alice"], {"text": "@bob have a look"}, status=201)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Hello Ann"}, status=201)
    api.post(f"/api/widget/chats/{cid}/presence", cust, {"online": False}, status=200)
    return cid, cust


def test_every_command_stores_its_events_and_marks_them_processed(api, client, runtime, clock, team):
    seen = 0

    def new_events(cid):
        nonlocal seen
        stored = rows(runtime, S.events, cid)
        fresh, seen = stored[seen:], len(stored)
        assert all(e["processed_at"] == clock.now for e in fresh), fresh
        return [e["type"] for e in fresh]

    cid, cust = api.start_chat("Hi")
    assert new_events(cid) == ["chat.created"]
    steps = [
        (lambda: api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "hello?"}), ["message.created"]),
        (lambda: api.post(f"/api/chats/{cid}/join", team["alice"]), ["chat.joined", "chat.updated"]),
        (lambda: api.post(f"/api/chats/{cid}/read", team["alice"]), ["message.read"]),
        (lambda: api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Hello"}), ["message.created"]),
        (lambda: api.post(f"/api/chats/{cid}/note", team["bob"], {"text": "@alice fyi"}), ["message.created"]),
        (lambda: api.post(f"/api/widget/chats/{cid}/read", cust), ["message.read"]),
        (lambda: api.post(f"/api/widget/chats/{cid}/presence", cust, {"online": False}), ["customer.left"]),
        (lambda: api.post(f"/api/widget/chats/{cid}/presence", cust, {"online": True}), ["customer.returned"]),
        (lambda: api.post(f"/api/chats/{cid}/lock", team["alice"]), ["chat.locked"]),
        (lambda: api.post(f"/api/chats/{cid}/unlock", team["alice"]), ["chat.unlocked"]),
        (lambda: client.patch(f"/api/chats/{cid}/messages/3", json={"text": "Hello!"}, headers=team["alice"]),
         ["message.edited"]),
        (lambda: client.delete(f"/api/chats/{cid}/messages/3", headers=team["alice"]), ["message.deleted"]),
        (lambda: api.post(f"/api/chats/{cid}/unsubscribe", team["bob"]), ["chat.unsubscribed"]),
        (lambda: api.post(f"/api/chats/{cid}/subscribe", team["bob"]), ["chat.subscribed"]),
        (lambda: api.post(f"/api/chats/{cid}/assign", team["alice"], {"agent": "bob"}), ["chat.assigned", "chat.updated"]),
        (lambda: api.post(f"/api/chats/{cid}/close", team["bob"]), ["chat.closed", "chat.updated"]),
        (lambda: api.post(f"/api/chats/{cid}/reopen", team["bob"]), ["chat.reopened", "chat.updated"]),
    ]
    for n, (call, expected) in enumerate(steps, 1):
        clock.advance(1)
        r = call()
        assert r.status_code in (200, 201), (n, r.get_json())
        assert new_events(cid) == expected, n
    assert runtime.process_pending(cid) == 0
    # every stored id is unique and in the chat's own numbering
    ids = [e["id"] for e in rows(runtime, S.events, cid)]
    assert len(set(ids)) == len(ids) and all(i.startswith(f"{cid}:") for i in ids)


def test_a_refused_command_stores_no_event(api, runtime, team):
    cid, _ = api.start_chat("Hi")
    before = rows(runtime, S.events)
    api.post(f"/api/chats/{cid}/reply", team["bob"], {"text": "no"}, status=403)
    api.post(f"/api/chats/{cid}/reopen", team["bob"], status=409)
    assert rows(runtime, S.events) == before


def test_agent_status_events_reach_each_open_chat_of_the_agent(api, client, runtime, team):
    r = client.post("/api/admin/rulesets", headers=api.admin, json={"files": {"away.rules": '''
rule away_tag "Tag the chats of an agent who goes away" {
  on agent.status_changed
  when agent.status == "away"
  then tag "assignee_away"
}
'''}})
    assert r.status_code == 201, r.get_json()
    c1, _ = api.start_chat("one")
    c2, _ = api.start_chat("two")
    c3, _ = api.start_chat("three, bob's")
    for cid in (c1, c2):
        api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{c3}/join", team["bob"], status=200)

    assert client.patch("/api/me", json={"status": "away"}, headers=team["alice"]).status_code == 200
    assert [api.agent_chat(c, team["alice"])["tags"] for c in (c1, c2, c3)] == [["assignee_away"], ["assignee_away"], []]
    status_events = [e for e in rows(runtime, S.events) if e["type"] == "agent.status_changed"]
    assert sorted(e["chat_id"] for e in status_events) == sorted([c1, c2])
    assert all(e["processed_at"] is not None for e in status_events)
    assert len({e["id"] for e in status_events}) == 2


def test_processing_again_does_nothing(api, runtime, clock, team):
    cid, _ = busy_chat(api, clock, team)
    clock.advance(10 * 60)
    assert runtime.run_due() == 1
    runtime.after_change()
    before = (effects(runtime), rows(runtime, S.events), rows(runtime, S.chats), rows(runtime, S.traces),
              rows(runtime, S.timers))
    assert len(before[0][1]) == 1

    assert runtime.process_pending(cid) == 0
    assert runtime.run_due() == 0
    runtime.after_change()
    assert (effects(runtime), rows(runtime, S.events), rows(runtime, S.chats), rows(runtime, S.traces),
            rows(runtime, S.timers)) == before
    assert len(api.maildir()) == 1


def test_redelivered_events_store_no_effect_twice(api, client, runtime, clock, team):
    """A worker that committed the effects but whose acknowledgement was lost: after each
    command its events come back unprocessed and run again, and nothing new is stored."""
    def redeliver_last(cid, status=(200, 201)):
        events = rows(runtime, S.events, cid)
        before = effects(runtime)
        last_seq = max(e["seq"] for e in events)
        batch = [e["seq"] for e in events if e["processed_at"] == events[-1]["processed_at"] and e["seq"] <= last_seq]
        with runtime.db.begin() as conn:
            conn.execute(update(S.events).where(S.events.c.seq.in_(batch)).values(processed_at=None))
        assert runtime.process_pending(cid) == len(batch)
        runtime.run_due()  # a deadline the replay re-armed (already past) fires nothing new
        runtime.after_change()
        assert effects(runtime) == before
        assert runtime.process_pending(cid) == 0

    cid, cust = api.start_chat("Hi", customer={"email": "ann@example.com"})
    redeliver_last(cid)
    for path, headers, payload in [
        (f"/api/widget/chats/{cid}/messages", cust, {"text": "hello?"}),
        (f"/api/chats/{cid}/join", team["alice"], None),
        (f"/api/chats/{cid}/note", team["alice"], {"text": "@bob have a look"}),
        (f"/api/widget/chats/{cid}/messages", cust, {"text": "still there?"}),
        (f"/api/chats/{cid}/reply", team["alice"], {"text": "Hello Ann"}),
        (f"/api/widget/chats/{cid}/presence", cust, {"online": False}),
    ]:
        clock.advance(30)
        assert api.post(path, headers, payload).status_code in (200, 201)
        redeliver_last(cid)
    clock.advance(10 * 60)
    assert runtime.run_due() == 1
    runtime.after_change()
    redeliver_last(cid)

    assert [r["template"] for r in rows(runtime, S.notifications)] == [
        "new_chat", "new_chat", "new_message", "new_message", "mention", "new_message"]
    assert [(r["to_addr"], r["template"]) for r in rows(runtime, S.emails)] == [("ann@example.com", "unread_replies")]
    assert len(api.maildir()) == 1


def test_committing_the_same_evaluation_twice_stores_each_effect_once(api, runtime, clock, team):
    """The outbox's second half run twice over the same engine output (e.g. a retried
    transaction): notifications and emails are keyed, so the second commit adds none."""
    cid, cust = api.start_chat("Hi", customer={"email": "ann@example.com"})
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Hello Ann"}, status=201)
    notes_before, _ = effects(runtime)

    # first half only: the customer's message committed with its event, not yet processed
    clock.advance(60)
    with runtime.db.begin() as conn:
        [row] = runtime._chat_rows(conn, [cid])
        world = runtime._world(conn, row)
        evs = Engine(runtime.ruleset(), world).apply("customer_message", clock.now, chat_id=cid, text="thanks, bye")
        evs += Engine(runtime.ruleset(), world).apply("customer_leaves", clock.now + 1, chat_id=cid)
        runtime._save_chat(conn, world, cid)
        runtime._store_events(conn, evs)
    [pending_msg, pending_left] = [e for e in rows(runtime, S.events, cid) if e["processed_at"] is None]
    assert (pending_msg["type"], pending_left["type"]) == ("message.created", "customer.left")

    def evaluate_and_commit_twice(run):
        for _ in range(2):
            with runtime.db.begin() as conn:
                [item] = runtime._load(conn, runtime._chat_rows(conn, [cid]))
                run(item.engine)
                runtime._store(conn, [item], clock.now)

    def process(engine):
        for e in (pending_msg, pending_left):
            ev = event_from_dict(e["payload"])
            engine.process([ev], ev.at)

    evaluate_and_commit_twice(process)
    notes, emails = effects(runtime)
    assert len(notes) == len(notes_before) + 1
    assert rows(runtime, S.notifications)[-1]["template"] == "new_message"
    assert emails == []

    # the customer message read the reply (no email deadline); alice has not read it yet
    assert runtime.next_due() == pending_msg["at"] + 10 * 60
    # the events themselves are then processed once: nothing new
    assert runtime.process_pending(cid) == 2
    assert effects(runtime) == (notes, emails)

    # a deadline's evaluation committed twice: one email
    clock.advance(60)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "One more thing"}, status=201)
    due = runtime.next_due()
    assert due == clock.now + 10 * 60
    evaluate_and_commit_twice(lambda engine: engine.run_due(due))
    assert len(effects(runtime)[1]) == 1
    assert runtime.run_due(due + 3600) == 0
    runtime.after_change()
    runtime.after_change()
    assert len(api.maildir()) == 1


def test_the_database_refuses_a_duplicate_effect_key(api, runtime, team):
    cid, _ = api.start_chat("Hi")
    [first, *_] = rows(runtime, S.notifications)
    assert first["key"] == f"{cid}:1/default.subscribe_operators/1:alice"
    dup = {k: v for k, v in first.items() if k != "id"}
    with pytest.raises(IntegrityError):
        with runtime.db.begin() as conn:
            conn.execute(insert(S.notifications).values(**dup))
    email = {"key": "k1", "chat_id": cid, "to_addr": "a@example.com", "template": "unread_replies", "data": {}, "at": 0.0}
    with runtime.db.begin() as conn:
        conn.execute(insert(S.emails).values(**email))
    with pytest.raises(IntegrityError):
        with runtime.db.begin() as conn:
            conn.execute(insert(S.emails).values(**email))
    with runtime.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(S.notifications)).scalar() == 2
        assert conn.execute(select(func.count()).select_from(S.emails)).scalar() == 1
