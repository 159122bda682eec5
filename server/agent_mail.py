"""Notifications by email to agents who chose ``email`` for a template, batched: at most
one email per agent and chat per ``AGENT_EMAIL_WINDOW`` seconds (5 minutes).

A notification for an agent who wants it by email is stored twice in the rules'
transaction: in ``notifications`` (the app's list, as for everyone) and in
``agent_email_items``, both keyed by the effect's idempotency key. Collecting turns the
items waiting for one agent and chat into one ``agent_emails`` row: at once if that agent
got no email about that chat in the last window, else when the window since the last one
ends — so a busy chat sends one email listing twenty notifications, not twenty emails,
and a quiet chat's first notification is not held back. The emails are then sent once
each (claimed by their row, like the customers' emails in server.mail).

Collecting runs after the changes that stored items (the request, or the worker's job),
on the deadline thread (embedded) and in ``chatflow scheduler`` (scaled), which enqueues
a job when a window ends.
"""
from __future__ import annotations

import hashlib
import logging
import smtplib
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime

from sqlalchemy import and_, func, select, update

from . import store as S

log = logging.getLogger("chatflow.mail")

SUBJECT = {"new_chat": "new chat", "new_message": "new message", "assigned": "assigned to you",
           "mention": "you were mentioned", "unread_messages": "unread messages", "unattended": "unattended chat"}


def _due_groups(conn, now: float, window: float) -> list:
    """(agent, chat) pairs with items waiting whose window has ended (or never began)."""
    items, mails = S.agent_email_items, S.agent_emails
    waiting = conn.execute(select(items.c.agent_id, items.c.chat_id).where(items.c.email_id.is_(None))
                           .group_by(items.c.agent_id, items.c.chat_id)).all()
    if not waiting:
        return []
    last = {(a, c): t for a, c, t in conn.execute(
        select(mails.c.agent_id, mails.c.chat_id, func.max(mails.c.created_at))
        .where(mails.c.agent_id.in_({a for a, _ in waiting})).group_by(mails.c.agent_id, mails.c.chat_id))}
    return [(a, c) for a, c in waiting if (a, c) not in last or now >= last[(a, c)] + window]


def next_due(db, window: float) -> float | None:
    """When the next waiting batch may be collected (None: nothing waits)."""
    items, mails = S.agent_email_items, S.agent_emails
    with db.connect() as conn:
        waiting = conn.execute(select(items.c.agent_id, items.c.chat_id).where(items.c.email_id.is_(None))
                               .group_by(items.c.agent_id, items.c.chat_id)).all()
        if not waiting:
            return None
        last = {(a, c): t for a, c, t in conn.execute(
            select(mails.c.agent_id, mails.c.chat_id, func.max(mails.c.created_at))
            .where(mails.c.agent_id.in_({a for a, _ in waiting})).group_by(mails.c.agent_id, mails.c.chat_id))}
    return min(last[g] + window if g in last else 0.0 for g in waiting)


def collect(db, now: float, window: float) -> int:
    """Turn each due batch of waiting items into one email row; returns how many. One
    collector at a time (PostgreSQL: a transaction-level advisory lock; another process
    that finds it taken leaves the work to the holder)."""
    made = 0
    items, mails = S.agent_email_items, S.agent_emails
    with db.begin() as conn:
        if conn.dialect.name == "postgresql":
            if not conn.exec_driver_sql("SELECT pg_try_advisory_xact_lock(7243002)").scalar():
                return 0
        groups = _due_groups(conn, now, window)
        if not groups:
            return 0
        addresses = dict(conn.execute(select(S.agents.c.id, S.agents.c.email)
                                      .where(S.agents.c.id.in_({a for a, _ in groups}))).all())
        for agent_id, chat_id in groups:
            rows = conn.execute(select(items).where(and_(items.c.agent_id == agent_id, items.c.chat_id == chat_id,
                                                         items.c.email_id.is_(None))).order_by(items.c.id)).mappings().all()
            address = addresses.get(agent_id)
            if not address:  # no address (any more): the app has them all; 0 marks them not emailed
                conn.execute(update(items).where(items.c.id.in_([r["id"] for r in rows])).values(email_id=0))
                continue
            email_id = conn.execute(mails.insert().values(
                agent_id=agent_id, chat_id=chat_id, to_addr=address, created_at=now,
                items=[{"template": r["template"], "text": r["text"], "at": r["at"], "rule": r["rule"]}
                       for r in rows])).inserted_primary_key[0]
            conn.execute(update(items).where(items.c.id.in_([r["id"] for r in rows])).values(email_id=email_id))
            made += 1
    return made


def render(row, settings) -> EmailMessage:
    """One email listing the notifications of one chat (no reply address: agents answer
    in the app, and an answer must never become a customer message)."""
    items = row["items"] or []
    msg = EmailMessage()
    msg["From"] = settings["EMAIL_FROM"]
    msg["To"] = row["to_addr"]
    what = SUBJECT.get(items[0]["template"], items[0]["template"].replace("_", " ")) if len(items) == 1 else \
        f"{len(items)} notifications"
    msg["Subject"] = f"[chatflow] {what} in chat {row['chat_id']}"
    digest = hashlib.sha256(f"{row['id']}:{row['agent_id']}".encode()).hexdigest()[:24]
    msg["Message-ID"] = f"<agent-{digest}@{settings['EMAIL_DOMAIN']}>"
    msg["Date"] = format_datetime(datetime.fromtimestamp(row["created_at"], timezone.utc))
    msg["Auto-Submitted"] = "auto-generated"
    lines = [f"Chat {row['chat_id']}:", ""]
    for item in items:
        when = datetime.fromtimestamp(item["at"], timezone.utc).strftime("%H:%M UTC")
        label = SUBJECT.get(item["template"], item["template"].replace("_", " "))
        lines.append(f"- {when} {label}" + (f": {item['text']}" if item.get("text") else ""))
    lines += ["", "Open the chat in chatflow to answer; you can choose which notifications come by email "
              "under your preferences."]
    msg.set_content("\n".join(lines))
    return msg


def send_pending(db, settings, now: float) -> tuple[int, int]:
    """Send every unsent agent email once; returns (sent, failed). Claimed like the
    customers' emails: the row is locked (SKIP LOCKED) while it is sent and marked."""
    from .mail import _send

    sent = failed = 0
    mails = S.agent_emails
    with db.connect() as conn:
        ids = conn.execute(select(mails.c.id).where(mails.c.sent_at.is_(None)).order_by(mails.c.id)).scalars().all()
    for email_id in ids:
        with db.begin() as conn:
            q = select(mails).where(mails.c.id == email_id, mails.c.sent_at.is_(None))
            if conn.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            row = conn.execute(q).mappings().first()
            if row is None:
                continue
            try:
                msg = render(row, settings)
                _send(msg, settings)
            except (OSError, ValueError, smtplib.SMTPException) as e:
                log.warning("agent email %s to %s not sent: %s: %s", row["id"], row["to_addr"], type(e).__name__, e)
                failed += 1
                continue
            conn.execute(update(mails).where(mails.c.id == row["id"]).values(sent_at=now, message_id=msg["Message-ID"]))
        sent += 1
    return sent, failed


def deliver(db, settings, now: float) -> int:
    """Collect what is due and send it; returns how many emails were sent."""
    collect(db, now, float(settings["AGENT_EMAIL_WINDOW"]))
    return send_pending(db, settings, now)[0]
