"""The agent API (bearer token): the chats an agent sees, the commands of SPEC §2 on
them, notifications, canned responses, articles and the agent's own preferences.

An agent without ``access_chats`` sees no chats; a chat outside an agent's channels
answers 404 as if it did not exist.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select, update

from dsl.vocabulary import STATUSES
from engine.model import CommandRefused
from engine.snapshot import agent_from_row, chat_from_dict

from . import search
from . import store as S
from .http import ApiError, body, current_agent, id_param
from .views import agent_chat

bp = Blueprint("agent", __name__, url_prefix="/api")

SIMPLE_COMMANDS = ("join", "read", "subscribe", "unsubscribe", "lock", "unlock", "close", "reopen")


def _runtime():
    return current_app.extensions["chatflow"]


def _visible_chat(chat_id: str, me: dict):
    with _runtime().db.connect() as conn:
        row = conn.execute(select(S.chats.c.state).where(S.chats.c.id == chat_id)).first()
    if row is None:
        raise CommandRefused("unknown_chat", f"no chat {chat_id!r}")
    chat = chat_from_dict(row[0])
    if not agent_from_row(me).sees(chat):
        # the same answer as for a chat that does not exist: nothing to probe
        raise CommandRefused("unknown_chat", f"no chat {chat_id!r}")
    return chat


@bp.get("/chats")
def list_chats():
    me = current_agent()
    agent = agent_from_row(me)
    if not agent.access_chats:
        return jsonify({"chats": []})
    status = request.args.get("status")
    if status not in (None, *STATUSES):
        raise ApiError(400, "invalid_request", "status is " + ", ".join(STATUSES[:-1]) + " or " + STATUSES[-1])
    q = select(S.chats.c.state).order_by(S.chats.c.updated_at.desc())
    if status:
        q = q.where(S.chats.c.status == status)
    if agent.channels is not None:
        q = q.where(S.chats.c.channel.in_(agent.channels))
    with _runtime().db.connect() as conn:
        rows = conn.execute(q.limit(500)).all()
    chats = [chat_from_dict(r[0]) for r in rows]
    return jsonify({"chats": [agent_chat(c, me["id"]) for c in chats if agent.sees(c)]})


@bp.get("/chats/<chat_id>")
def get_chat(chat_id):
    me = current_agent()
    return jsonify(agent_chat(_visible_chat(chat_id, me), me["id"], with_messages=True))


@bp.post("/chats/<chat_id>/<command>")
def simple_command(chat_id, command):
    me = current_agent()
    if command not in SIMPLE_COMMANDS:
        raise ApiError(404, "not_found", f"no command `{command}`",
                       {"commands": list(SIMPLE_COMMANDS) + ["reply", "note", "assign", "tag", "untag", "priority",
                                                             "snooze", "status"]})
    _visible_chat(chat_id, me)
    _runtime().command(command, chat_id, agent=me["id"])
    return _after(chat_id, me)


# The chat commands that take a JSON body and pass its fields on as they are: URL path ->
# (the engine's command, also the endpoint's name; the body's schema; {the command's
# argument: the body's field}; the status on success). Snooze's body is {"for": "2h"},
# {"until": EPOCH_SECONDS} or {"until_next": "SCHEDULE"} (a schedule of the active rule
# set: until it next opens).
BODY_COMMANDS = {
    "reply": ("reply", "Reply", {"text": "text", "canned": "canned", "article": "article"}, 201),
    "note": ("note", "Note", {"text": "text"}, 201),
    "tag": ("tag", "Tag", {"tag": "tag"}, 200),
    "untag": ("untag", "Tag", {"tag": "tag"}, 200),
    "priority": ("set_priority", "SetPriority", {"priority": "priority"}, 200),
    "snooze": ("snooze", "Snooze", {"duration": "for", "until": "until", "until_next": "until_next"}, 200),
    "status": ("set_status", "SetStatus", {"status": "status"}, 200),
}


def _body_command(command, schema, fields, status):
    def view(chat_id):
        me = current_agent()
        data = body(schema)
        _visible_chat(chat_id, me)
        _runtime().command(command, chat_id, agent=me["id"], **{arg: data.get(f) for arg, f in fields.items()})
        return _after(chat_id, me, status)
    return view


for _path, (_command, *_how) in BODY_COMMANDS.items():
    bp.add_url_rule(f"/chats/<chat_id>/{_path}", _command, _body_command(_command, *_how), methods=["POST"])


@bp.post("/chats/<chat_id>/assign")
def assign(chat_id):
    me = current_agent()
    data = body("Assign")
    _visible_chat(chat_id, me)
    args = {"by": me["id"], "agent": data.get("agent"), "department": data.get("department")}
    if data.get("by"):
        args["strategy"] = data["by"]
    _runtime().command("assign", chat_id, **args)
    return _after(chat_id, me)


@bp.patch("/chats/<chat_id>/messages/<int(max=1000000000):position>")
def edit_message(chat_id, position):
    me = current_agent()
    data = body("EditMessage")
    _visible_chat(chat_id, me)
    _runtime().command("edit_message", chat_id, agent=me["id"], message=position, text=data["text"])
    return _after(chat_id, me)


@bp.delete("/chats/<chat_id>/messages/<int(max=1000000000):position>")
def delete_message(chat_id, position):
    me = current_agent()
    _visible_chat(chat_id, me)
    _runtime().command("delete_message", chat_id, agent=me["id"], message=position)
    return _after(chat_id, me)


def _after(chat_id, me, status=200):
    _runtime().after_change()
    return jsonify(agent_chat(_visible_chat(chat_id, me), me["id"], with_messages=True)), status


@bp.get("/notifications")
def notifications():
    me = current_agent()
    q = select(S.notifications).where(S.notifications.c.agent_id == me["id"]).order_by(S.notifications.c.id)
    if request.args.get("unread") in ("1", "true"):
        q = q.where(S.notifications.c.read.is_(False))
    after = id_param(request.args.get("after"), "after")
    if after is not None:
        q = q.where(S.notifications.c.id > after)
    with _runtime().db.connect() as conn:
        rows = conn.execute(q.limit(1000)).mappings().all()
    return jsonify({"notifications": [
        {"id": r["id"], "chat_id": r["chat_id"], "template": r["template"], "text": r["text"],
         "rule": r["rule"], "at": r["at"], "read": r["read"]} for r in rows]})


@bp.post("/notifications/read")
def notifications_read():
    me = current_agent()
    with _runtime().db.begin() as conn:
        conn.execute(update(S.notifications).where(S.notifications.c.agent_id == me["id"]).values(read=True))
    return jsonify({"ok": True})


@bp.get("/me")
def get_me():
    me = current_agent()
    return jsonify(_me_json(me))


@bp.patch("/me")
def patch_me():
    me = current_agent()
    data = body("Me")
    own = {k: data[k] for k in ("reply_shortcut", "email") if k in data}
    if own:
        with _runtime().db.begin() as conn:
            conn.execute(update(S.agents).where(S.agents.c.id == me["id"]).values(**own))
    if "status" in data:
        _runtime().command("agent_status", None, agent=me["id"], status=data["status"])
        _runtime().after_change()
    with _runtime().db.connect() as conn:
        row = conn.execute(select(S.agents).where(S.agents.c.id == me["id"])).mappings().first()
    return jsonify(_me_json(dict(row)))


def _me_json(row) -> dict:
    return {k: row[k] for k in ("id", "name", "departments", "access_chats", "channels", "status", "max_chats",
                                "is_admin", "reply_shortcut", "email")}


# templates an agent can choose for: the product's own, and `notification` (a rule's
# `notify` without `template`); rules may name others, which may be set too
PREFERENCE_TEMPLATES = ("new_chat", "new_message", "assigned", "mention", "unread_messages", "unattended",
                        "notification")


def _preferences_json(row) -> dict:
    prefs = dict(row["notifications"] or {})
    agent = agent_from_row(dict(row))
    names = list(PREFERENCE_TEMPLATES) + sorted(t for t in prefs if t not in PREFERENCE_TEMPLATES and t != "*")
    return {"notifications": prefs, "default": prefs.get("*", "in_app"), "email": row["email"],
            "effective": {t: agent.notification_channel(t) for t in names}}


@bp.get("/me/preferences")
def get_preferences():
    me = current_agent()
    return jsonify(_preferences_json(me))


@bp.patch("/me/preferences")
def patch_preferences():
    """Set how templates reach this agent (merged into what is set; null removes one).
    ``email`` needs an email address on the agent (PATCH /api/me {email})."""
    me = current_agent()
    data = body("Preferences")
    with _runtime().db.begin() as conn:
        row = conn.execute(select(S.agents).where(S.agents.c.id == me["id"]).with_for_update()
                           if conn.dialect.name == "postgresql" else
                           select(S.agents).where(S.agents.c.id == me["id"])).mappings().first()
        prefs = dict(row["notifications"] or {})
        for template, channel in data["notifications"].items():
            if channel is None:
                prefs.pop(template, None)
            else:
                prefs[template] = channel
        if "email" in prefs.values() and not row["email"]:
            raise ApiError(409, "no_email", "set an email address first (PATCH /api/me {\"email\": …}) to get "
                           "notifications by email")
        conn.execute(update(S.agents).where(S.agents.c.id == me["id"]).values(notifications=prefs))
        row = conn.execute(select(S.agents).where(S.agents.c.id == me["id"])).mappings().first()
    return jsonify(_preferences_json(row))


@bp.get("/agents")
def list_agents():
    """The operators (agents with access_chats): whom a note can @mention and a chat be
    assigned to. Ids, names, departments and status only."""
    current_agent()
    with _runtime().db.connect() as conn:
        rows = conn.execute(select(S.agents.c.id, S.agents.c.name, S.agents.c.departments, S.agents.c.status)
                            .where(S.agents.c.access_chats.is_(True)).order_by(S.agents.c.id)).mappings().all()
    return jsonify({"agents": [dict(r) for r in rows]})


@bp.get("/canned")
def list_canned():
    current_agent()
    with _runtime().db.connect() as conn:
        rows = conn.execute(select(S.canned).order_by(S.canned.c.shortcut)).mappings().all()
    return jsonify({"canned": [dict(r) for r in rows]})


@bp.get("/articles")
def search_articles():
    current_agent()
    q = request.args.get("q") or ""
    if len(q) > search.MAX_QUERY_CHARS:
        raise ApiError(400, "invalid_request", f"q is at most {search.MAX_QUERY_CHARS} characters")
    with _runtime().db.connect() as conn:
        return jsonify({"articles": search.search_articles(conn, q)})
