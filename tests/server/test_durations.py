"""Issue 8.2: durations on any condition in the service, on SQLite and on PostgreSQL. The
anchor of `(CONDITION) for D` is stored with the chat's rule memory, and its deadline in
the deadlines table, so a worker or scheduler started later fires it at the exact
instant; the engine's own wake-up (`@durations`) is stored the same way."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from server import store as S
from server.scheduler import Scheduler

MIN = 60

RULES = '''
rule urgent_words {
  on message.created
  when message.author == "customer" and message.text contains "urgent"
  then set priority 3
}

rule urgent_unassigned_15m "An urgent chat nobody took for 15 minutes" {
  when (chat.priority >= 3 and chat.unassigned) for 15m
  then notify agent "alice" template "urgent_waiting"
}

rule left_after_long_wait {
  on customer.left
  when (chat.awaiting_agent for 5m) for 5m
  then tag "left_waiting"
}
'''


@pytest.fixture
def team(api):
    agents = api.agents("alice", "bob")
    api.upload_rules({"durations.rules": RULES})
    return agents


def memory(runtime, chat_id) -> tuple[dict, dict]:
    """(the chat's stored rule memory, its stored deadlines {timer: due})."""
    with runtime.db.connect() as conn:
        state = conn.execute(select(S.chats.c.rule_state).where(S.chats.c.id == chat_id)).scalar()
        timers = {r.rule_id: r.due for r in conn.execute(select(S.timers).where(S.timers.c.chat_id == chat_id))}
    return state, timers


class _Enqueued(list):
    """Collects what the scheduler hands to workers; the test runs it as a worker would."""

    def enqueue(self, fn, *args, **kwargs):
        self.append((fn, args))


def test_anchor_and_deadline_are_stored_and_fired_by_the_scheduler(api, runtime, clock, team):
    cid, cust = api.start_chat("Hi")
    clock.at(2 * MIN)
    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "this is urgent"}, status=201)
    state, timers = memory(runtime, cid)
    assert state["since"]["chat.priority >= 3 and chat.unassigned"] == clock.start + 2 * MIN
    assert timers["urgent_unassigned_15m"] == clock.start + 17 * MIN

    # every command loads the chat afresh: what was stored is all there is (the chat's
    # other wake-up, of left_after_long_wait's nested duration, is due at 5m)
    clock.at(17 * MIN - 1)
    runtime.run_due()
    assert api.templates(team["alice"], cid) == ["new_chat", "new_message"]

    clock.at(17 * MIN)
    queue = _Enqueued()
    scheduler = Scheduler(runtime, queue, clock=clock)
    assert scheduler.tick()[0] == 1
    [(fn, (chats, now))] = [q for q in queue if q[0] == "server.jobs.run_due_chats"]
    assert chats == [cid] and now == clock.start + 17 * MIN
    assert runtime.run_due(now, chat_ids=chats) == 1
    assert api.templates(team["alice"], cid)[-1] == "urgent_waiting"
    assert "urgent_unassigned_15m" not in memory(runtime, cid)[1]

    # once per episode; joining ends it and drops the anchor
    clock.at(20 * MIN)
    api.post(f"/api/chats/{cid}/join", team["bob"], status=200)
    state, timers = memory(runtime, cid)
    assert "chat.priority >= 3 and chat.unassigned" not in state["since"] and "urgent_unassigned_15m" not in timers


def test_a_nested_duration_wakes_the_chat_through_the_deadlines_table(api, runtime, clock, team):
    cid, cust = api.start_chat("Hi")
    assert memory(runtime, cid)[1] == {"@durations": clock.start + 5 * MIN}
    clock.at(5 * MIN)
    assert runtime.run_due() == 1
    assert memory(runtime, cid)[0]["since"] == {"chat.awaiting_agent for 5m": clock.start + 5 * MIN}

    clock.at(9 * MIN)
    api.post(f"/api/widget/chats/{cid}/presence", cust, {"online": False}, status=200)
    assert api.agent_chat(cid, team["alice"])["tags"] == []
    api.post(f"/api/widget/chats/{cid}/presence", cust, {"online": True}, status=200)
    clock.at(10 * MIN)
    api.post(f"/api/widget/chats/{cid}/presence", cust, {"online": False}, status=200)
    assert api.agent_chat(cid, team["alice"])["tags"] == ["left_waiting"]
