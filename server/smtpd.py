"""Inbound SMTP (``chatflow smtpd``): customers' answers to chat emails, received directly
instead of through a provider's webhook to ``POST /api/inbound-email``.

Only ``reply+<chat>.<signature>@<EMAIL_DOMAIN>`` recipients are accepted at RCPT TO, so
the server is no open relay and refuses mail for anyone else before the message is sent.
The message itself goes through ``api_inbound.accept_inbound``, the endpoint's own code,
and its outcome becomes the SMTP reply:

- accepted, or an automatic reply kept for agents: 250
- no reply address, a forged one, or its chat is gone: 550
- cannot be read, has no text of its own, refused by the chat: 554
- too large: 552
- anything unexpected (the database is down): 451, so the sending server retries later
"""
from __future__ import annotations

import asyncio
import logging

from .api_inbound import MAX_EMAIL_BYTES, accept_inbound
from .email_reply import reply_target

log = logging.getLogger("chatflow.smtpd")

# the SMTP reply for each refusal code of accept_inbound (codes not listed: 554)
REFUSALS = {
    "unknown_address": "550 5.1.1 No reply address of this server among the recipients",
    "forged_address": "550 5.7.1 This reply address was not issued by this server",
    "unknown_chat": "550 5.1.1 The chat of this reply address no longer exists",
    "too_large": f"552 5.3.4 An answer is at most {MAX_EMAIL_BYTES} bytes",
    "bad_email": "554 5.6.0 The message cannot be read as an email",
    "empty_reply": "554 5.6.0 The message has no text of its own after quotes are removed",
}


class InboundHandler:
    """aiosmtpd handler: RCPT TO is checked against the reply-address shape and
    ``EMAIL_DOMAIN``; DATA is judged by ``accept_inbound`` on a worker thread (it runs
    the database and the rules, which must not block the SMTP event loop)."""

    def __init__(self, runtime, settings: dict):
        self.runtime = runtime
        self.settings = settings
        self.domain = settings["EMAIL_DOMAIN"].lower()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self._is_reply_address(address):
            log.warning("smtp RCPT TO %r refused from %s: not a reply address of %s",
                        address, _peer(session), self.domain)
            return "550 5.1.1 Not a reply address of this server"
        if address.lower() in (a.lower() for a in envelope.rcpt_tos):
            return "250 2.1.5 OK"
        if envelope.rcpt_tos:
            # one chat per message, so each answer gets its own verdict; 452 makes the
            # sending server deliver the other recipients in another transaction (RFC 5321 4.5.3.1.10)
            log.warning("smtp RCPT TO %r deferred from %s: one reply address per message", address, _peer(session))
            return "452 4.5.3 One reply address per message; send the others separately"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        try:
            status, payload = await loop.run_in_executor(
                None, accept_inbound, self.runtime, self.settings, raw, list(envelope.rcpt_tos))
        except Exception:  # not the message's fault: say so, and the sender retries
            log.exception("smtp message from %s to %s not processed", _peer(session), envelope.rcpt_tos)
            return "451 4.3.0 Temporary failure; try again later"
        return smtp_reply(status, payload)

    def _is_reply_address(self, address: str) -> bool:
        if reply_target(address) is None:
            return False
        return address.rpartition("@")[2].lower() == self.domain


def smtp_reply(status: int, payload: dict) -> str:
    """The SMTP reply line for an ``accept_inbound`` outcome (refusals were logged there)."""
    if status < 300:
        if payload.get("auto_reply"):
            return f"250 2.0.0 OK: automatic reply kept in chat {payload['chat_id']}"
        return f"250 2.0.0 OK: added to chat {payload['chat_id']}"
    return REFUSALS.get(payload.get("error"), "554 5.7.0 The chat refused this answer")


def make_controller(runtime, settings: dict, host: str = "127.0.0.1", port: int = 2525):
    """An aiosmtpd Controller (not started) serving ``InboundHandler`` on host:port. The
    size limit is announced in EHLO (SIZE) and enforced by aiosmtpd with a 552."""
    from aiosmtpd.controller import Controller

    return Controller(InboundHandler(runtime, settings), hostname=host, port=port,
                      server_hostname=settings["EMAIL_DOMAIN"], data_size_limit=MAX_EMAIL_BYTES,
                      enable_SMTPUTF8=True)


def _peer(session) -> str:
    peer = getattr(session, "peer", None)
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
