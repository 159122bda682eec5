"""How chats and messages read in JSON, for customers and for agents.

The customer's view is built only from ``engine.commands.customer_view``: public
messages, edited text, nothing deleted, never a note.
"""
from __future__ import annotations

from engine.commands import customer_view


def public_ranks(chat) -> dict:
    """position -> 1-based rank among the chat's public-kind messages. Customers see
    messages by rank, never by position, so gaps cannot reveal that notes exist."""
    ranks, n = {}, 0
    for m in chat.messages:
        if m.kind == "reply" and not m.auto_reply:
            n += 1
            ranks[m.position] = n
    return ranks


def customer_message(m, rank: int, chat_id: str) -> dict:
    return {
        "id": f"{chat_id}:r{rank}",
        "author": m.author,
        "author_id": m.author_id if m.author == "agent" else None,
        "text": m.text,
        "via": m.via if m.author == "customer" else None,
        "at": m.at,
        "edited": m.edited_at is not None,
    }


def customer_chat(chat) -> dict:
    visible = customer_view(chat)
    ranks = public_ranks(chat)
    return {
        "id": chat.id,
        # pending and snoozed are the team's own workflow: the customer sees an open chat
        "status": "closed" if chat.status == "closed" else "open",
        "messages": [customer_message(m, ranks[m.position], chat.id) for m in visible],
        "unread": sum(1 for m in visible if m.author != "customer" and m.position > chat.customer_read),
    }


def agent_message(m) -> dict:
    return {
        "id": m.id,
        "position": m.position + 1,
        "author": m.author,
        "author_id": m.author_id,
        "kind": m.kind,
        "text": None if m.deleted else m.text,
        "deleted": m.deleted,
        "edited": m.edited_at is not None,
        "via": m.via,
        "at": m.at,
        "mentions": list(m.mentions),
        "article": m.article,
        "subject": m.subject,
        "auto_reply": m.auto_reply,
    }


def agent_chat(chat, agent_id: str, with_messages: bool = False) -> dict:
    read_upto = chat.agent_read.get(agent_id, -1)
    out = {
        "id": chat.id,
        "channel": chat.channel,
        "status": chat.status,
        "snoozed_until": chat.snoozed_until,
        "page_url": chat.page_url,
        "assignee": chat.assignee,
        "department": chat.department,
        "subscribers": list(chat.subscribers),
        "subscribed": agent_id in chat.subscribers,
        "tags": list(chat.tags),
        "priority": chat.priority,
        "locked_by": chat.locked_by,
        "fields": dict(chat.fields),
        "customer": {"id": chat.customer.id, "name": chat.customer.name, "email": chat.customer.email,
                     "online": chat.customer.online, "phone": chat.customer.phone,
                     "country": chat.customer.country, "city": chat.customer.city,
                     "company": chat.customer.company},
        "created_at": chat.created_at,
        "last_activity_at": chat.last_activity_at,
        "unread": sum(1 for m in chat.messages
                      if m.author == "customer" and not m.deleted and m.position > read_upto),
        "message_count": len(chat.messages),
    }
    if with_messages:
        out["messages"] = [agent_message(m) for m in chat.messages]
    return out
