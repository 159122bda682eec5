"""POST /api/admin/dry-run: a scenario run on a virtual clock against the active rule set
(or a draft sent with it), answering the timeline `chatflow dry-run --format json` prints."""
from __future__ import annotations

SCENARIO = """\
start: 2026-01-05T09:00:00Z
agents:
  - {id: alice}
tests:
  - name: nobody reads
    steps:
      - {at: 0s, start_chat: {chat: c1, customer: {id: u1}, page_url: "https://shop.example/pricing", text: Hi}}
      - {at: 1m, join: {chat: c1, agent: alice}}
      - {at: 2m, customer_message: {chat: c1, text: "Still there?"}}
    expect:
      - {at: 10m, fired: [default.escalate_unread]}
  - name: second
    steps:
      - {at: 0s, start_chat: {chat: c2, customer: {id: u2}, text: Hi}}
"""

DRAFT = """\
rule pricing_tag "Tag pricing chats" {
  on chat.created
  when chat.page_url contains "/pricing"
  then tag "pricing"
}
"""


def test_the_active_rule_set_runs_and_the_timeline_says_why(api):
    r = api.post("/api/admin/dry-run", api.admin, {"scenario": SCENARIO}, status=200)
    out = r.get_json()
    assert out["test"] == "nobody reads" and out["tests"] == ["nobody reads", "second"]
    assert out["passed"] is True and out["failures"] == [] and out["start"] == "2026-01-05T09:00:00Z"
    fired = [(e["t"], e["rule"]) for e in out["timeline"] if e["kind"] == "rule" and e["fired"]]
    assert (600.0, "default.escalate_unread") in fired
    armed = [e for e in out["timeline"] if e["kind"] == "timer_armed" and e["rule"] == "default.escalate_unread"]
    assert armed and armed[0]["detail"]["due"] == 600.0
    rule_entries = [e for e in out["timeline"] if e["kind"] == "rule"]
    assert all("why" in e["detail"] for e in rule_entries)


def test_a_draft_rule_set_and_a_named_test(api):
    body = {"scenario": SCENARIO.replace("[default.escalate_unread]", "[pricing_tag]"), "files": {"draft.rules": DRAFT}}
    out = api.post("/api/admin/dry-run", api.admin, body, status=200).get_json()
    assert out["passed"] is False  # pricing_tag fired at 0s, not at 10m
    assert out["failures"][0]["where"].startswith("at 10m")
    assert any(e["kind"] == "rule" and e.get("rule") == "pricing_tag" and e["fired"] for e in out["timeline"])
    out = api.post("/api/admin/dry-run", api.admin, {**body, "test": "second"}, status=200).get_json()
    assert out["test"] == "second"


def test_refusals_are_located(api, client):
    typo = "tests:\n  - name: x\n    steps:\n      - {at: 0s, strat_chat: {chat: c1}}\n"
    r = api.post("/api/admin/dry-run", api.admin, {"scenario": typo}, status=422)
    err = r.get_json()
    assert err["error"] == "scenario_invalid"
    d = err["details"]["diagnostics"][0]
    assert d["path"] == "scenario.yaml" and d["line"] == 4 and d["hint"] == "did you mean `start_chat`?"
    assert "/tmp" not in r.get_data(as_text=True)  # the server's temporary path is not shown
    bad = {"bad.rules": "rule x {\n  thne stop\n}\n"}
    r = api.post("/api/admin/dry-run", api.admin, {"scenario": SCENARIO, "files": bad}, status=422)
    assert r.get_json()["error"] == "rules_invalid"
    assert r.get_json()["details"]["diagnostics"][0]["line"] == 2
    r = api.post("/api/admin/dry-run", api.admin, {"scenario": SCENARIO, "test": "nope"}, status=422)
    assert r.get_json()["error"] == "unknown_test" and r.get_json()["details"]["tests"] == ["nobody reads", "second"]
    api.post("/api/admin/dry-run", api.admin, {"scenario": SCENARIO, "extra": 1}, status=400)
    api.post("/api/admin/dry-run", api.admin, {"scenario": SCENARIO, "files": {"x.txt": ""}}, status=400)
    operator = api.agents("bob")["bob"]
    api.post("/api/admin/dry-run", operator, {"scenario": SCENARIO}, status=403)
    api.post("/api/admin/dry-run", {}, {"scenario": SCENARIO}, status=401)


def test_rule_paths_in_the_scenario_are_never_read(api, tmp_path):
    secret = tmp_path / "secret.rules"
    secret.write_text('rule leaked "x" {\n  on chat.created\n  then tag "leaked"\n}\n', encoding="utf-8")
    text = f"rules: [{secret}]\n" + SCENARIO
    out = api.post("/api/admin/dry-run", api.admin, {"scenario": text}, status=200).get_json()
    assert not any(e.get("rule") == "leaked" for e in out["timeline"])
    assert out["notes"] and "ignored" in out["notes"][0]


def test_the_agent_directory_lists_operators_only(api, client):
    agents = api.agents(("alice", {"name": "Alice", "departments": ["sales"]}), ("dave", {"access_chats": False}))
    r = client.get("/api/agents", headers=agents["dave"])
    assert r.status_code == 200
    assert r.get_json()["agents"] == [{"id": "alice", "name": "Alice", "departments": ["sales"], "status": "online"}]
    assert client.get("/api/agents").status_code == 401
    assert "token" not in r.get_data(as_text=True)
