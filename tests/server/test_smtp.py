"""SPEC §2 line 8 over real SMTP, on SQLite and on PostgreSQL: the unread-replies email
goes out to an aiosmtpd server, and the customer's answer comes back in through
``chatflow smtpd`` (server.smtpd, an aiosmtpd server too) into the chat, ``via: email``.
"""
from __future__ import annotations

import json
import os
import smtplib
import socket
import subprocess
import sys
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, select

from server import store as S
from server.api_inbound import MAX_EMAIL_BYTES
from server.mail import reply_address
from server.smtpd import make_controller

MIN = 60.0
SECRET = "test-secret"
DOMAIN = "chatflow.localhost"
REPLIES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "email-replies"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """An aiosmtpd handler that keeps every message it is given: (MAIL FROM, RCPT TOs, bytes)."""

    def __init__(self):
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


@pytest.fixture
def outbox():
    """A real SMTP server on a free port that records what the app sends."""
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    recorder.controller = controller
    yield recorder
    recorder.controller.stop()  # the one running now (a test may have restarted it)


@pytest.fixture
def app_config(outbox):
    """conftest's app, sending its email to ``outbox`` (SMTP_URL) instead of a maildir."""
    return {"SECRET_KEY": SECRET, "SMTP_URL": f"smtp://127.0.0.1:{outbox.controller.port}"}


@pytest.fixture
def alice(api):
    return api.agents("alice")["alice"]


@pytest.fixture
def smtpd(runtime):
    """``chatflow smtpd``'s server, on a free port, over the app's runtime."""
    controller = make_controller(runtime, runtime.settings, "127.0.0.1", free_port())
    controller.start()
    yield controller
    controller.stop()


def emailed_chat(api, runtime, clock, outbox, alice):
    """SPEC §2 line 8 through HTTP: Ann's chat, answered by alice, left unread while Ann is
    offline for 10 minutes. Returns (chat id, Ann's headers, the one email sent)."""
    cid, cust = api.start_chat("Hi, where is my parcel?", customer={"name": "Ann", "email": "ann@example.com"})
    clock.at(1 * MIN)
    api.post(f"/api/chats/{cid}/join", alice, status=200)
    api.post(f"/api/chats/{cid}/reply", alice, {"text": "Which order is it?"}, status=201)
    clock.at(2 * MIN)
    api.post(f"/api/widget/chats/{cid}/presence", cust, {"online": False}, status=200)
    runtime.run_due()
    runtime.after_change()
    assert outbox.messages == []
    clock.advance(10 * MIN)
    assert runtime.run_due() == 1
    runtime.after_change()
    assert len(outbox.messages) == 1
    return cid, cust, outbox.messages[0]


def test_the_unread_replies_email_goes_out_over_smtp_once(api, runtime, clock, outbox, alice):
    cid, _, (mail_from, rcpt_tos, raw) = emailed_chat(api, runtime, clock, outbox, alice)

    mail = message_from_bytes(raw, policy=policy.default)
    assert (mail_from, rcpt_tos) == ("support@chatflow.localhost", ["ann@example.com"])
    assert mail["To"] == "ann@example.com"
    assert mail["Subject"] == "You have unread replies"
    assert mail["Reply-To"] == reply_address(cid, SECRET, DOMAIN)
    assert mail["Reply-To"].startswith(f"reply+{cid}.")
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "> Which order is it?" in mail.get_content()
    with runtime.db.connect() as conn:
        [row] = conn.execute(select(S.emails)).mappings().all()
    assert mail["Message-ID"] == row["message_id"] and mail["Message-ID"].endswith(f"@{DOMAIN}>")
    assert row["sent_at"] == clock()

    # neither another tick nor another delivery round sends it again
    clock.advance(3600)
    assert runtime.run_due() == 0
    runtime.after_change()
    runtime.after_change()
    assert len(outbox.messages) == 1


def test_an_smtp_outage_delays_the_email_and_loses_nothing(api, runtime, clock, outbox, alice):
    cid, cust = api.start_chat("Hi", customer={"email": "ann@example.com"})
    api.post(f"/api/chats/{cid}/join", alice, status=200)
    api.post(f"/api/chats/{cid}/reply", alice, {"text": "Hello"}, status=201)
    api.post(f"/api/widget/chats/{cid}/presence", cust, {"online": False}, status=200)
    port = outbox.controller.port
    outbox.controller.stop()
    clock.advance(10 * MIN)
    runtime.run_due()
    runtime.after_change()  # refused connection: logged, the email waits
    with runtime.db.connect() as conn:
        assert conn.execute(select(S.emails.c.sent_at)).scalars().all() == [None]

    outbox.controller = Controller(outbox, hostname="127.0.0.1", port=port)
    outbox.controller.start()
    runtime.after_change()
    runtime.after_change()
    assert [rcpt for _, rcpt, _ in outbox.messages] == [["ann@example.com"]]


