"""SPEC §5: every bad input is a 4xx JSON ``{error, message, details}`` — never a 500 —
and nothing is half-written. Rule set uploads are validated, versioned and can be rolled
back."""
from __future__ import annotations

import os

import pytest
from sqlalchemy import func, select

from server import store as S
from server.app import create_app


def assert_error(r, status: int, code: str) -> dict:
    """The response is the JSON error shape with this status and code; returns its body."""
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True)[:500])
    assert r.is_json, r.get_data(as_text=True)[:500]
    data = r.get_json()
    assert set(data) == {"error", "message", "details"}
    assert data["error"] == code, data
    assert isinstance(data["message"], str) and data["message"]
    assert isinstance(data["details"], dict)
    return data


def counts(runtime) -> dict:
    """Rows per table: what a refused request must leave as it was."""
    with runtime.db.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar() for t in S.metadata.sorted_tables}


@pytest.fixture
def team(api):
    return api.agents("alice", "bob")


@pytest.fixture
def chat(api, team):
    cid, cust = api.start_chat("Hi")
    return cid, cust


# ------------------------------------------------------------------ bodies

def test_malformed_json_is_400_and_stores_nothing(client, runtime, team):
    before = counts(runtime)
    for raw in (b"{", b'{"text": "hi",}', b"\xff\xfe", b"null"):
        r = client.post("/api/widget/chats", data=raw, content_type="application/json")
        assert_error(r, 400, "invalid_json")
    assert counts(runtime) == before


def test_wrong_content_type_is_415(client, runtime, chat, team):
    cid, cust = chat
    before = counts(runtime)
    r = client.post("/api/widget/chats", data='{"text": "hi"}', content_type="text/plain")
    assert_error(r, 415, "unsupported_media_type")
    r = client.post(f"/api/chats/{cid}/note", data={"text": "a form"}, headers=team["alice"])
    assert_error(r, 415, "unsupported_media_type")
    r = client.post(f"/api/widget/chats/{cid}/messages", data="text=hi",
                    content_type="application/x-www-form-urlencoded", headers=cust)
    assert_error(r, 415, "unsupported_media_type")
    assert counts(runtime) == before


@pytest.mark.parametrize("payload, path, fragment", [
    ({"text": "hi", "admin": True}, "", "'admin' was unexpected"),
    ({}, "", "'text' is a required property"),
    ({"text": 5}, "text", "5 is not of type 'string'"),
    ({"text": ""}, "text", "should be non-empty"),
    ({"text": "x" * 20001}, "text", "is too long"),
    ({"text": "hi", "channel": "pigeon"}, "channel", "'pigeon' is not one of"),
    ({"text": "hi", "customer": {"email": "not-an-email"}}, "customer/email", "does not match"),
    ({"text": "hi", "customer": {"id": "u1", "role": "admin"}}, "customer", "'role' was unexpected"),
    (["text"], "", "is not of type 'object'"),
])
def test_start_chat_schema_violations_are_400(client, runtime, payload, path, fragment):
    before = counts(runtime)
    data = assert_error(client.post("/api/widget/chats", json=payload), 400, "invalid_request")
    assert data["details"]["errors"][0]["path"] == path
    assert fragment in data["details"]["errors"][0]["message"]
    assert counts(runtime) == before


