"""SPEC §2 end to end through HTTP, on SQLite and on PostgreSQL: the default rules run by
the live runtime, deadlines fired by calling the runtime on a virtual clock."""
from __future__ import annotations

import pytest

from server.mail import reply_address

MIN = 60.0


@pytest.fixture
def team(api):
    """alice and bob are operators who see every channel; carol has no access_chats;
    tess sees only telegram."""
    return api.agents("alice", "bob", ("carol", {"access_chats": False}), ("tess", {"channels": ["telegram"]}))


def test_new_chat_subscribes_and_notifies_every_operator_who_sees_it(api, client, team):
    cid, _ = api.start_chat("Hi, I need help")

    assert api.notifications(team["alice"]) == [(cid, "new_chat")]
    assert api.notifications(team["bob"]) == [(cid, "new_chat")]
    assert api.agent_chat(cid, team["alice"])["subscribers"] == ["alice", "bob"]
    assert api.notifications(api.admin) == []  # the bootstrap admin is not an operator

    # carol has no access_chats: no notification, no chats, no chat detail
    assert api.notifications(team["carol"]) == []
    r = client.get("/api/chats", headers=team["carol"])
    assert r.status_code == 200 and r.get_json() == {"chats": []}
    assert client.get(f"/api/chats/{cid}", headers=team["carol"]).status_code == 404

    # tess sees telegram only: a widget chat does not exist for her
    assert api.notifications(team["tess"]) == []
    assert client.get("/api/chats", headers=team["tess"]).get_json() == {"chats": []}
    r = client.get(f"/api/chats/{cid}", headers=team["tess"])
    assert r.status_code == 404
    assert set(r.get_json()) == {"error", "message", "details"}


def test_telegram_chat_reaches_the_telegram_agent(api, client, team):
    widget, _ = api.start_chat("from the widget")
    tg, _ = api.start_chat("from telegram", channel="telegram")

    assert api.notifications(team["tess"]) == [(tg, "new_chat")]
    assert [c["id"] for c in client.get("/api/chats", headers=team["tess"]).get_json()["chats"]] == [tg]
    assert api.agent_chat(tg, team["tess"])["subscribers"] == ["alice", "bob", "tess"]
    assert api.templates(team["alice"]) == ["new_chat", "new_chat"]
    assert {c["id"] for c in client.get("/api/chats", headers=team["alice"]).get_json()["chats"]} == {widget, tg}


def test_reply_needs_join_and_join_makes_responsible(api, client, team):
    cid, cust = api.start_chat("Hi")

    r = api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Hello"}, status=403)
    assert r.get_json()["error"] == "not_joined"
    assert api.customer_texts(cid, cust) == ["Hi"]

    chat = api.post(f"/api/chats/{cid}/join", team["alice"], status=200).get_json()
    assert chat["assignee"] == "alice" and chat["subscribed"] is True

    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Hello, how can I help?"}, status=201)
    msgs = client.get(f"/api/widget/chats/{cid}/messages", headers=cust).get_json()["messages"]
    assert [(m["author"], m["author_id"], m["text"]) for m in msgs] == [
        ("customer", None, "Hi"), ("agent", "alice", "Hello, how can I help?")]
    assert api.customer_chat(cid, cust)["unread"] == 1

    # bob is not responsible: refused; then bob joins and takes the chat over (§2.4)
    r = api.post(f"/api/chats/{cid}/reply", team["bob"], {"text": "me too"}, status=403)
    assert r.get_json()["error"] == "not_joined"
    assert api.post(f"/api/chats/{cid}/join", team["bob"], status=200).get_json()["assignee"] == "bob"
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "still me"}, status=403)
    api.post(f"/api/chats/{cid}/reply", team["bob"], {"text": "Bob here"}, status=201)
    assert api.customer_texts(cid, cust) == ["Hi", "Hello, how can I help?", "Bob here"]


