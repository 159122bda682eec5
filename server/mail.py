"""Outgoing email: the ``emails`` rows rules produced, rendered and delivered once each,
to a local maildir (embedded default) or an SMTP server (``SMTP_URL``).

A customer's answer comes back to ``reply+<chat>.<signature>@<domain>``; the signature
(HMAC-SHA256 of the chat id with the server's secret) lets the inbound endpoint refuse
forged addresses.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import mailbox
import smtplib
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import datetime, timezone
from urllib.parse import urlparse

from sqlalchemy import select, update

from . import store as S

log = logging.getLogger("chatflow.mail")

SUBJECTS = {"unread_replies": "You have unread replies", "transcript": "Transcript of your chat"}
AUTHORS = {"customer": "You", "agent": "Agent", "bot": "Bot", "system": "System"}


def reply_address(chat_id: str, secret: str, domain: str) -> str:
    return f"reply+{chat_id}.{signature(chat_id, secret)}@{domain}"


def signature(chat_id: str, secret: str) -> str:
    return hmac.new(secret.encode(), chat_id.encode(), hashlib.sha256).hexdigest()[:20]


def render_email(row, secret: str, domain: str, sender: str) -> EmailMessage:
    """The email of an ``emails`` row. Its text comes only from what the engine put in
    ``data`` (public messages; never a note). Only an email to the customer carries the
    chat's ``reply+`` address: an answer from anyone else must not become the customer's.
    Every email is marked automatic (RFC 3834 ``Auto-Submitted``; ``X-Auto-Response-Suppress``
    asks Exchange not to answer it with an out-of-office)."""
    data = row["data"] or {}
    kind = data.get("kind", "customer")  # rows stored before emails had kinds went to the customer
    to_customer = kind == "customer" or (kind == "transcript" and data.get("to") == "customer")
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = row["to_addr"]
    subject = SUBJECTS.get(row["template"], row["template"].replace("_", " ").capitalize())
    if kind == "transcript" and not to_customer:
        subject = f"Transcript of chat {row['chat_id']}"
    msg["Subject"] = subject
    if to_customer:
        msg["Reply-To"] = reply_address(row["chat_id"], secret, domain)
    msg["Message-ID"] = f"<{hashlib.sha256(row['key'].encode()).hexdigest()[:32]}@{domain}>"
    msg["Date"] = format_datetime(datetime.fromtimestamp(row["at"], timezone.utc))
    msg["Auto-Submitted"] = data.get("auto_submitted") if data.get("auto_submitted") in AUTO_SUBMITTED \
        else "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    if kind == "transcript":
        lines = _transcript_lines(data, to_customer)
    elif kind == "summary":
        lines = _summary_lines(row, data)
    else:
        lines = ["Hello,", "", "you have unread replies in your chat:", ""]
        for r in data.get("replies") or []:
            lines.append(f"> {r['text']}")
            lines.append("")
        lines.append("Answer this email to reply in the chat.")
    msg.set_content("\n".join(lines))
    return msg


AUTO_SUBMITTED = ("auto-generated", "auto-replied")


def _said(m: dict, to_customer: bool) -> str:
    who = AUTHORS.get(m.get("author"), "?")
    if m.get("author") == "customer" and not to_customer:
        who = "Customer"
    elif m.get("author") == "agent" and m.get("author_id"):
        who = f"Agent {m['author_id']}"
    when = datetime.fromtimestamp(m["at"], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"[{when}] {who}: " + m["text"].replace("\n", "\n    ")


def _transcript_lines(data: dict, to_customer: bool) -> list[str]:
    lines = ["Hello,", "", "here is the transcript of your chat:" if to_customer else "the chat's messages:", ""]
    if data.get("omitted"):
        lines += [f"({data['omitted']} earlier messages are not shown)", ""]
    lines += [_said(m, to_customer) for m in data.get("messages") or []]
    if to_customer:
        lines += ["", "Answer this email to reply in the chat."]
    return lines


def _summary_lines(row, data: dict) -> list[str]:
    chat = data.get("chat") or {}
    customer = chat.get("customer") or {}
    who = customer.get("name") or customer.get("email") or customer.get("id") or "a customer"
    lines = [f"Chat {row['chat_id']} with {who}" + (f" ({customer['company']})" if customer.get("company") else ""),
             f"status {chat.get('status')}, priority {chat.get('priority')}, "
             f"department {chat.get('department') or '-'}, assignee {chat.get('assignee') or '-'}"]
    if chat.get("tags"):
        lines.append("tags: " + ", ".join(chat["tags"]))
    lines += ["", "Latest messages:"]
    lines += [_said(m, False) for m in data.get("messages") or []] or ["(none)"]
    return lines


def deliver_pending(db, settings, now: float) -> tuple[int, int]:
    """Send every unsent email once; returns (sent, still waiting after a failure).

    Each email is claimed by locking its row (PostgreSQL: ``FOR UPDATE SKIP LOCKED``), sent,
    and marked sent in that transaction, so processes delivering at the same time never
    send one twice: another process skips a row being sent and finds it sent afterwards."""
    sent = failed = 0
    with db.connect() as conn:
        ids = conn.execute(select(S.emails.c.id).where(S.emails.c.sent_at.is_(None)).order_by(S.emails.c.id)).scalars().all()
    for email_id in ids:
        with db.begin() as conn:
            q = select(S.emails).where(S.emails.c.id == email_id, S.emails.c.sent_at.is_(None))
            if conn.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            row = conn.execute(q).mappings().first()
            if row is None:  # sent meanwhile, or being sent by another process
                continue
            try:
                msg = render_email(row, settings["SECRET_KEY"], settings["EMAIL_DOMAIN"], settings["EMAIL_FROM"])
                _send(msg, settings)
            except (OSError, ValueError, smtplib.SMTPException) as e:  # this one waits; the others go
                log.warning("email %s to %s not sent: %s: %s", row["id"], row["to_addr"], type(e).__name__, e)
                failed += 1
                continue
            conn.execute(update(S.emails).where(S.emails.c.id == row["id"])
                         .values(sent_at=now, message_id=msg["Message-ID"]))
        sent += 1
    return sent, failed


def _send(msg: EmailMessage, settings) -> None:
    url = settings.get("SMTP_URL")
    if url:
        u = urlparse(url)
        with smtplib.SMTP(u.hostname or "127.0.0.1", u.port or 25, timeout=10) as smtp:
            if u.username:
                smtp.login(u.username, u.password or "")
            smtp.send_message(msg)
        return
    import os

    os.makedirs(os.path.dirname(os.path.abspath(settings["MAILDIR"])), exist_ok=True)
    box = mailbox.Maildir(settings["MAILDIR"], create=True)
    box.add(mailbox.MaildirMessage(msg))