def test_agent_and_admin_bodies_are_validated(api, client, runtime, chat, team):
    cid, _ = chat
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    before = counts(runtime)
    cases = [
        (f"/api/chats/{cid}/reply", {}, team["alice"], ""),
        (f"/api/chats/{cid}/reply", {"text": "hi", "bcc": "x"}, team["alice"], ""),
        (f"/api/chats/{cid}/note", {"text": ["a"]}, team["alice"], "text"),
        (f"/api/chats/{cid}/note", {"text": "n" * 20001}, team["alice"], "text"),
        (f"/api/chats/{cid}/assign", {"agent": "bob", "department": "x"}, team["alice"], ""),
        (f"/api/chats/{cid}/assign", {"by": "round_robin"}, team["alice"], ""),
        ("/api/admin/agents", {"id": "has space"}, api.admin, "id"),
        ("/api/admin/agents", {"id": "dave", "max_chats": -1}, api.admin, "max_chats"),
        # found by the API fuzzing: a number past SQLite's 64 bits was a 500
        ("/api/admin/agents", {"id": "dave", "max_chats": 2**70}, api.admin, "max_chats"),
        ("/api/admin/agents", {"id": "dave", "capacity": {"email": 2**70}}, api.admin, "capacity/email"),
        ("/api/admin/agents", {"id": "dave", "email": "Dave <dave@example.com>"}, api.admin, "email"),
        ("/api/admin/agents", {"id": "dave", "channels": ["fax"]}, api.admin, "channels/0"),
        ("/api/admin/rulesets", {"files": {"x.txt": "rule"}}, api.admin, "files"),
        ("/api/admin/rulesets", {"files": {"x.rules": 3}}, api.admin, "files/x.rules"),
    ]
    for path, payload, headers, where in cases:
        data = assert_error(client.post(path, json=payload, headers=headers), 400, "invalid_request")
        assert data["details"]["errors"][0]["path"] == where, (path, payload, data)
    r = client.patch(f"/api/chats/{cid}/messages/1", json={"text": 1}, headers=team["alice"])
    assert_error(r, 400, "invalid_request")
    r = client.patch("/api/me", json={"status": "asleep"}, headers=team["alice"])
    assert_error(r, 400, "invalid_request")
    r = client.patch("/api/me", json={}, headers=team["alice"])
    assert_error(r, 400, "invalid_request")
    assert counts(runtime) == before


def test_a_body_above_the_size_limit_is_413(client, runtime):
    before = counts(runtime)
    r = client.post("/api/widget/chats", data=b'{"text": "' + b"x" * (5 * 1024 * 1024) + b'"}',
                    content_type="application/json")
    assert_error(r, 413, "request_entity_too_large")
    assert counts(runtime) == before


def test_blank_text_refused_by_the_domain_is_400(api, client, runtime, chat, team):
    cid, cust = chat
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    before = counts(runtime)
    assert_error(client.post(f"/api/chats/{cid}/reply", json={"text": "   "}, headers=team["alice"]), 400, "bad_request")
    assert_error(client.post(f"/api/chats/{cid}/reply", json={"canned": "nope"}, headers=team["alice"]),
                 400, "bad_request")
    assert_error(client.post(f"/api/widget/chats/{cid}/messages", json={"text": "\n"}, headers=cust), 400, "bad_request")
    assert counts(runtime) == before


# ------------------------------------------------------------------ who is asking

def test_tokens(api, client, chat, team):
    cid, cust = chat
    other, other_cust = api.start_chat("another customer")
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer nope"},
                    {"Authorization": "Basic YWxpY2U6eA=="}, cust):
        assert_error(client.get("/api/chats", headers=headers), 401, "unauthorized")
        assert_error(client.get("/api/notifications", headers=headers), 401, "unauthorized")
        assert_error(client.post(f"/api/chats/{cid}/join", headers=headers), 401, "unauthorized")
    assert_error(client.get(f"/api/widget/chats/{cid}"), 401, "unauthorized")
    # a customer token opens its own chat only; a wrong token answers like another chat's
    for headers in (other_cust, team["alice"], {"Authorization": "Bearer nope"}, {"X-Chat-Token": "nope"}):
        assert_error(client.get(f"/api/widget/chats/{cid}", headers=headers), 404, "unknown_chat")
        assert_error(client.post(f"/api/widget/chats/{cid}/messages", json={"text": "hi"}, headers=headers),
                     404, "unknown_chat")
        assert_error(client.post(f"/api/widget/chats/{cid}/read", headers=headers), 404, "unknown_chat")
    assert client.get(f"/api/widget/chats/{cid}", headers={"X-Chat-Token": cust["Authorization"][7:]}).status_code == 200
    assert api.customer_texts(cid, cust) == ["Hi"]
    assert api.customer_texts(other, other_cust) == ["another customer"]


