"""Issue 8 item 9 through the HTTP service, on SQLite and on PostgreSQL: the customer's
profile from the widget, an email's subject from the inbound endpoint, `{{ message.text }}`
in a rule's reply (never a note's), and a time field set with `now + 1d`."""
from __future__ import annotations

import pytest

from server.mail import reply_address

RULES = '''
rule key_account {
  on chat.created
  when customer.company == "ACME" and customer.country == "DE"
  then tag "key_account"
}

rule refund_subject {
  on message.created
  when message.subject starts with "Refund"
  then tag "refund"
}

rule echo {
  on message.created
  when message.text contains "order" and event.actor != "rule"
  then reply "We received: {{ message.text }}"  # chatflow: ignore=private_text
}

rule follow_up {
  on message.created
  when message.author == "agent" and message.kind == "reply"
  then set field follow_up = now + 1d
}
'''


@pytest.fixture
def team(api):
    agents = api.agents("alice")
    api.upload_rules({"facts.rules": RULES})
    return agents


def test_the_customer_profile_comes_from_the_widget(api, team):
    customer = {"name": "Ann", "company": "ACME", "country": "DE", "city": "Berlin", "phone": "+49 30 1234"}
    cid, _ = api.start_chat("Hi", customer=customer)
    chat = api.agent_chat(cid, team["alice"])
    assert chat["tags"] == ["key_account"]
    assert {k: chat["customer"][k] for k in ("company", "country", "city", "phone")} == \
        {"company": "ACME", "country": "DE", "city": "Berlin", "phone": "+49 30 1234"}


def test_a_profile_value_must_be_text(api, client, team):
    r = client.post("/api/widget/chats", json={"text": "Hi", "customer": {"phone": 4930}})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"


def test_an_emails_subject_is_a_fact(api, client, team):
    cid, _ = api.start_chat("Hi", customer={"email": "ann@example.com"})
    to = reply_address(cid, "test-secret", "chatflow.localhost")
    raw = (f"From: Ann <ann@example.com>\r\nTo: {to}\r\nSubject: Refund for order 42\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\nI want my money back\r\n").encode()
    r = client.post("/api/inbound-email", data=raw, content_type="message/rfc822")
    assert r.status_code == 201, r.get_data(as_text=True)
    chat = api.agent_chat(cid, team["alice"])
    assert chat["tags"] == ["refund"]
    assert (chat["messages"][-1]["subject"], chat["messages"][-1]["text"]) == \
        ("Refund for order 42", "I want my money back")


def test_message_text_in_a_reply_but_never_a_notes(api, clock, team):
    cid, cust = api.start_chat("Hi")
    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "my order 42 is late"}, status=201)
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/note", team["alice"], {"text": "order 42 was lost, SECRET"}, status=201)
    texts = api.customer_texts(cid, cust)
    assert texts == ["Hi", "my order 42 is late", "We received: my order 42 is late"]
    assert not any("SECRET" in t for t in texts)

    clock.at(60)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Looking into it"}, status=201)
    assert api.agent_chat(cid, team["alice"])["fields"]["follow_up"] == clock() + 86400
