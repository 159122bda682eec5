"""``POST /api/inbound-email``: a customer's answer to a chat email, as raw RFC 822.

The answer reaches its chat only through a ``reply+<chat>.<signature>@…`` address whose
signature the server made; a forged or unknown address is refused and logged, an
automatic reply or bounce is accepted and dropped (it never reopens a chat).
"""
from __future__ import annotations

import hmac
import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select

from . import store as S
from .http import ApiError
from .mail import signature

bp = Blueprint("inbound", __name__)
log = logging.getLogger("chatflow.inbound")

MAX_EMAIL_BYTES = 2 * 1024 * 1024


@bp.post("/api/inbound-email")
def inbound_email():
    from .email_reply import InboundEmailError, parse_inbound, reply_target

    runtime = current_app.extensions["chatflow"]
    expected = current_app.config.get("INBOUND_TOKEN")
    if expected:
        given = request.headers.get("Authorization", "")[7:]
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(401, "unauthorized", "the inbound token is required")
    raw = request.get_data(cache=False)
    if not raw:
        raise ApiError(400, "bad_email", "the body must be a raw RFC 822 message")
    if len(raw) > MAX_EMAIL_BYTES:
        raise ApiError(413, "too_large", f"an inbound email is at most {MAX_EMAIL_BYTES} bytes")
    try:
        mail = parse_inbound(raw)
    except InboundEmailError as e:
        raise ApiError(400, "bad_email", str(e)) from None
    targets = [t for t in (reply_target(a) for a in mail.to) if t is not None]
    if not targets:
        log.warning("inbound email to %s refused: no reply address", mail.to)
        raise ApiError(404, "unknown_address", "no reply+CHAT.SIGNATURE address among the recipients")
    chat_id, sig = targets[0]
    secret = current_app.config["SECRET_KEY"]
    if not hmac.compare_digest(sig, signature(chat_id, secret)):
        log.warning("inbound email refused: forged reply address for chat %s from %s", chat_id, mail.from_addr)
        raise ApiError(403, "forged_address", "the reply address was not issued by this server")
    with runtime.db.connect() as conn:
        if not conn.execute(select(S.chats.c.id).where(S.chats.c.id == chat_id)).first():
            raise ApiError(404, "unknown_chat", "the chat of this reply address no longer exists")
    if mail.auto_submitted:
        log.info("inbound automatic reply for chat %s dropped", chat_id)
        return jsonify({"chat_id": chat_id, "accepted": False, "reason": "automatic reply or bounce"}), 202
    if not mail.text.strip():
        raise ApiError(422, "empty_reply", "the email has no text of its own after quotes are removed")
    runtime.command("email_reply", chat_id, text=mail.text.strip())
    runtime.after_change()
    return jsonify({"chat_id": chat_id, "accepted": True}), 201