def test_admin_endpoints_need_an_admin(api, client, chat, team):
    cid, _ = chat
    calls = [("get", "/api/admin/agents", None), ("post", "/api/admin/agents", {"id": "eve", "is_admin": True}),
             ("get", "/api/admin/rulesets", None), ("post", "/api/admin/rulesets", {"files": {}}),
             ("post", "/api/admin/rulesets/validate", {"files": {}}), ("post", "/api/admin/rulesets/1/activate", None),
             ("get", "/api/admin/rulesets/1", None), ("get", f"/api/admin/chats/{cid}/trace", None),
             ("put", "/api/admin/canned/hi", {"shortcut": "hi", "text": "Hello!"}),
             ("put", "/api/admin/articles/faq", {"slug": "faq", "title": "FAQ", "body": "..."})]
    for method, path, payload in calls:
        r = getattr(client, method)(path, json=payload, headers=team["alice"])
        assert_error(r, 403, "forbidden")
        r = getattr(client, method)(path, json=payload)
        assert_error(r, 401, "unauthorized")
    ids = [a["id"] for a in client.get("/api/admin/agents", headers=api.admin).get_json()["agents"]]
    assert ids == ["admin", "alice", "bob"]
    assert len(client.get("/api/admin/rulesets", headers=api.admin).get_json()["rulesets"]) == 1


def test_unknown_routes_and_wrong_methods_answer_json(api, client, chat, team):
    cid, cust = chat
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get(f"/api/chats/{cid}/messages/x", headers=team["alice"]), 404, "not_found")
    data = assert_error(client.post(f"/api/chats/{cid}/dance", headers=team["alice"]), 404, "not_found")
    assert "join" in data["details"]["commands"]
    assert_error(client.get("/api/chats/c_missing", headers=team["alice"]), 404, "unknown_chat")
    assert_error(client.post("/api/chats/c_missing/join", headers=team["alice"]), 404, "unknown_chat")
    assert_error(client.get("/api/admin/chats/c_missing/trace", headers=api.admin), 404, "unknown_chat")
    assert_error(client.get("/api/admin/rulesets/999", headers=api.admin), 404, "not_found")
    assert_error(client.post("/api/admin/rulesets/999/activate", headers=api.admin), 404, "not_found")
    assert_error(client.patch(f"/api/chats/{cid}/messages/9", json={"text": "x"}, headers=team["alice"]),
                 404, "unknown_message")

    assert_error(client.delete("/api/widget/chats"), 405, "method_not_allowed")
    assert_error(client.get("/api/widget/chats"), 405, "method_not_allowed")
    assert_error(client.put(f"/api/widget/chats/{cid}/messages", json={"text": "x"}, headers=cust),
                 405, "method_not_allowed")
    assert_error(client.delete("/api/notifications", headers=team["alice"]), 405, "method_not_allowed")
    assert_error(client.get(f"/api/chats/{cid}/join", headers=team["alice"]), 405, "method_not_allowed")


def test_bad_query_parameters_are_400(client, team):
    assert_error(client.get("/api/chats?status=archived", headers=team["alice"]), 400, "invalid_request")
    assert_error(client.get("/api/notifications?after=-1", headers=team["alice"]), 400, "invalid_request")
    assert_error(client.get("/api/notifications?after=abc", headers=team["alice"]), 400, "invalid_request")


def test_notifications_after_a_non_ascii_digit_is_400(client, team):
    assert_error(client.get("/api/notifications?after=²", headers=team["alice"]), 400, "invalid_request")


def test_huge_integers_in_urls_are_4xx(api, client, team):
    huge = "9" * 25
    assert_error(client.get(f"/api/notifications?after={huge}", headers=team["alice"]), 400, "invalid_request")
    assert_error(client.get(f"/api/admin/rulesets/{huge}", headers=api.admin), 404, "not_found")
    assert_error(client.post(f"/api/admin/rulesets/{huge}/activate", headers=api.admin), 404, "not_found")


