"""Issue 8.3: statuses pending and snoozed in the service, on SQLite and on PostgreSQL. A
snooze's end is a deadline in the deadlines table (`@snooze`): the scheduler hands it to
a worker like a rule's deadline, and the chat reopens by itself (chat.reopened, reason
snooze_ended); a customer message reopens it earlier and the deadline goes."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from server import store as S
from server.scheduler import Scheduler

MIN, HOUR = 60, 3600

RULES = '''
rule snooze_later {
  on message.created
  when message.author == "customer" and message.text contains "later"
  then snooze for 2h
}

rule snooze_over {
  on chat.reopened
  when event.reason == "snooze_ended"
  then notify assignee template "snooze_over"
}

rule customer_back {
  on chat.reopened
  when event.reason == "customer_message"
  then notify assignee template "customer_back"
}
'''


@pytest.fixture
def team(api):
    agents = api.agents("alice", "bob")
    api.upload_rules({"statuses.rules": RULES})
    return agents


def deadlines(runtime, chat_id) -> dict:
    with runtime.db.connect() as conn:
        return {r.rule_id: r.due for r in conn.execute(select(S.timers).where(S.timers.c.chat_id == chat_id))}


class _Enqueued(list):
    """What the scheduler hands to workers; the test runs it as a worker would."""

    def enqueue(self, fn, *args, **kwargs):
        self.append((fn, args))


def test_a_snoozed_chat_reopens_by_itself_through_the_scheduler(api, runtime, clock, team):
    cid, cust = api.start_chat("Hi")
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/read", team["alice"], status=200)
    clock.at(1 * MIN)
    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "call me later"}, status=201)
    chat = api.agent_chat(cid, team["alice"])
    assert (chat["status"], chat["snoozed_until"]) == ("snoozed", clock.start + 1 * MIN + 2 * HOUR)
    # (beside default.escalate_unread: alice has not read the customer)
    assert deadlines(runtime, cid)["@snooze"] == clock.start + 1 * MIN + 2 * HOUR
    assert api.customer_chat(cid, cust)["status"] == "open"  # the team's workflow is its own
    r = api.client.get("/api/chats?status=snoozed", headers=team["bob"])
    assert [c["id"] for c in r.get_json()["chats"]] == [cid]

    clock.at(1 * MIN + 2 * HOUR - 1)
    runtime.run_due()  # the escalation of the unread message, at 11m
    assert api.agent_chat(cid, team["alice"])["status"] == "snoozed"
    clock.at(1 * MIN + 2 * HOUR)
    queue = _Enqueued()
    assert Scheduler(runtime, queue, clock=clock).tick()[0] == 1
    [(_, (chats, now))] = queue
    assert runtime.run_due(now, chat_ids=chats) == 1
    chat = api.agent_chat(cid, team["alice"])
    assert (chat["status"], chat["snoozed_until"]) == ("open", None)
    assert api.templates(team["alice"], cid)[-1] == "snooze_over"
    assert "@snooze" not in deadlines(runtime, cid)


def test_the_customer_ends_a_snooze_early(api, runtime, clock, team):
    cid, cust = api.start_chat("Hi")
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "later please"}, status=201)
    clock.at(30 * MIN)
    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "I am back"}, status=201)
    assert api.agent_chat(cid, team["alice"])["status"] == "open"
    assert api.templates(team["alice"], cid).count("customer_back") == 1
    assert "@snooze" not in deadlines(runtime, cid)
    clock.at(3 * HOUR)
    runtime.run_due()
    assert "snooze_over" not in api.templates(team["alice"], cid)


def test_the_status_filter_knows_every_status(api, team):
    r = api.client.get("/api/chats?status=resolved", headers=team["alice"])
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"
    assert "pending" in r.get_json()["message"]
