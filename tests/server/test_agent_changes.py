"""Issue 8.10: agents tag, untag, set the priority, snooze and set pending through the
agent API, on SQLite and on PostgreSQL: each body validated by its JSON Schema
(schemas/api.schema.json, in the OpenAPI document), each refusal a 4xx with the domain's
code, each change stored with its events, which rules see as caused by the agent."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from server import store as S

HOUR = 3600

RULES = '''
rule tagged_by_agent {
  on chat.tagged
  when event.actor == "agent" and agent.id == "bob"
  then note "bob tagged {{ chat.tags }}"
}

schedule mornings {
  timezone "UTC"
  mon-sun 08:00-10:00
}
'''


@pytest.fixture
def team(api):
    agents = api.agents("alice", "bob", ("tess", {"channels": ["telegram"]}))
    api.upload_rules({"agents.rules": RULES})
    return agents


def stored(runtime, chat_id) -> list[tuple]:
    with runtime.db.connect() as conn:
        q = select(S.events.c.type, S.events.c.payload).where(S.events.c.chat_id == chat_id).order_by(S.events.c.seq)
        return [(r.type, r.payload["actor"], r.payload["agent_id"], r.payload["data"]) for r in conn.execute(q)]


def test_tag_untag_and_priority(api, runtime, team):
    cid, _ = api.start_chat("Hi")
    chat = api.post(f"/api/chats/{cid}/tag", team["bob"], {"tag": "vip"}, status=200).get_json()
    assert chat["tags"] == ["vip"]
    assert stored(runtime, cid)[-2:] == [
        ("chat.tagged", "agent", "bob", {"tag": "vip"}),
        ("chat.updated", "agent", "bob", {"changes": {"tags": [[], ["vip"]]}, "events": ["chat.tagged"]})]
    notes = [m for m in api.agent_chat(cid, team["alice"])["messages"] if m["kind"] == "note"]
    assert [n["text"] for n in notes] == ["bob tagged vip"]  # the rule saw bob's event

    api.post(f"/api/chats/{cid}/tag", team["alice"], {"tag": "vip"}, status=200)  # has it: nothing
    chat = api.post(f"/api/chats/{cid}/priority", team["alice"], {"priority": 3}, status=200).get_json()
    assert chat["priority"] == 3
    assert stored(runtime, cid)[-1] == ("chat.updated", "agent", "alice", {"changes": {"priority": [0, 3]}, "events": []})
    count = len(stored(runtime, cid))
    api.post(f"/api/chats/{cid}/priority", team["alice"], {"priority": 3}, status=200)
    assert len(stored(runtime, cid)) == count  # the same priority changes nothing
    chat = api.post(f"/api/chats/{cid}/untag", team["alice"], {"tag": "vip"}, status=200).get_json()
    assert chat["tags"] == []
    assert stored(runtime, cid)[-2][0:3] == ("chat.untagged", "agent", "alice")


def test_snooze_and_pending(api, runtime, clock, team):
    cid, cust = api.start_chat("Hi")
    chat = api.post(f"/api/chats/{cid}/snooze", team["bob"], {"for": "2h"}, status=200).get_json()
    assert (chat["status"], chat["snoozed_until"]) == ("snoozed", clock.start + 2 * HOUR)
    # START is 09:00 UTC, inside the mornings: the next opening is tomorrow 08:00
    chat = api.post(f"/api/chats/{cid}/snooze", team["bob"], {"until_next": "mornings"}, status=200).get_json()
    assert chat["snoozed_until"] == clock.start + 23 * HOUR
    chat = api.post(f"/api/chats/{cid}/snooze", team["alice"], {"until": clock.start + 600}, status=200).get_json()
    assert chat["snoozed_until"] == clock.start + 600
    assert stored(runtime, cid)[-1][:3] == ("chat.snoozed", "agent", "alice")

    chat = api.post(f"/api/chats/{cid}/status", team["alice"], {"status": "pending"}, status=200).get_json()
    assert (chat["status"], chat["snoozed_until"]) == ("pending", None)
    listed = api.client.get("/api/chats?status=pending", headers=team["bob"]).get_json()["chats"]
    assert [c["id"] for c in listed] == [cid]
    clock.at(HOUR)
    assert runtime.run_due() == 0  # the snooze's end went with the snooze
    assert api.agent_chat(cid, team["bob"])["status"] == "pending"
    chat = api.post(f"/api/chats/{cid}/reopen", team["bob"], status=200).get_json()
    assert chat["status"] == "open"
    assert stored(runtime, cid)[-2][3] == {"reason": "agent", "previous_status": "pending"}


@pytest.mark.parametrize("path, payload, status, code", [
    ("tag", {}, 400, "invalid_request"),
    ("tag", {"tag": " vip"}, 400, "invalid_request"),
    ("tag", {"tag": "x" * 101}, 400, "invalid_request"),
    ("tag", {"tag": "vip", "color": "red"}, 400, "invalid_request"),
    ("untag", {"tag": 3}, 400, "invalid_request"),
    ("priority", {"priority": 7}, 400, "invalid_request"),
    ("priority", {"priority": "3"}, 400, "invalid_request"),
    ("priority", {"priority": True}, 400, "invalid_request"),
    ("snooze", {}, 400, "invalid_request"),
    ("snooze", {"for": "2h", "until": 1}, 400, "invalid_request"),
    ("snooze", {"for": "2 hours"}, 400, "invalid_request"),
    ("snooze", {"for": "0s"}, 400, "bad_request"),
    ("snooze", {"for": "400d"}, 400, "bad_request"),
    ("snooze", {"until": 1}, 400, "bad_request"),
    ("snooze", {"until_next": "evenings"}, 400, "unknown_schedule"),
    ("status", {"status": "closed"}, 400, "invalid_request"),
    ("status", {}, 400, "invalid_request"),
])
def test_bad_bodies_are_4xx_and_change_nothing(api, runtime, team, path, payload, status, code):
    cid, _ = api.start_chat("Hi")
    before = stored(runtime, cid)
    r = api.post(f"/api/chats/{cid}/{path}", team["alice"], payload)
    assert (r.status_code, r.get_json()["error"]) == (status, code), r.get_json()
    assert stored(runtime, cid) == before
    assert api.agent_chat(cid, team["alice"])["status"] == "open"


def test_refusals_like_the_other_agent_commands(api, team):
    cid, _ = api.start_chat("Hi")
    for path, payload in (("tag", {"tag": "x"}), ("priority", {"priority": 1}), ("snooze", {"for": "1h"}),
                          ("status", {"status": "pending"})):
        r = api.post(f"/api/chats/{cid}/{path}", team["tess"], payload)  # not her channel
        assert (r.status_code, r.get_json()["error"]) == (404, "unknown_chat")
        r = api.post(f"/api/chats/{cid}/{path}", {}, payload)
        assert r.status_code == 401
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/lock", team["alice"], status=200)
    for path, payload in (("snooze", {"for": "1h"}), ("status", {"status": "pending"})):
        r = api.post(f"/api/chats/{cid}/{path}", team["bob"], payload)
        assert (r.status_code, r.get_json()["error"]) == (409, "locked")
    api.post(f"/api/chats/{cid}/tag", team["bob"], {"tag": "billing"}, status=200)  # a lock is about replies
    api.post(f"/api/chats/{cid}/close", team["alice"], status=200)
    r = api.post(f"/api/chats/{cid}/snooze", team["alice"], {"for": "1h"})
    assert (r.status_code, r.get_json()["error"]) == (409, "chat_closed")
    api.post(f"/api/chats/{cid}/priority", team["bob"], {"priority": 2}, status=200)  # closed: still allowed


def test_the_openapi_document_has_the_new_bodies(client):
    doc = client.get("/api/openapi.json").get_json()
    assert {"Tag", "SetPriority", "Snooze", "SetStatus"} <= set(doc["components"]["schemas"])
    for path, schema in (("tag", "Tag"), ("untag", "Tag"), ("priority", "SetPriority"), ("snooze", "Snooze"),
                         ("status", "SetStatus")):
        op = doc["paths"][f"/api/chats/{{chat_id}}/{path}"]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"] == f"#/components/schemas/{schema}"
        assert op["security"] == [{"agentToken": []}]
