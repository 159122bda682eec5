"""Issue 8.4: SLA figures in analytics, on SQLite and on PostgreSQL: per policy and
target, the cycles achieved and breached in a period, from chats played through HTTP on
a virtual clock. The expected figures are written out by hand from the story below."""
from __future__ import annotations

import pytest

from server import analytics as A
from server import analytics_sla

MIN = 60.0

RULES = '''
sla vip { when chat.priority >= 3  first_response 5m  next_response 10m }
sla standard { first_response 15m }
rule urgent { on chat.created when message.text contains "urgent" then set priority 3 }
'''


@pytest.fixture
def story(api, client, runtime, clock):
    """c1 answered in time, c2 never, c3 late (standard); c4 (vip) answered in time, then
    one next response late (due at 20m) and one in time."""
    team = api.agents("alice")
    r = client.post("/api/admin/rulesets", json={"files": {"sla.rules": RULES}}, headers=api.admin)
    assert r.status_code == 201, r.get_json()
    chats = {}
    for name in ("c1", "c2", "c3"):
        chats[name] = api.start_chat("Hi")
    chats["c4"] = api.start_chat("urgent: the site is down")
    runtime.after_change()

    def at(minutes):
        clock.at(minutes * MIN)
        runtime.run_due()
        runtime.after_change()

    def reply(name, text="Hello"):
        cid = chats[name][0]
        api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
        api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": text}, status=201)
        runtime.after_change()

    def customer(name, text):
        cid, headers = chats[name]
        assert api.post(f"/api/widget/chats/{cid}/messages", headers, {"text": text}).status_code in (200, 201)
        runtime.after_change()

    at(3)
    reply("c4")
    at(10)
    reply("c1")
    customer("c4", "and another thing")
    at(20)
    reply("c3")
    at(30)
    reply("c4", "sorry")
    at(40)
    customer("c4", "one more")
    at(45)
    reply("c4", "done")
    at(120)
    return chats


def figures(data) -> dict:
    return {(p["policy"], t): (v["achieved"], v["breached"]) for p in data for t, v in p["targets"].items()}


def test_sla_figures_count_each_cycle_where_it_was_decided(runtime, clock, story):
    start = clock.start
    q = A.Query(start, start + 86400, now=clock.now)
    got = analytics_sla.sla_figures(runtime.db, q, runtime.ruleset())
    assert figures(got) == {("vip", "first_response"): (1, 0), ("vip", "next_response"): (1, 1),
                            ("standard", "first_response"): (1, 2)}
    rates = {(p["policy"], t): v["achieved_rate"] for p in got for t, v in p["targets"].items()}
    assert rates[("standard", "first_response")] == pytest.approx(1 / 3)
    # breaches count at their due time: from 16m on, the standard breaches (due 15m) and
    # c1's answer (10m) are before the period; vip's next response breached at 20m
    q = A.Query(start + 16 * MIN, start + 86400, now=clock.now)
    assert figures(analytics_sla.sla_figures(runtime.db, q, runtime.ruleset())) == {
        ("vip", "first_response"): (0, 0), ("vip", "next_response"): (1, 1), ("standard", "first_response"): (0, 0)}
    # a breach is counted once its due time has passed by now
    q = A.Query(start, start + 86400, now=start + 14 * MIN)
    assert figures(analytics_sla.sla_figures(runtime.db, q, runtime.ruleset()))[("standard", "first_response")] == (1, 0)


def test_filters_and_the_http_api(api, client, story):
    r = client.get("/api/analytics/sla?from=2026-01-05&to=2026-01-05&channel=widget", headers=api.admin)
    assert r.status_code == 200, r.get_json()
    assert figures(r.get_json()["sla"])[("standard", "first_response")] == (1, 2)
    r = client.get("/api/analytics/sla?from=2026-01-05&to=2026-01-05&channel=email", headers=api.admin)
    assert figures(r.get_json()["sla"]) == {("vip", "first_response"): (0, 0), ("vip", "next_response"): (0, 0),
                                            ("standard", "first_response"): (0, 0)}
    r = client.get("/api/analytics/report?from=2026-01-05&to=2026-01-05", headers=api.admin)
    assert r.status_code == 200 and [p["policy"] for p in r.get_json()["sla"]] == ["vip", "standard"]
    assert client.get("/api/analytics/sla", headers=api.agents("bob")["bob"]).status_code == 403