def test_huge_last_event_id_is_400(app, client, team):
    app.config["STREAM_SECONDS"] = 0
    r = client.get("/api/stream", headers={**team["alice"], "Last-Event-ID": "9" * 25}, buffered=True)
    assert_error(r, 400, "invalid_request")


def test_nul_in_a_url_chat_id_is_404(api, client, team):
    assert_error(client.get("/api/chats/c%00x", headers=team["alice"]), 404, "unknown_chat")
    assert_error(client.post("/api/chats/c%00x/join", headers=team["alice"]), 404, "unknown_chat")
    assert_error(client.get("/api/admin/chats/c%00x/trace", headers=api.admin), 404, "unknown_chat")


def test_nul_in_the_customer_id_is_refused_or_stored(client, runtime):
    r = client.post("/api/widget/chats", json={"text": "hi", "customer": {"id": "a\u0000b"}})
    assert r.status_code in (201, 400), r.get_data(as_text=True)


def test_nul_in_the_customer_email_does_not_stop_other_chats_deadlines(api, runtime, clock, team):
    r = api.client.post("/api/widget/chats", json={"text": "hi", "customer": {"email": "ann\u0000@example.com"}})
    assert r.status_code in (201, 400), r.get_data(as_text=True)
    chats = [(r.get_json()["chat"]["id"], {"Authorization": "Bearer " + r.get_json()["token"]})] if r.status_code == 201 else []
    chats.append(api.start_chat("Hi", customer={"email": "bob@example.com"}))
    for cid, cust in chats:
        api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
        api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Hello"}, status=201)
        api.post(f"/api/widget/chats/{cid}/presence", cust, {"online": False}, status=200)
        clock.advance(1)
    clock.advance(3600)
    runtime.run_due()
    runtime.after_change()
    assert "bob@example.com" in [m["To"] for m in api.maildir()]


def test_changing_status_repeatedly(client, team):
    for status in ("away", "online", "away", "away", "offline"):
        r = client.patch("/api/me", json={"status": status}, headers=team["alice"])
        assert r.status_code == 200 and r.get_json()["status"] == status
    assert client.get("/api/me", headers=team["alice"]).get_json()["status"] == "offline"


def test_reply_shortcut_preference(client, team):
    r = client.patch("/api/me", json={"reply_shortcut": "ctrl_enter"}, headers=team["alice"])
    assert r.status_code == 200 and r.get_json()["reply_shortcut"] == "ctrl_enter"
    assert client.get("/api/me", headers=team["alice"]).get_json()["reply_shortcut"] == "ctrl_enter"
    assert client.get("/api/me", headers=team["bob"]).get_json()["reply_shortcut"] == "enter"


# ------------------------------------------------------------------ refusals change nothing

def stored(api, runtime, cid, cust, headers) -> tuple:
    with runtime.db.connect() as conn:
        row = conn.execute(select(S.chats.c.state, S.chats.c.event_seq, S.chats.c.rule_state)
                           .where(S.chats.c.id == cid)).one()
    return (api.agent_chat(cid, headers), api.customer_chat(cid, cust), tuple(row), counts(runtime))


