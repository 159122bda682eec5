"""Issue 8: change conditions through the HTTP service, on SQLite and on PostgreSQL: the
service stores each chat.updated in its outbox and runs the rules on it; the admin API
checks change conditions like any rule text."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from server import store as S

RULES = '''
rule urgent_words "A customer who writes urgent raises the priority" {
  on message.created
  when message.author == "customer" and message.text contains "urgent"
  then set priority 4
}

rule escalate "Priority raised to 4: alice hears of it" {
  on chat.updated
  when chat.priority changed to 4
  then notify agent "alice" template "priority_raised"
}

rule taken_over "Alice hears when bob takes her chat" {
  on chat.updated
  when chat.assignee changed from "alice" to "bob" and event.actor == "agent"
  then notify agent "alice" template "taken_over"
}
'''


@pytest.fixture
def team(api):
    return api.agents("alice", "bob")


def stored_events(runtime, chat_id) -> list[dict]:
    with runtime.db.connect() as conn:
        q = select(S.events.c.type, S.events.c.payload).where(S.events.c.chat_id == chat_id).order_by(S.events.c.seq)
        return [dict(r) for r in conn.execute(q).mappings()]


def test_change_conditions_run_in_the_service(api, runtime, team):
    api.upload_rules({"changes.rules": RULES})
    cid, cust = api.start_chat("Hi")
    for text in ("this is urgent", "still urgent"):
        r = api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": text})
        assert r.status_code in (200, 201), r.get_json()
    assert api.templates(team["alice"], cid).count("priority_raised") == 1  # the second changed nothing
    assert api.agent_chat(cid, team["alice"])["priority"] == 4

    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/join", team["bob"], status=200)
    assert api.templates(team["alice"], cid)[-1] == "taken_over"
    # a command's chat.updated is stored with its own event (a rule's are evaluated in the
    # worker, like every event a rule causes)
    events = stored_events(runtime, cid)
    assert [e["type"] for e in events][-4:] == ["chat.joined", "chat.updated", "chat.joined", "chat.updated"]
    assert [e["payload"]["data"] for e in events][-1] == {"changes": {"assignee": ["alice", "bob"]},
                                                          "events": ["chat.joined"]}


def test_validate_locates_a_change_condition_outside_chat_updated(api, client):
    src = 'rule r {\n  on chat.closed\n  when changed(chat.status)\n  then stop\n}\n'
    r = client.post("/api/admin/rulesets/validate", json={"files": {"r.rules": src}}, headers=api.admin)
    assert r.status_code == 200 and r.get_json()["ok"] is False
    [d] = r.get_json()["diagnostics"]
    assert (d["code"], d["line"], d["column"]) == ("change_unavailable", 3, 8)
