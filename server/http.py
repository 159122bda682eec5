"""What every endpoint shares: JSON errors, request-body validation against
``schemas/api.schema.json``, and who is asking (agent bearer token or customer chat token).

Every error a client can cause is a 4xx JSON ``{error, message, details}``; the domain's
refusals keep their codes (``not_joined``, ``locked`` …).
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import orjson
from flask import current_app, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from jsonschema import Draft202012Validator
from sqlalchemy import select

from engine.model import CommandRefused

from . import ratelimit
from . import store as S

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "api.schema.json"

class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, written and read with orjson: every answer to a customer message
    carries the whole public chat, and json took 15 times longer to write it. Keys sorted
    and the output compact, as Flask's own; what orjson cannot write (a type it does not
    know, pretty-printing asked for) goes to Flask's provider; reading is store.json_loads."""

    # dates as Flask writes them (HTTP dates), through its default
    _OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME

    def dumps(self, obj, **kwargs) -> str:
        if not kwargs or kwargs == {"separators": (",", ":")}:  # compact, as every answer is
            try:
                return orjson.dumps(obj, default=self.default, option=self._OPTIONS).decode()
            except TypeError:
                pass
        return super().dumps(obj, **kwargs)

    def loads(self, s, **kwargs):
        return S.json_loads(s) if not kwargs else super().loads(s, **kwargs)


# HTTP status for each refusal code of the domain.
REFUSAL_STATUS = {
    "not_joined": 403, "not_author": 403, "locked": 409, "no_access": 404, "unknown_chat": 404,
    "unknown_agent": 404, "unknown_message": 404, "message_deleted": 409, "chat_closed": 409,
    "chat_open": 409, "chat_exists": 409, "agent_exists": 409, "bad_request": 400, "unknown_schedule": 400,
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details=None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(status: int, code: str, message: str, details=None):
    resp = jsonify({"error": code, "message": message, "details": details if details is not None else {}})
    resp.status_code = status
    return resp


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=64)
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$defs": _schema()["$defs"], "$ref": f"#/$defs/{name}"})


def body(schema_name: str) -> dict:
    """The request's JSON body, validated against ``$defs/schema_name``."""
    if not request.is_json:
        if request.get_data(cache=True):
            raise ApiError(415, "unsupported_media_type", "send a JSON body with Content-Type: application/json")
        data = {}
    else:
        data = request.get_json(silent=True)
        if data is None:
            raise ApiError(400, "invalid_json", "the body is not valid JSON")
    _no_nul(data)
    errors = sorted(_validator(schema_name).iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(body)"
        raise ApiError(400, "invalid_request", f"{where}: {first.message}",
                       {"errors": [{"path": "/".join(str(p) for p in e.absolute_path), "message": e.message}
                                   for e in errors[:20]]})
    return data


MAX_ID = 2**62


def id_param(raw: str | None, name: str) -> int | None:
    """A non-negative integer query/header value (ASCII digits, bounded), or ApiError 400."""
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"[0-9]{1,18}", raw) or int(raw) >= MAX_ID:
        raise ApiError(400, "invalid_request", f"{name} is a non-negative integer")
    return int(raw)


def _no_nul(value, path="") -> None:
    """PostgreSQL text cannot hold NUL characters: refuse them in a body up front."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ApiError(400, "invalid_request", f"{path or '(body)'}: NUL characters are not allowed")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_nul(k, path)
            _no_nul(v, f"{path}/{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_nul(v, f"{path}/{i}")


def refused(e: CommandRefused):
    return error_response(REFUSAL_STATUS.get(e.code, 400), e.code, e.message)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip() or None
    return None


def current_agent(required: bool = True):
    """The agent row of the bearer token, or ApiError 401."""
    if "agent" in g:
        return g.agent
    token = _bearer()
    row = None
    if token:
        with current_app.extensions["chatflow"].db.connect() as conn:
            row = conn.execute(select(S.agents).where(S.agents.c.token_hash == S.token_hash(token))).mappings().first()
        if row is None:
            ratelimit.token_refused()
    if row is None and required:
        raise ApiError(401, "unauthorized", "an agent token is required (Authorization: Bearer TOKEN)")
    g.agent = dict(row) if row else None
    return g.agent


def require_admin():
    agent = current_agent()
    if not agent["is_admin"]:
        raise ApiError(403, "forbidden", "this needs an admin token")
    return agent


def customer_token_hash() -> str:
    """The hash of the request's customer chat token, or ApiError 401 when there is none.
    Commands check it against the chat inside their own transaction."""
    token = _bearer() or request.headers.get("X-Chat-Token")
    if not token:
        raise ApiError(401, "unauthorized", "the chat token is required (Authorization: Bearer TOKEN)")
    return S.token_hash(token)


def customer_chat(chat_id: str) -> dict:
    """The chat row a customer token opens; the token opens exactly one chat."""
    hashed = customer_token_hash()
    with current_app.extensions["chatflow"].db.connect() as conn:
        row = conn.execute(select(S.chats).where(S.chats.c.token_hash == hashed)).mappings().first()
    if row is None or row["id"] != chat_id:
        # the same answer for a wrong token and another chat's token: nothing to probe
        ratelimit.token_refused()
        raise ApiError(404, "unknown_chat", "no such chat for this token")
    return dict(row)