def test_refused_commands_leave_the_chat_unchanged(api, client, clock, runtime, chat, team):
    cid, cust = chat
    before = stored(api, runtime, cid, cust, team["bob"])
    clock.advance(30)
    assert_error(api.post(f"/api/chats/{cid}/reply", team["bob"], {"text": "hi"}), 403, "not_joined")
    assert_error(api.post(f"/api/chats/{cid}/lock", team["bob"]), 403, "not_joined")
    assert_error(api.post(f"/api/chats/{cid}/assign", team["bob"], {"agent": "zed"}), 404, "unknown_agent")
    assert_error(api.post(f"/api/chats/{cid}/reopen", team["bob"]), 409, "chat_open")
    assert_error(client.delete(f"/api/chats/{cid}/messages/1", headers=team["bob"]), 403, "not_author")
    assert stored(api, runtime, cid, cust, team["bob"]) == before

    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/lock", team["alice"], status=200)
    before = stored(api, runtime, cid, cust, team["bob"])
    clock.advance(30)
    assert_error(api.post(f"/api/chats/{cid}/join", team["bob"]), 409, "locked")
    assert_error(api.post(f"/api/chats/{cid}/reply", team["bob"], {"text": "let me"}), 409, "locked")
    assert_error(api.post(f"/api/chats/{cid}/assign", team["bob"], {"agent": "bob"}), 409, "locked")
    assert stored(api, runtime, cid, cust, team["bob"]) == before

    api.post(f"/api/chats/{cid}/close", team["alice"], status=200)
    before = stored(api, runtime, cid, cust, team["bob"])
    assert_error(api.post(f"/api/chats/{cid}/close", team["alice"]), 409, "chat_closed")
    assert_error(api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "late"}), 409, "chat_closed")
    assert stored(api, runtime, cid, cust, team["bob"]) == before


# ------------------------------------------------------------------ rule sets

FRESH = '''rule fresh "Tag every new chat" {
  on chat.created
  then tag "fresh"
}
'''

BROKEN = '''rule fresh "Tag every new chat" {
  on chat.created
  when chat.nope == 1
  then tag "fresh"
}
'''


def active_version(client, api) -> int:
    rows = client.get("/api/admin/rulesets", headers=api.admin).get_json()["rulesets"]
    active = [r["version"] for r in rows if r["active"]]
    assert len(active) == 1, rows
    return active[0]


def fired_rules(client, api, cid) -> list:
    runs = client.get(f"/api/admin/chats/{cid}/trace", headers=api.admin).get_json()["runs"]
    return [e["rule"] for run in runs for e in run["entries"] if e["kind"] == "fired"]


def test_broken_rule_set_is_refused_with_located_diagnostics(api, client, runtime):
    v1 = active_version(client, api)
    before = counts(runtime)
    r = client.post("/api/admin/rulesets", json={"files": {"team/fresh.rules": BROKEN}}, headers=api.admin)
    data = assert_error(r, 422, "rules_invalid")
    [d] = data["details"]["diagnostics"]
    assert (d["path"], d["line"], d["column"], d["code"], d["severity"]) == ("team/fresh.rules", 3, 8, "unknown_fact", "error")
    assert "chat.nope" in d["message"]

    r = client.post("/api/admin/rulesets", json={"files": {"r.yaml": "rules:\n  - id: x\n    on: chat.created\n"
                                                                    "    then: [{tag: 5}]\n"}}, headers=api.admin)
    [d] = assert_error(r, 422, "rules_invalid")["details"]["diagnostics"]
    assert (d["path"], d["line"], d["column"], d["code"]) == ("r.yaml", 4, 18, "schema_error")
    r = client.post("/api/admin/rulesets", json={"files": {"r.yaml": "rules: [\n"}}, headers=api.admin)
    [d] = assert_error(r, 422, "rules_invalid")["details"]["diagnostics"]
    assert (d["path"], d["line"], d["code"]) == ("r.yaml", 2, "yaml_error")

    assert active_version(client, api) == v1
    assert counts(runtime) == before

    r = client.post("/api/admin/rulesets/validate", json={"files": {"team/fresh.rules": BROKEN}}, headers=api.admin)
    assert r.status_code == 200
    assert r.get_json()["ok"] is False and r.get_json()["diagnostics"][0]["line"] == 3
    r = client.post("/api/admin/rulesets/validate", json={"files": {"fresh.rules": FRESH}}, headers=api.admin)
    assert r.get_json() == {"ok": True, "rules": 8, "diagnostics": []}
    assert active_version(client, api) == v1


