"""``POST /api/inbound-email``: a customer's answer to a chat email, as raw RFC 822.

The answer reaches its chat only through a ``reply+<chat>.<signature>@…`` address whose
signature the server made; a forged or unknown address is refused and logged. An
automatic reply or bounce (RFC 3834 ``Auto-Submitted``, ``X-Autoreply``, bulk precedence,
a delivery report, an empty ``Return-Path``) is kept in its chat for agents as a message
``message.is_auto_reply`` rules can test: it never reopens the chat and nothing answers it.

``accept_inbound`` is that whole decision as a plain function: the endpoint here and the
SMTP server (``server.smtpd``, ``chatflow smtpd``) both call it, so a message is judged
the same way whichever door it came in by.
"""
from __future__ import annotations

import hmac
import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select

from engine.model import CommandRefused

from . import store as S
from .http import REFUSAL_STATUS, ApiError
from .mail import signature

bp = Blueprint("inbound", __name__)
log = logging.getLogger("chatflow.inbound")

MAX_EMAIL_BYTES = 2 * 1024 * 1024


@bp.post("/api/inbound-email")
def inbound_email():
    expected = current_app.config.get("INBOUND_TOKEN")
    if expected:
        given = request.headers.get("Authorization", "")[7:]
        if not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("inbound email refused: no valid inbound token (from %s)", request.remote_addr)
            raise ApiError(401, "unauthorized", "the inbound token is required")
    status, payload = accept_inbound(current_app.extensions["chatflow"], current_app.config,
                                     request.get_data(cache=False))
    return jsonify(payload), status


def accept_inbound(runtime, settings, raw: bytes, recipients=None) -> tuple[int, dict]:
    """Judge a raw RFC 822 message answering a chat email and, if it is a customer's
    answer, add it to its chat (``via: email``).

    ``recipients``: the SMTP envelope's RCPT TO addresses, which name the reply address
    when given; otherwise it is looked up among the message's To and Cc.

    Returns ``(HTTP status, JSON payload)``: 201 ``{chat_id, accepted: true}``; 202
    ``{chat_id, accepted: true, auto_reply: true}`` for an automatic reply or bounce;
    else a 4xx ``{error, message, details}`` with ``error`` one of ``bad_email``,
    ``too_large``, ``unknown_address``, ``forged_address``, ``unknown_chat``,
    ``empty_reply`` or a refusal code of the domain. Every refusal is logged.
    Unexpected errors (the database is down) are raised, not returned."""
    from .email_reply import InboundEmailError, parse_inbound, reply_target

    if not raw:
        return _refuse(400, "bad_email", "the body must be a raw RFC 822 message")
    if len(raw) > MAX_EMAIL_BYTES:
        return _refuse(413, "too_large", f"an inbound email is at most {MAX_EMAIL_BYTES} bytes")
    try:
        mail = parse_inbound(raw)
    except InboundEmailError as e:
        return _refuse(413 if e.code == "too_large" else 400, e.code, e.message)
    addresses = list(recipients) if recipients is not None else list(mail.to)
    targets = [t for t in (reply_target(a) for a in addresses) if t is not None]
    if not targets:
        return _refuse(404, "unknown_address", "no reply+CHAT.SIGNATURE address among the recipients",
                       f"to {addresses} from {mail.from_addr}")
    chat_id, sig = targets[0]
    if not hmac.compare_digest(sig, signature(chat_id, settings["SECRET_KEY"])):
        return _refuse(403, "forged_address", "the reply address was not issued by this server",
                       f"forged reply address for chat {chat_id} from {mail.from_addr}")
    with runtime.db.connect() as conn:
        if not conn.execute(select(S.chats.c.id).where(S.chats.c.id == chat_id)).first():
            return _refuse(404, "unknown_chat", "the chat of this reply address no longer exists",
                           f"chat {chat_id} from {mail.from_addr}")
    if mail.auto_submitted:
        # kept for agents (a bounce says the address is wrong), never as the customer's answer
        text = mail.text.strip() or mail.subject.strip() or "(automatic reply)"
        try:
            runtime.command("email_reply", chat_id, text=text, subject=_subject(mail.subject), auto_reply=True)
        except CommandRefused as e:
            return _refuse(REFUSAL_STATUS.get(e.code, 400), e.code, e.message, f"chat {chat_id} from {mail.from_addr}")
        runtime.after_change()
        log.info("inbound automatic reply for chat %s kept (%s)", chat_id, mail.from_addr)
        return 202, {"chat_id": chat_id, "accepted": True, "auto_reply": True}
    if not mail.text.strip():
        return _refuse(422, "empty_reply", "the email has no text of its own after quotes are removed",
                       f"chat {chat_id} from {mail.from_addr}")
    try:
        runtime.command("email_reply", chat_id, text=mail.text.strip(), subject=_subject(mail.subject))
    except CommandRefused as e:
        return _refuse(REFUSAL_STATUS.get(e.code, 400), e.code, e.message, f"chat {chat_id} from {mail.from_addr}")
    runtime.after_change()
    return 201, {"chat_id": chat_id, "accepted": True}


def _subject(subject: str) -> str | None:
    """The Subject line as ``message.subject`` holds it: at most one header line's length."""
    from engine.commands import MAX_SUBJECT

    return subject[:MAX_SUBJECT] or None


def _refuse(status: int, code: str, message: str, about: str = "") -> tuple[int, dict]:
    log.warning("inbound email refused (%s): %s%s", code, message, f"; {about}" if about else "")
    return status, {"error": code, "message": message, "details": {}}