def answer(reply_to: str, original, body: str, **headers) -> EmailMessage:
    """Ann's answer to ``original`` as her mail client writes it."""
    msg = EmailMessage()
    msg["From"] = "Ann <ann@example.com>"
    msg["To"] = reply_to
    msg["Subject"] = "Re: " + original["Subject"]
    msg["In-Reply-To"] = original["Message-ID"]
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def send(port: int, msg: EmailMessage, to=None) -> dict:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        return smtp.send_message(msg, "ann@example.com", to or [msg["To"]])


def shared_reply(name: str) -> tuple[str, str]:
    """(body, expected visible reply) of a real mail client's answer from the shared data."""
    spec = json.loads((REPLIES / "cases.json").read_text(encoding="utf-8"))
    assert name in [c["file"] for c in spec["cases"]]
    return (REPLIES / name).read_text(encoding="utf-8"), spec["expected_reply"].strip()


def customer_messages(api, cid, cust) -> list[tuple[str, str]]:
    r = api.client.get(f"/api/widget/chats/{cid}/messages", headers=cust)
    assert r.status_code == 200, r.get_json()
    return [(m["text"], m["via"]) for m in r.get_json()["messages"]]


@pytest.mark.parametrize("name", ["email_7.txt", "email_german_outlook.txt", "email_ios_outlook.txt"])
def test_an_answer_over_smtp_becomes_a_customer_message(api, runtime, clock, outbox, alice, smtpd, name):
    cid, cust, (_, _, raw) = emailed_chat(api, runtime, clock, outbox, alice)
    original = message_from_bytes(raw, policy=policy.default)
    body, expected = shared_reply(name)
    clock.advance(3600)

    assert send(smtpd.port, answer(original["Reply-To"], original, body)) == {}  # 250 for its one recipient

    assert customer_messages(api, cid, cust)[-1] == (expected, "email")
    last = api.agent_chat(cid, alice)["messages"][-1]
    assert (last["author"], last["via"], last["text"]) == ("customer", "email", expected)
    assert api.templates(alice, cid)[-1] == "new_message"


def test_forged_unknown_automatic_and_foreign_mail_adds_nothing(api, runtime, clock, outbox, alice, smtpd):
    cid, cust, (_, _, raw) = emailed_chat(api, runtime, clock, outbox, alice)
    original = message_from_bytes(raw, policy=policy.default)
    reply_to = original["Reply-To"]
    before = customer_messages(api, cid, cust)

    # a forged signature: the right shape and domain pass RCPT TO, the message is refused
    forged = reply_to[:-len(DOMAIN) - 2] + ("0" if reply_to[-len(DOMAIN) - 2] != "0" else "1") + "@" + DOMAIN
    assert forged != reply_to
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(smtpd.port, answer(forged, original, "Order 42"))
    assert refused.value.smtp_code == 550 and b"not issued by this server" in refused.value.smtp_error

    # a genuine signature of a chat that does not exist
    gone = reply_address("c_0123456789abcdef", SECRET, DOMAIN)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(smtpd.port, answer(gone, original, "Order 42"))
    assert refused.value.smtp_code == 550

    # an out-of-office reply is accepted (250) and kept for agents only: the customer never
    # sees it as their own message
    assert send(smtpd.port, answer(reply_to, original, "I am away until Monday.", Auto_Submitted="auto-replied")) == {}
    last = api.agent_chat(cid, alice)["messages"][-1]
    assert (last["text"], last["auto_reply"]) == ("I am away until Monday.", True)

    # an answer that only quotes the email has nothing to add
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(smtpd.port, answer(reply_to, original, "> Which order is it?\n"))
    assert refused.value.smtp_code == 554

    # recipients that are no reply address of this server are refused at RCPT TO
    for other in (reply_to.replace(f"@{DOMAIN}", "@example.com"), f"support@{DOMAIN}", f"reply+{cid}@{DOMAIN}"):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            send(smtpd.port, answer(other, original, "Order 42"))
        assert refused.value.recipients[other][0] == 550

    assert customer_messages(api, cid, cust) == before


