"""Chats, agents and events as plain JSON-able dicts and back, so the service can store a
chat in one row and rebuild the same objects the engine works on."""
from __future__ import annotations

import dataclasses
from operator import attrgetter

from .model import Agent, Chat, Customer, Event, Message


_CHAT_FIELDS = tuple(f.name for f in dataclasses.fields(Chat))
_CUSTOMER_FIELDS = tuple(f.name for f in dataclasses.fields(Customer))
_MESSAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Message))
_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(Event))
_message_values = attrgetter(*_MESSAGE_FIELDS)  # one C call for a message's fields, in order


def chat_to_dict(chat: Chat) -> dict:
    """The chat as JSON-able data (what ``dataclasses.asdict`` gives, with ``muted``
    sorted), built field by field: asdict's deep copies cost more than the rules. The
    result shares the chat's inner lists and dicts: store or serialise it, do not keep it."""
    d = {name: getattr(chat, name) for name in _CHAT_FIELDS}
    d["customer"] = {name: getattr(chat.customer, name) for name in _CUSTOMER_FIELDS}
    d["messages"] = [dict(zip(_MESSAGE_FIELDS, _message_values(m))) for m in chat.messages]
    d["muted"] = sorted(chat.muted)
    return d


def chat_from_dict(d: dict) -> Chat:
    d = dict(d)
    customer = Customer(**d.pop("customer"))
    messages = [Message(**m) for m in d.pop("messages")]
    for m in messages:  # JSON gave a list
        if type(m.mentions) is not tuple:
            m.mentions = tuple(m.mentions or ())
    muted = set(d.pop("muted") or ())
    agent_read = {k: int(v) for k, v in (d.pop("agent_read") or {}).items()}
    return Chat(customer=customer, messages=messages, muted=muted, agent_read=agent_read, **d)


def agent_from_row(row: dict) -> Agent:
    channels = row.get("channels")
    return Agent(row["id"], row.get("name"), tuple(row.get("departments") or ()), bool(row.get("access_chats", True)),
                 tuple(channels) if channels is not None else None, row.get("status") or "online",
                 row.get("max_chats"), row.get("capacity"), row.get("email"), dict(row.get("notifications") or {}))


def event_to_dict(e: Event) -> dict:
    return {name: getattr(e, name) for name in _EVENT_FIELDS}


def event_from_dict(d: dict) -> Event:
    return Event(**d)
