"""The customer widget API: start a chat (→ a per-chat token), send and list messages,
mark them read, report presence. A customer sees public messages only."""
from __future__ import annotations

import secrets

from flask import Blueprint, current_app, jsonify
from sqlalchemy import select

from engine.model import CommandRefused
from engine.snapshot import chat_from_dict

from . import ratelimit
from . import store as S
from .http import ApiError, body, customer_chat, customer_token_hash
from .views import customer_chat as customer_chat_json

bp = Blueprint("widget", __name__, url_prefix="/api/widget")


def _runtime():
    return current_app.extensions["chatflow"]


def _chat_json(chat_id: str) -> dict:
    with _runtime().db.connect() as conn:
        row = conn.execute(select(S.chats.c.state).where(S.chats.c.id == chat_id)).first()
    return customer_chat_json(chat_from_dict(row[0]))


@bp.post("/chats")
def start_chat():
    ratelimit.start_chat()
    data = body("StartChat")
    token = secrets.token_urlsafe(32)
    chat_id = "c_" + secrets.token_hex(8)
    customer = dict(data.get("customer") or {})
    customer.setdefault("id", "u_" + secrets.token_hex(8))
    _runtime().start_chat(chat_id, S.token_hash(token), customer=customer, channel=data.get("channel", "widget"),
                          page_url=data.get("page_url"), text=data["text"], fields=data.get("fields"))
    _runtime().after_change()
    return jsonify({"chat": _chat_json(chat_id), "token": token}), 201


@bp.get("/chats/<chat_id>")
def get_chat(chat_id):
    customer_chat(chat_id)
    return jsonify(_chat_json(chat_id))


@bp.get("/chats/<chat_id>/messages")
def list_messages(chat_id):
    customer_chat(chat_id)
    return jsonify({"messages": _chat_json(chat_id)["messages"]})


@bp.post("/chats/<chat_id>/messages")
def send_message(chat_id):
    token_hash = customer_token_hash()
    data = body("CustomerMessage")
    return jsonify(_command(chat_id, token_hash, "customer_message", text=data["text"], via="widget")), 201


@bp.post("/chats/<chat_id>/read")
def read(chat_id):
    return jsonify(_command(chat_id, customer_token_hash(), "customer_reads"))


@bp.post("/chats/<chat_id>/presence")
def presence(chat_id):
    token_hash = customer_token_hash()
    data = body("Presence")
    return jsonify(_command(chat_id, token_hash, "customer_returns" if data["online"] else "customer_leaves"))


def _command(chat_id: str, token_hash: str, command: str, **args) -> dict:
    """Run a customer's command on the chat its token opens (checked in the command's own
    transaction: a wrong token is ``unknown_chat``), and answer with the chat it left."""
    runtime = _runtime()
    ratelimit.customer(token_hash)
    try:
        _, chat = runtime.run_command(command, chat_id, token_hash=token_hash, **args)
    except CommandRefused as e:
        if e.code == "unknown_chat":  # the same answer customer_chat gives: nothing to probe
            ratelimit.token_refused()
            raise ApiError(404, "unknown_chat", "no such chat for this token") from None
        raise
    runtime.after_change()
    return customer_chat_json(chat)