def test_one_chat_per_message_and_a_size_limit(api, runtime, clock, outbox, alice, smtpd):
    cid, cust, (_, _, raw) = emailed_chat(api, runtime, clock, outbox, alice)
    original = message_from_bytes(raw, policy=policy.default)
    reply_to = original["Reply-To"]
    other_chat = reply_address("c_0123456789abcdef", SECRET, DOMAIN)

    # a second chat's address is deferred (452: send it separately); the first one gets it
    refused = send(smtpd.port, answer(reply_to, original, "Order 42"), to=[reply_to, reply_to.upper(), other_chat])
    assert list(refused) == [other_chat] and refused[other_chat][0] == 452
    assert customer_messages(api, cid, cust)[-1] == ("Order 42", "email")

    # too large: refused with 552 (smtplib announces the size, so at MAIL FROM)
    with pytest.raises(smtplib.SMTPSenderRefused) as too_large:
        send(smtpd.port, answer(reply_to, original, ("x" * 76 + "\n") * (MAX_EMAIL_BYTES // 77 + 10)))
    assert too_large.value.smtp_code == 552
    assert customer_messages(api, cid, cust)[-1] == ("Order 42", "email")


def test_a_database_outage_is_a_temporary_failure(api, runtime, clock, outbox, alice, smtpd):
    cid, cust, (_, _, raw) = emailed_chat(api, runtime, clock, outbox, alice)
    original = message_from_bytes(raw, policy=policy.default)
    db = runtime.db
    runtime.db = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone")  # nothing listens
    try:
        with pytest.raises(smtplib.SMTPDataError) as deferred:
            send(smtpd.port, answer(original["Reply-To"], original, "Order 42"))
    finally:
        runtime.db.dispose()
        runtime.db = db
    assert deferred.value.smtp_code == 451  # the sending server keeps the answer and retries
    send(smtpd.port, answer(original["Reply-To"], original, "Order 42"))
    assert customer_messages(api, cid, cust)[-1] == ("Order 42", "email")


def test_chatflow_smtpd_serves_the_same_database(request, backend, app, api, runtime, clock, outbox, alice):
    """The real command, in its own process, on the app's database (SQLite file or PostgreSQL)."""
    cid, cust, (_, _, raw) = emailed_chat(api, runtime, clock, outbox, alice)
    original = message_from_bytes(raw, policy=policy.default)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CHATFLOW_DATA_DIR")}
    env.update(SECRET_KEY=SECRET, SMTP_URL=app.config["SMTP_URL"], PYTHONPATH=str(ROOT))
    if backend == "postgresql":
        env["DATABASE_URL"] = request.getfixturevalue("pg_url")
    proc = subprocess.Popen([sys.executable, "-m", "chatflow", "smtpd", "--port", str(port),
                             "--data-dir", app.config["DATA_DIR"]], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc)
        assert send(port, answer(original["Reply-To"], original, "Order 42, thanks")) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send(port, answer("ann@example.com", original, "Order 42"))
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode(errors="replace")
    assert customer_messages(api, cid, cust)[-1] == ("Order 42, thanks", "email")
    assert f"chatflow smtpd on 127.0.0.1:{port}" in output
    assert "smtp RCPT TO 'ann@example.com' refused" in output  # every refusal is logged


def _wait_for_port(port: int, proc, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"chatflow smtpd exited: {proc.communicate()[0].decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("chatflow smtpd did not start listening")


# ---------------------------------------------------------------- issue 8 item 6

EMAIL_RULES = '''
rule receipt "A customer's email gets a summary back" {
  on message.created
  when message.author == "customer" and message.via == "email"
  then email customer template "chat_summary"
}

rule lead "The lead hears of urgent chats" {
  on message.created
  when message.author == "customer" and message.text contains "urgent"
  then email agent "lead" template "chat_summary"
}

rule transcript "Closing sends the transcript to the customer and the archive" {
  on chat.closed
  then email transcript to customer, address "archive@example.com"
}
'''


@pytest.fixture
def email_rules(api):
    api.upload_rules({"email.rules": EMAIL_RULES})
    return api.agents(("lead", {"email": "lead@example.com"}))["lead"]


def sent(outbox) -> dict:
    """{recipient: parsed message} of what the outbox received."""
    return {rcpt[0]: message_from_bytes(raw, policy=policy.default) for _, rcpt, raw in outbox.messages}


def test_agents_addresses_and_transcripts_over_smtp(api, runtime, clock, outbox, alice, email_rules):
    cid, cust = api.start_chat("Hi", customer={"name": "Ann", "email": "ann@example.com", "company": "ACME"})
    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "this is urgent"}, status=201)
    runtime.after_change()
    lead = sent(outbox)["lead@example.com"]
    assert lead["Subject"] == "Chat summary" and lead["Reply-To"] is None  # staff answers never become Ann's
    assert lead["Auto-Submitted"] == "auto-replied" and lead["X-Auto-Response-Suppress"] == "All"
    assert f"Chat {cid} with Ann (ACME)" in lead.get_content() and "this is urgent" in lead.get_content()

    api.post(f"/api/chats/{cid}/join", alice, status=200)
    api.post(f"/api/chats/{cid}/note", alice, {"text": "SECRET: refund approved"}, status=201)
    api.post(f"/api/chats/{cid}/reply", alice, {"text": "We are on it"}, status=201)
    api.post(f"/api/chats/{cid}/close", alice, status=200)
    runtime.after_change()
    mails = sent(outbox)
    to_ann, archive = mails["ann@example.com"], mails["archive@example.com"]
    assert to_ann["Subject"] == "Transcript of your chat" and to_ann["Reply-To"] == reply_address(cid, SECRET, DOMAIN)
    assert archive["Subject"] == f"Transcript of chat {cid}" and archive["Reply-To"] is None
    for mail in (to_ann, archive):
        assert mail["Auto-Submitted"] == "auto-generated"  # an agent closed the chat: no message answered
        text = mail.get_content()
        assert "SECRET" not in text
        assert [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("[")] == \
            ["Hi", "this is urgent", "We are on it"]


def test_an_automatic_reply_over_smtp_reopens_nothing_and_gets_no_answer(api, runtime, clock, outbox, alice,
                                                                       smtpd, email_rules):
    cid, cust, (_, _, raw) = emailed_chat(api, runtime, clock, outbox, alice)
    original = message_from_bytes(raw, policy=policy.default)
    api.post(f"/api/chats/{cid}/close", alice, status=200)
    runtime.after_change()
    before = len(outbox.messages)
    body, _ = shared_reply("email_german_outlook.txt")  # a real client's body, sent by an autoresponder

    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("ann@example.com")
        smtp.rcpt(original["Reply-To"])
        code, reply = smtp.data(answer(original["Reply-To"], original, body, X_Autoreply="yes").as_bytes(policy=policy.SMTP))
    assert code == 250 and b"automatic reply kept" in reply, (code, reply)

    chat = api.agent_chat(cid, alice)
    assert chat["status"] == "closed"
    assert (chat["messages"][-1]["author"], chat["messages"][-1]["auto_reply"]) == ("customer", True)
    runtime.after_change()
    assert len(outbox.messages) == before  # no summary back to an autoresponder (RFC 3834)

    # the customer's own answer reopens the chat and gets its summary
    assert send(smtpd.port, answer(original["Reply-To"], original, "Order 42, please")) == {}
    runtime.after_change()
    assert api.agent_chat(cid, alice)["status"] == "open"
    assert len(outbox.messages) == before + 1
    assert sent(outbox)["ann@example.com"]["Auto-Submitted"] == "auto-replied"


@pytest.mark.parametrize("headers", [
    {"Auto_Submitted": "auto-replied"}, {"X_Autorespond": "yes"}, {"Precedence": "bulk"}, {"Return_Path": "<>"},
])
def test_the_inbound_endpoint_keeps_automatic_replies_for_agents(api, client, runtime, clock, outbox, alice, headers):
    cid, cust, (_, _, raw) = emailed_chat(api, runtime, clock, outbox, alice)
    original = message_from_bytes(raw, policy=policy.default)
    r = client.post("/api/inbound-email", data=answer(original["Reply-To"], original, "Away", **headers).as_bytes(),
                    content_type="message/rfc822")
    assert r.status_code == 202 and r.get_json() == {"chat_id": cid, "accepted": True, "auto_reply": True}
    assert [m["text"] for m in api.agent_chat(cid, alice)["messages"] if m["auto_reply"]] == ["Away"]
    assert "Away" not in [t for t, _ in customer_messages(api, cid, cust)]


def test_a_bounce_is_kept_with_its_subject(api, client, runtime, clock, outbox, alice):
    cid, cust, (_, _, raw) = emailed_chat(api, runtime, clock, outbox, alice)
    original = message_from_bytes(raw, policy=policy.default)
    bounce = EmailMessage()
    bounce["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.com>"
    bounce["To"] = original["Reply-To"]
    bounce["Subject"] = "Undelivered Mail Returned to Sender"
    bounce.set_content("Your message could not be delivered: mailbox full.\n")
    bounce.make_mixed()
    status = EmailMessage()
    status["Content-Type"] = "message/delivery-status"
    per_recipient = EmailMessage()
    per_recipient["Final-Recipient"] = "rfc822; ann@example.com"
    per_recipient["Status"] = "5.2.2"
    status.set_payload([EmailMessage(), per_recipient])
    bounce.attach(status)
    bounce.replace_header("Content-Type", "multipart/report; report-type=delivery-status")
    r = client.post("/api/inbound-email", data=bounce.as_bytes(), content_type="message/rfc822")
    assert r.status_code == 202, r.get_json()
    last = api.agent_chat(cid, alice)["messages"][-1]
    assert (last["auto_reply"], last["subject"]) == (True, "Undelivered Mail Returned to Sender")
    assert last["text"].startswith("Your message could not be delivered")