def test_note_mentions_notify_and_never_reach_the_customer(api, client, team):
    cid, cust = api.start_chat("Where is my refund?")
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Let me check."}, status=201)
    secret = "@bob customer is on the VIP plan, card ending 4242"
    chat = api.post(f"/api/chats/{cid}/note", team["alice"], {"text": secret}, status=201).get_json()
    assert chat["messages"][-1]["kind"] == "note" and chat["messages"][-1]["mentions"] == ["bob"]

    assert api.templates(team["bob"], cid) == ["new_chat", "mention"]
    assert api.templates(team["alice"], cid) == ["new_chat"]

    widget = api.customer_chat(cid, cust)
    assert [m["text"] for m in widget["messages"]] == ["Where is my refund?", "Let me check."]
    assert widget["unread"] == 1
    assert api.customer_texts(cid, cust) == ["Where is my refund?", "Let me check."]
    for path in (f"/api/widget/chats/{cid}", f"/api/widget/chats/{cid}/messages"):
        assert "4242" not in client.get(path, headers=cust).get_data(as_text=True)
    # the customer's event stream (ended at once: the stream reads what exists, then stops)
    client.application.config["STREAM_SECONDS"] = 0
    stream = client.get(f"/api/widget/chats/{cid}/stream", headers=cust, buffered=True)
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    sse = stream.get_data(as_text=True)
    assert sse.count("event: message") == 2 and "Let me check." in sse and "4242" not in sse
    # a note by a non-responsible agent is allowed too, and stays private
    api.post(f"/api/chats/{cid}/note", team["bob"], {"text": "ok @alice"}, status=201)
    assert api.templates(team["alice"], cid) == ["new_chat", "mention"]
    assert api.customer_texts(cid, cust) == ["Where is my refund?", "Let me check."]


def test_customer_messages_notify_subscribers_then_only_the_assignee(api, team):
    cid, cust = api.start_chat("Hi")
    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "anyone?"}, status=201)
    assert api.templates(team["alice"], cid) == ["new_chat", "new_message"]
    assert api.templates(team["bob"], cid) == ["new_chat", "new_message"]

    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    r = api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "hello?"}, status=201)
    assert [m["text"] for m in r.get_json()["messages"]] == ["Hi", "anyone?", "hello?"]
    assert api.templates(team["alice"], cid) == ["new_chat", "new_message", "new_message"]
    assert api.templates(team["bob"], cid) == ["new_chat", "new_message"]
    assert api.templates(team["tess"]) == [] and api.templates(team["carol"]) == []


def test_assignment_by_another_agent_notifies_the_assignee(api, team):
    cid, _ = api.start_chat("Hi")
    chat = api.post(f"/api/chats/{cid}/assign", team["alice"], {"agent": "bob"}, status=200).get_json()
    assert chat["assignee"] == "bob"
    assert api.templates(team["bob"], cid) == ["new_chat", "assigned"]
    assert api.templates(team["alice"], cid) == ["new_chat"]


def test_escalation_fires_exactly_at_ten_minutes(api, runtime, clock, team):
    cid, _ = api.start_chat("Hi")  # the customer message is at START
    clock.advance(1 * MIN)
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)  # joining reads nothing

    assert runtime.next_due() == clock.start + 10 * MIN
    clock.at(10 * MIN - 1)
    assert runtime.run_due() == 0
    assert api.templates(team["alice"], cid) == ["new_chat"]
    assert api.templates(team["bob"], cid) == ["new_chat"]

    clock.at(10 * MIN)
    assert runtime.run_due() == 1
    runtime.after_change()
    assert api.templates(team["alice"], cid) == ["new_chat", "unread_messages"]
    assert api.templates(team["bob"], cid) == ["new_chat", "unread_messages"]
    notes = api.client.get("/api/notifications", headers=team["bob"]).get_json()["notifications"]
    assert notes[-1]["at"] == clock.start + 10 * MIN and notes[-1]["rule"] == "default.escalate_unread"

    # once per episode: later ticks add nothing
    clock.at(2 * 3600)
    assert runtime.run_due() == 0
    assert api.templates(team["bob"], cid) == ["new_chat", "unread_messages"]


def test_reading_in_time_prevents_the_escalation(api, runtime, clock, team):
    cid, _ = api.start_chat("Hi")
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    clock.at(9 * MIN)
    assert api.post(f"/api/chats/{cid}/read", team["alice"], status=200).get_json()["unread"] == 0
    assert runtime.next_due() is None
    clock.at(3600)
    assert runtime.run_due() == 0
    assert api.templates(team["bob"], cid) == ["new_chat"]