def test_misspelled_action_is_located_at_the_word(api, client):
    src = FRESH.replace('tag "fresh"', 'tagg "fresh"')
    r = client.post("/api/admin/rulesets", json={"files": {"fresh.rules": src}}, headers=api.admin)
    [d] = assert_error(r, 422, "rules_invalid")["details"]["diagnostics"]
    assert (d["line"], d["column"]) == (3, 8) and "tagg" in d["message"]


def test_upload_activates_a_new_version_and_rollback_restores_the_old(api, client, team):
    v1 = active_version(client, api)
    assert v1 == 1  # every test starts from an empty database
    before, _ = api.start_chat("before the upload")
    assert api.agent_chat(before, team["alice"])["tags"] == []

    r = client.post("/api/admin/rulesets", json={"files": {"fresh.rules": FRESH}}, headers=api.admin)
    assert r.status_code == 201
    v2 = r.get_json()["version"]
    assert r.get_json() == {"version": v2, "active": True, "rules": 8, "diagnostics": []}
    assert v2 > v1 and active_version(client, api) == v2
    assert client.get(f"/api/admin/rulesets/{v2}", headers=api.admin).get_json()["files"] == {"fresh.rules": FRESH}

    during, _ = api.start_chat("with the new rules")
    assert api.agent_chat(during, team["alice"])["tags"] == ["fresh"]
    assert "fresh" in fired_rules(client, api, during)

    r = client.post(f"/api/admin/rulesets/{v1}/activate", headers=api.admin)
    assert r.status_code == 200 and r.get_json() == {"version": v1, "active": True}
    assert active_version(client, api) == v1
    after, _ = api.start_chat("after the rollback")
    assert api.agent_chat(after, team["alice"])["tags"] == []
    assert fired_rules(client, api, after) == ["default.subscribe_operators"]

    # an upload that is not activated is stored but changes nothing
    r = client.post("/api/admin/rulesets", json={"files": {"fresh.rules": FRESH}, "activate": False}, headers=api.admin)
    assert r.status_code == 201 and r.get_json()["active"] is False
    assert active_version(client, api) == v1


def test_first_email_with_postgresql_and_no_data_dir(pg_url, pg_cleaner, tmp_path, clock):
    pg_cleaner()
    data_dir = tmp_path / "not-made-yet"
    app = create_app({"DATABASE_URL": pg_url, "DATA_DIR": str(data_dir), "SECRET_KEY": "k", "CLOCK": clock,
                      "TIMERS": False, "ADMIN_TOKEN": "admintok"})
    try:
        client = app.test_client()
        admin = {"Authorization": "Bearer admintok"}
        token = client.post("/api/admin/agents", json={"id": "alice"}, headers=admin).get_json()["token"]
        alice = {"Authorization": f"Bearer {token}"}
        r = client.post("/api/widget/chats", json={"text": "Hi", "customer": {"email": "ann@example.com"}})
        cid, cust = r.get_json()["chat"]["id"], {"Authorization": "Bearer " + r.get_json()["token"]}
        assert client.post(f"/api/chats/{cid}/join", headers=alice).status_code == 200
        assert client.post(f"/api/chats/{cid}/reply", json={"text": "Hello"}, headers=alice).status_code == 201
        clock.advance(30 * 60)  # the reply is unread for 30 minutes: leaving sends the email at once
        r = client.post(f"/api/widget/chats/{cid}/presence", json={"online": False}, headers=cust)
        assert r.status_code == 200, r.get_json()
        assert len(os.listdir(data_dir / "maildir" / "new")) == 1
    finally:
        app.extensions["chatflow"].db.dispose()


def test_every_api_route_is_in_the_openapi_document(app):
    """The route table of server/openapi.py lists every operation the app serves (pages
    aside), so /api/openapi.json and the fuzzing built on it cannot drift from the app."""
    import re

    from server import openapi

    served = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if path not in openapi.PAGES:
                served.add((method.lower(), path))
    listed = {(method, path) for method, path, *_ in openapi.ROUTES}
    assert served - listed == set(), "served but not documented"
    assert listed - served == set(), "documented but not served"
