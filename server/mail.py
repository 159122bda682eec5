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

SUBJECTS = {"unread_replies": "You have unread replies"}


def reply_address(chat_id: str, secret: str, domain: str) -> str:
    return f"reply+{chat_id}.{signature(chat_id, secret)}@{domain}"


def signature(chat_id: str, secret: str) -> str:
    return hmac.new(secret.encode(), chat_id.encode(), hashlib.sha256).hexdigest()[:20]


def render_email(row, secret: str, domain: str, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = row["to_addr"]
    msg["Subject"] = SUBJECTS.get(row["template"], row["template"].replace("_", " ").capitalize())
    msg["Reply-To"] = reply_address(row["chat_id"], secret, domain)
    msg["Message-ID"] = f"<{hashlib.sha256(row['key'].encode()).hexdigest()[:32]}@{domain}>"
    msg["Date"] = format_datetime(datetime.fromtimestamp(row["at"], timezone.utc))
    msg["Auto-Submitted"] = "auto-generated"
    replies = (row["data"] or {}).get("replies") or []
    lines = ["Hello,", "", "you have unread replies in your chat:", ""]
    for r in replies:
        lines.append(f"> {r['text']}")
        lines.append("")
    lines.append("Answer this email to reply in the chat.")
    msg.set_content("\n".join(lines))
    return msg


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