def test_offline_customer_gets_exactly_one_email(api, runtime, clock, team):
    cid, cust = api.start_chat("Hi", customer={"name": "Ann", "email": "ann@example.com"})
    clock.at(1 * MIN)
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Which order is it?"}, status=201)
    api.post(f"/api/chats/{cid}/note", team["alice"], {"text": "internal: chargeback risk"}, status=201)
    clock.at(2 * MIN)
    assert api.post(f"/api/widget/chats/{cid}/presence", cust, {"online": False}, status=200).status_code == 200
    assert api.agent_chat(cid, team["alice"])["customer"]["online"] is False

    clock.at(11 * MIN - 1)
    runtime.run_due()
    runtime.after_change()
    assert api.maildir() == []

    clock.at(11 * MIN)
    assert runtime.run_due() == 1
    runtime.after_change()
    mails = api.maildir()
    assert len(mails) == 1
    mail = mails[0]
    assert mail["To"] == "ann@example.com"
    assert mail["Subject"] == "You have unread replies"
    assert mail["Reply-To"].startswith(f"reply+{cid}.")
    assert mail["Reply-To"] == reply_address(cid, "test-secret", "chatflow.localhost")
    body = mail.get_payload(decode=True).decode()
    assert "> Which order is it?" in body
    assert "chargeback" not in mail.as_string()  # §2.11: notes never reach an email

    # neither another tick, nor reprocessing, nor another delivery round sends it again
    clock.at(3600)
    assert runtime.run_due() == 0
    assert runtime.process_pending(cid) == 0
    runtime.after_change()
    runtime.after_change()
    assert len(api.maildir()) == 1


def test_no_email_while_the_customer_stays_online(api, runtime, clock, team):
    cid, cust = api.start_chat("Hi", customer={"email": "ann@example.com"})
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Hello"}, status=201)
    clock.at(86400)
    runtime.run_due()
    runtime.after_change()
    assert api.maildir() == []


def test_lock_keeps_other_agents_out_but_allows_notes(api, client, team):
    cid, cust = api.start_chat("Hi")
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    assert api.post(f"/api/chats/{cid}/lock", team["alice"], status=200).get_json()["locked_by"] == "alice"

    for path, payload in ((f"/api/chats/{cid}/join", None), (f"/api/chats/{cid}/reply", {"text": "mine now"}),
                          (f"/api/chats/{cid}/assign", {"agent": "bob"})):
        r = api.post(path, team["bob"], payload, status=409)
        assert r.get_json()["error"] == "locked", path
    api.post(f"/api/chats/{cid}/note", team["bob"], {"text": "I can still write notes"}, status=201)
    chat = api.agent_chat(cid, team["bob"])
    assert (chat["assignee"], chat["locked_by"]) == ("alice", "alice")
    assert api.customer_texts(cid, cust) == ["Hi"]

    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "working on it"}, status=201)
    api.post(f"/api/chats/{cid}/unlock", team["alice"], status=200)
    assert api.post(f"/api/chats/{cid}/join", team["bob"], status=200).get_json()["assignee"] == "bob"


def test_edit_and_delete_own_messages(api, client, team):
    cid, cust = api.start_chat("Hi")
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Helo"}, status=201)  # position 2

    r = client.patch(f"/api/chats/{cid}/messages/2", json={"text": "Hello"}, headers=team["alice"])
    assert r.status_code == 200
    assert r.get_json()["messages"][1]["text"] == "Hello" and r.get_json()["messages"][1]["edited"] is True
    widget = api.customer_chat(cid, cust)["messages"]
    assert [(m["text"], m["edited"]) for m in widget] == [("Hi", False), ("Hello", True)]

    for r in (client.patch(f"/api/chats/{cid}/messages/2", json={"text": "bob was here"}, headers=team["bob"]),
              client.delete(f"/api/chats/{cid}/messages/2", headers=team["bob"])):
        assert (r.status_code, r.get_json()["error"]) == (403, "not_author")
    r = client.patch(f"/api/chats/{cid}/messages/1", json={"text": "not yours"}, headers=team["alice"])
    assert (r.status_code, r.get_json()["error"]) == (403, "not_author")
    assert api.customer_texts(cid, cust) == ["Hi", "Hello"]

    r = client.delete(f"/api/chats/{cid}/messages/2", headers=team["alice"])
    assert r.status_code == 200
    assert api.customer_texts(cid, cust) == ["Hi"]
    assert api.customer_chat(cid, cust)["unread"] == 0
    m = api.agent_chat(cid, team["bob"])["messages"][1]
    assert (m["position"], m["deleted"], m["text"]) == (2, True, None)
    r = client.patch(f"/api/chats/{cid}/messages/2", json={"text": "again"}, headers=team["alice"])
    assert (r.status_code, r.get_json()["error"]) == (409, "message_deleted")


