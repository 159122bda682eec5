"""What a ``webhook`` action sends: the event and a summary of the chat, as JSON data.

Built by the engine when the rule fires (so the body shows the chat as the rule saw it,
and a scenario can assert on it); the server only signs and posts it. Private notes never
appear: a webhook goes outside the team (SPEC §2.11), so only public messages are shown,
and an event about a note carries neither its text nor its mentions.
"""
from __future__ import annotations

from .model import Chat, Event, Message

# the newest public messages a body carries: a summary, not a transcript
LAST_MESSAGES = 5


def webhook_body(name: str, rule: str, at: float, chat: Chat, event: Event | None) -> dict:
    """The JSON body of one delivery of webhook ``name`` fired by ``rule``."""
    public = [m for m in chat.messages if m.public]
    return {
        "webhook": name,
        "rule": rule,
        "at": at,
        "event": _event(chat, event),
        "chat": {
            "id": chat.id, "channel": chat.channel, "status": chat.status, "assignee": chat.assignee,
            "department": chat.department, "priority": chat.priority, "tags": list(chat.tags),
            "fields": dict(chat.fields), "page_url": chat.page_url, "language": chat.language,
            "created_at": chat.created_at, "closed_at": chat.closed_at,
            "customer": {"id": chat.customer.id, "name": chat.customer.name, "email": chat.customer.email,
                         "language": chat.customer.language, "fields": dict(chat.customer.fields)},
            "message_count": len(public),
            "last_messages": [_message(m) for m in public[-LAST_MESSAGES:]],
        },
    }


def _event(chat: Chat, event: Event | None) -> dict | None:
    if event is None:  # a state rule fired at its deadline
        return None
    out = {"id": event.id, "type": event.type, "at": event.at, "actor": event.actor, "agent_id": event.agent_id,
           "rule": event.rule}
    if event.message_id is None:
        out["data"] = dict(event.data)
        return out
    message = next((m for m in chat.messages if m.id == event.message_id), None)
    if message is not None and message.public:
        out["message"] = _message(message)
        out["data"] = dict(event.data)
    # a note (or a message deleted since): nothing of it leaves, not even its id
    return out


def _message(m: Message) -> dict:
    return {"id": m.id, "author": m.author, "author_id": m.author_id, "text": m.text, "via": m.via, "at": m.at}
