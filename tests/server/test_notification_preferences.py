"""Per-agent notification preferences through the service (issue 8.8): set with
``PATCH /api/me/preferences`` per template (in_app, email, off; ``*`` for the rest),
honoured by every ``notify``; notifications by email are batched: one email per agent and
chat per AGENT_EMAIL_WINDOW, listing what came in it. Emails go to the app's maildir."""
from __future__ import annotations

import pytest


@pytest.fixture
def app_config():
    return {"AGENT_EMAIL_WINDOW": 300.0}


def _prefs(api, headers, status=200, **notifications):
    r = api.client.patch("/api/me/preferences", json={"notifications": notifications}, headers=headers)
    assert r.status_code == status, r.get_json()
    return r.get_json()


def _agent_mails(api, to):
    return [m for m in api.maildir() if m["To"] == to]


def test_preferences_are_set_read_and_reset(api):
    team = api.agents("alice")
    r = api.client.get("/api/me/preferences", headers=team["alice"])
    assert r.status_code == 200
    data = r.get_json()
    assert data["notifications"] == {} and data["default"] == "in_app" and data["email"] is None
    assert set(data["effective"].values()) == {"in_app"} and "new_message" in data["effective"]
    data = _prefs(api, team["alice"], new_chat="off", **{"*": "in_app", "custom.tpl": "off"})
    assert data["notifications"] == {"new_chat": "off", "*": "in_app", "custom.tpl": "off"}
    assert data["effective"]["new_chat"] == "off" and data["effective"]["custom.tpl"] == "off"
    data = _prefs(api, team["alice"], new_chat=None)  # null removes one; the others stay
    assert data["notifications"] == {"*": "in_app", "custom.tpl": "off"}
    # email needs an address first
    err = _prefs(api, team["alice"], 409, mention="email")
    assert err["error"] == "no_email"
    r = api.client.patch("/api/me", json={"email": "alice@example.com"}, headers=team["alice"])
    assert r.status_code == 200 and r.get_json()["email"] == "alice@example.com"
    assert _prefs(api, team["alice"], mention="email")["effective"]["mention"] == "email"
    for bad in ({"new_chat": "sms"}, {"bad name": "off"}, {"new_chat": True}):
        r = api.client.patch("/api/me/preferences", json={"notifications": bad}, headers=team["alice"])
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"
    r = api.client.patch("/api/me/preferences", json={}, headers=team["alice"])
    assert r.status_code == 400


def test_every_notify_honours_off(api):
    team = api.agents("alice", "bob")
    _prefs(api, team["alice"], new_chat="off")
    _prefs(api, team["bob"], **{"*": "off", "mention": "in_app"})
    chat_id, customer = api.start_chat("Hi")
    assert api.templates(team["alice"]) == [] and api.templates(team["bob"]) == []
    # still subscribed: only the notice was off
    assert api.agent_chat(chat_id, team["alice"])["subscribers"] == ["alice", "bob"]
    api.post(f"/api/widget/chats/{chat_id}/messages", customer, json={"text": "anyone?"}, status=201)
    assert api.templates(team["alice"]) == ["new_message"] and api.templates(team["bob"]) == []
    api.post(f"/api/chats/{chat_id}/join", team["alice"], status=200)
    api.post(f"/api/chats/{chat_id}/note", team["alice"], json={"text": "@bob look"}, status=201)
    assert api.templates(team["bob"]) == ["mention"]
    # a rule's own notify too
    r = api.client.post("/api/admin/rulesets", json={"files": {"r.rules": 'rule ping { on chat.closed then notify '
                                                                          'agent "bob" template "closed" }'}},
                        headers=api.admin)
    assert r.status_code == 201
    api.post(f"/api/chats/{chat_id}/close", team["alice"], status=200)
    assert api.templates(team["bob"]) == ["mention"]


def test_a_busy_chat_sends_one_email_per_window(api, runtime, clock):
    team = api.agents(("alice", {"email": "alice@example.com"}), "bob")
    _prefs(api, team["alice"], new_message="email", new_chat="email")
    chat_id, customer = api.start_chat("Hi")
    # the first notification of a quiet chat goes out at once
    [first] = _agent_mails(api, "alice@example.com")
    assert first["Subject"] == f"[chatflow] new chat in chat {chat_id}"
    assert first["Reply-To"] is None and first["Auto-Submitted"] == "auto-generated"
    # twenty messages in the next minutes: in the app each, by email none yet
    for i in range(20):
        clock.advance(10)
        api.post(f"/api/widget/chats/{chat_id}/messages", customer, json={"text": f"hello {i}"}, status=201)
    assert api.templates(team["alice"]).count("new_message") == 20
    assert len(_agent_mails(api, "alice@example.com")) == 1
    # the window since the first email ends: one email lists the twenty
    clock.at(299)
    runtime.send_agent_mail()
    assert len(_agent_mails(api, "alice@example.com")) == 1
    clock.at(300)
    runtime.send_agent_mail()
    mails = _agent_mails(api, "alice@example.com")
    assert len(mails) == 2
    assert mails[1]["Subject"] == f"[chatflow] 20 notifications in chat {chat_id}"
    text = mails[1].get_payload(decode=True).decode()
    assert text.count("new message") == 20 and "hello 0" not in text  # templates name them; texts are the rule's
    # a second chat has its own window: its first notification goes at once
    other, other_customer = api.start_chat("Other")
    assert len(_agent_mails(api, "alice@example.com")) == 3
    # bob kept in_app: no email ever
    assert all(m["To"] == "alice@example.com" for m in api.maildir())
    # nothing waits any more: later ticks send nothing
    clock.advance(3600)
    runtime.send_agent_mail()
    assert len(_agent_mails(api, "alice@example.com")) == 3


def test_a_redelivered_event_adds_nothing_to_the_batch(api, runtime, clock):
    from sqlalchemy import func, select, update

    from server import store as S

    team = api.agents(("alice", {"email": "alice@example.com"}))
    _prefs(api, team["alice"], **{"*": "email"})
    chat_id, customer = api.start_chat("Hi")
    clock.advance(5)
    api.post(f"/api/widget/chats/{chat_id}/messages", customer, json={"text": "more"}, status=201)
    with runtime.db.begin() as conn:
        conn.execute(update(S.events).where(S.events.c.chat_id == chat_id).values(processed_at=None))
    runtime.process_pending(chat_id)
    with runtime.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(S.agent_email_items)).scalar() == 2
    clock.advance(300)
    runtime.send_agent_mail()
    mails = _agent_mails(api, "alice@example.com")
    assert [m["Subject"] for m in mails] == [f"[chatflow] new chat in chat {chat_id}",
                                            f"[chatflow] new message in chat {chat_id}"]