def test_unsubscribed_agent_hears_nothing_more(api, runtime, clock, team):
    cid, cust = api.start_chat("Hi")
    chat = api.post(f"/api/chats/{cid}/unsubscribe", team["bob"], status=200).get_json()
    assert chat["subscribed"] is False and chat["subscribers"] == ["alice"]

    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "hello?"}, status=201)
    api.post(f"/api/chats/{cid}/note", team["alice"], {"text": "@bob look at this"}, status=201)
    clock.at(1 * MIN)
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    clock.at(10 * MIN)
    assert runtime.run_due() == 1

    assert api.templates(team["alice"], cid) == ["new_chat", "new_message", "unread_messages"]
    assert api.templates(team["bob"], cid) == ["new_chat"]

    # subscribing again brings the notifications back
    api.post(f"/api/chats/{cid}/subscribe", team["bob"], status=200)
    api.post(f"/api/chats/{cid}/note", team["alice"], {"text": "@bob now?"}, status=201)
    assert api.templates(team["bob"], cid) == ["new_chat", "mention"]


def test_admin_trace_lists_the_rules_that_fired(api, client, team):
    cid, cust = api.start_chat("Hi")
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "still there?"}, status=201)

    r = client.get(f"/api/admin/chats/{cid}/trace", headers=api.admin)
    assert r.status_code == 200
    data = r.get_json()
    assert data["chat_id"] == cid
    fired = [e["rule"] for run in data["runs"] for e in run["entries"] if e["kind"] == "fired"]
    assert fired == ["default.subscribe_operators", "default.notify_responsible"]
    effects = [(e["detail"]["to"], e["detail"]["template"]) for run in data["runs"] for e in run["entries"]
               if e["kind"] == "effect"]
    assert effects == [("alice", "new_chat"), ("bob", "new_chat"), ("alice", "new_message")]
    not_fired = {e["rule"] for run in data["runs"] for e in run["entries"] if e["kind"] == "rule" and not e["fired"]}
    assert "default.notify_subscribers" in not_fired


def test_email_answer_becomes_a_customer_message(api, client, runtime, clock, team):
    cid, cust = api.start_chat("Hi", customer={"email": "ann@example.com"})
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Which order?"}, status=201)
    api.post(f"/api/widget/chats/{cid}/presence", cust, {"online": False}, status=200)
    clock.at(10 * MIN)
    runtime.run_due()
    runtime.after_change()
    [mail] = api.maildir()

    answer = (f"From: Ann <ann@example.com>\r\nTo: {mail['Reply-To']}\r\nSubject: Re: {mail['Subject']}\r\n"
              f"In-Reply-To: {mail['Message-ID']}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
              "Order 42, thanks\r\n\r\n> Which order?\r\n").encode()
    clock.at(3 * 3600)
    r = client.post("/api/inbound-email", data=answer, content_type="message/rfc822")
    assert r.status_code == 201, r.get_data(as_text=True)
    assert r.get_json() == {"chat_id": cid, "accepted": True}
    msgs = client.get(f"/api/widget/chats/{cid}/messages", headers=cust).get_json()["messages"]
    assert [(m["text"], m["via"]) for m in msgs][-1] == ("Order 42, thanks", "email")
    last = api.agent_chat(cid, team["alice"])["messages"][-1]
    assert (last["author"], last["via"], last["text"]) == ("customer", "email", "Order 42, thanks")
    assert api.templates(team["alice"], cid)[-1] == "new_message"
