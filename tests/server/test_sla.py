"""Issue 8.4: SLA policies and business time through the HTTP service, on SQLite and on
PostgreSQL: the SLA states' due times are stored deadlines the runtime fires at their
exact instant, a policy follows the chat's facts, and the admin API locates SLA errors."""
from __future__ import annotations

import pytest

MIN = 60.0

RULES = '''
schedule support_hours { timezone "Europe/Berlin"  mon-fri 09:00-18:00 }

sla vip { when chat.priority >= 3  first_response 5m  due_soon 2m }
sla standard { within "support_hours"  first_response 2h  due_soon 30m }

rule urgent { on message.created when message.text contains "urgent" then set priority 3 }

rule due_soon {
  when chat.sla_due_soon("first_response")
  then notify agent "alice" template "sla_due_soon"
}

rule breached {
  when chat.sla_breached("first_response")
  then {
    notify agent "alice" template "sla_breached"
    tag "sla_breached"
  }
}

rule business_wait {
  when chat.awaiting_agent for 3h within "support_hours"
  then tag "waited_3_business_hours"
}
'''


@pytest.fixture
def team(api):
    agents = api.agents("alice", "bob")
    api.upload_rules({"sla.rules": RULES})
    return agents


def sla_templates(api, team, cid):
    return [t for t in api.templates(team["alice"], cid) if t.startswith("sla_")]


def test_business_time_due_times_fire_exactly(api, runtime, clock, team):
    # the clock starts Monday 2026-01-05 09:00 UTC; the chat starts at 16:00 UTC, 17:00 in
    # Berlin, one business hour before closing: the standard policy's 2h end on Tuesday
    # 10:00 Berlin (09:00 UTC, 24h later), due soon from 09:30 Berlin
    clock.at(7 * 3600)
    cid, _ = api.start_chat("Hi")
    assert runtime.next_due() == clock.start + 23.5 * 3600  # Tuesday 09:30 Berlin, 08:30 UTC
    clock.at(23.5 * 3600 - 1)
    assert runtime.run_due() == 0
    clock.at(23.5 * 3600)
    assert runtime.run_due() == 1
    runtime.after_change()
    assert sla_templates(api, team, cid) == ["sla_due_soon"]
    assert runtime.next_due() == clock.start + 24 * 3600  # Tuesday 10:00 Berlin
    clock.at(24 * 3600)
    assert runtime.run_due() >= 1
    runtime.after_change()
    assert sla_templates(api, team, cid) == ["sla_due_soon", "sla_breached"]
    assert "sla_breached" in api.agent_chat(cid, team["alice"])["tags"]
    # 3 business hours: 1 on Monday, 2 on Tuesday: 11:00 Berlin, 10:00 UTC
    assert runtime.next_due() == clock.start + 25 * 3600
    clock.at(25 * 3600)
    assert runtime.run_due() == 1
    runtime.after_change()
    assert "waited_3_business_hours" in api.agent_chat(cid, team["alice"])["tags"]
    clock.at(30 * 86400)
    assert runtime.run_due() == 0
    assert sla_templates(api, team, cid) == ["sla_due_soon", "sla_breached"]  # once per episode


def test_a_reply_in_time_and_a_policy_that_follows_the_priority(api, runtime, clock, team):
    cid, cust = api.start_chat("Hi")
    clock.at(1 * MIN)
    r = api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "this is urgent"})
    assert r.status_code in (200, 201), r.get_json()
    runtime.after_change()
    # now vip: due 5m after the first message, due soon from 3m
    assert runtime.next_due() == clock.start + 3 * MIN
    clock.at(3 * MIN)
    runtime.run_due()
    runtime.after_change()
    assert sla_templates(api, team, cid) == ["sla_due_soon"]
    clock.at(4 * MIN)
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Hello"}, status=201)
    runtime.after_change()
    clock.at(86400)
    runtime.run_due()
    runtime.after_change()
    assert sla_templates(api, team, cid) == ["sla_due_soon"]
    assert "sla_breached" not in api.agent_chat(cid, team["alice"])["tags"]


def test_validate_locates_sla_errors(api, client):
    src = 'sla p { within "hours" first_response 1h }\nrule r { when chat.sla_breached("first_reply") then stop }\n'
    r = client.post("/api/admin/rulesets/validate", json={"files": {"r.rules": src}}, headers=api.admin)
    assert r.status_code == 200 and r.get_json()["ok"] is False
    got = [(d["code"], d["line"], d["column"]) for d in r.get_json()["diagnostics"]]
    assert got == [("unknown_schedule", 1, 16), ("unknown_sla_target", 2, 33)]
    r = client.post("/api/admin/rulesets", json={"files": {"r.rules": src}}, headers=api.admin)
    assert r.status_code == 422 and r.get_json()["error"] == "rules_invalid", r.get_json()
