"""Processing in batches (SPEC §5, scaled mode): a worker runs the rules of many chats in
one transaction. The outcome must be what processing them one at a time gives: capacity
counts and the round robin shared across the batch, effects stored once, one broken chat
holding back no other."""
from __future__ import annotations

from sqlalchemy import select, update

from server import store as S

ROUTING = '''
rule route "New chats go to support" {
  on chat.created
  then assign department "support"
}
'''

BOT = '''
rule ack "The bot answers every customer message" {
  on message.created
  when message.author == "customer"
  then reply "Thanks, {{ customer.name }}: an operator will be with you shortly."
}
'''


def upload(api, text: str) -> None:
    api.upload_rules({"team/extra.rules": text})


def held(runtime):
    """Commands commit their events without running the rules (as a web process does in
    scaled mode); returns the list the held chat ids go to."""
    waiting = []
    runtime.dispatch = waiting.extend
    return waiting


def assignees(runtime, chat_ids) -> list:
    with runtime.db.connect() as conn:
        found = dict(conn.execute(select(S.chats.c.id, S.chats.c.assignee).where(S.chats.c.id.in_(chat_ids))).all())
    return [found[c] for c in chat_ids]


def unprocessed(runtime) -> int:
    with runtime.db.connect() as conn:
        return len(conn.execute(select(S.events.c.seq).where(S.events.c.processed_at.is_(None))).all())


def notification_keys(runtime) -> list:
    with runtime.db.connect() as conn:
        return [r[0] for r in conn.execute(select(S.notifications.c.key).order_by(S.notifications.c.id))]


def test_a_batch_shares_capacity_and_the_round_robin_across_its_chats(api, runtime):
    api.agents(("alice", {"departments": ["support"], "max_chats": 1}),
               ("bob", {"departments": ["support"], "max_chats": 1}))
    upload(api, ROUTING)
    waiting = held(runtime)
    chats = [api.start_chat(f"Hi {i}")[0] for i in range(3)]
    assert sorted(waiting) == sorted(chats) and unprocessed(runtime) == 3

    assert runtime.process_chats(waiting) == 3
    got = assignees(runtime, chats)
    # in the order they were started (a batch runs its events in commit order, as one
    # simulated World would): one chat each (capacity 1 counted across the batch, the
    # round robin going on from alice to bob), and the third waits for someone
    assert got == ["alice", "bob", None], got
    assert unprocessed(runtime) == 0
    # a redelivered job finds nothing new and stores nothing twice
    before = notification_keys(runtime)
    assert runtime.process_chats(waiting) == 0
    assert notification_keys(runtime) == before


def test_a_broken_chat_in_a_batch_holds_back_no_other(api, runtime, caplog):
    api.agents("alice")
    waiting = held(runtime)
    chats = [api.start_chat(f"Hi {i}")[0] for i in range(4)]
    broken = sorted(chats)[1]
    with runtime.db.begin() as conn:  # a row the engine cannot read
        conn.execute(update(S.chats).where(S.chats.c.id == broken).values(state={"id": broken}))

    assert runtime.process_chats(waiting) == 3
    with runtime.db.connect() as conn:
        left = conn.execute(select(S.events.c.chat_id).where(S.events.c.processed_at.is_(None))).scalars().all()
        notified = set(conn.execute(select(S.notifications.c.chat_id)).scalars())
    assert left == [broken]  # its event stays in the outbox, to be relayed again
    assert notified == set(chats) - {broken}
    assert f"processing chat {broken} failed" in caplog.text


def test_a_batch_of_deadlines_fires_each_chat_once(api, runtime, clock):
    team = api.agents("alice")
    waiting = held(runtime)
    chats = [api.start_chat(f"Hi {i}")[0] for i in range(5)]
    runtime.process_chats(waiting)
    for cid in chats:
        api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    runtime.process_chats(waiting)
    clock.advance(10 * 60 + 1)  # default.escalate_unread: 10 minutes unread by the responsible
    before = len(notification_keys(runtime))
    assert runtime.run_due(chat_ids=chats) == 5
    fired = notification_keys(runtime)[before:]
    assert len(fired) == 5 and len(set(fired)) == 5
    assert runtime.run_due(chat_ids=chats) == 5  # claimed again: nothing new fires
    assert len(notification_keys(runtime)) == before + 5


def test_an_embedded_answer_shows_what_the_rules_did(api, runtime):
    """Embedded mode runs the rules before answering, so the bot's reply is in the answer."""
    upload(api, BOT)
    cid, cust = api.start_chat("Hi", customer={"name": "Ann"})
    r = api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "hello?"}, status=201)
    texts = [m["text"] for m in r.get_json()["messages"]]
    assert texts[-2:] == ["hello?", "Thanks, Ann: an operator will be with you shortly."]


def test_values_orjson_refuses_are_stored_all_the_same(api, runtime):
    """JSON columns are written with orjson; an integer beyond 64 bits in a custom field
    (valid JSON a client may send) falls back to the json module instead of failing."""
    team = api.agents("alice")
    cid, _ = api.start_chat("Hi", fields={"order": 2**70, "note": "café ☕"})
    fields = api.agent_chat(cid, team["alice"])["fields"]
    assert fields == {"order": 2**70, "note": "café ☕"}
