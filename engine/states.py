"""The states of SPEC §3.2, computed from a chat: when each last became true.

``state_since(chat, name)`` is the state's anchor — the instant it last became true — or
None while it is false. A state rule's ``STATE for D`` holds from ``anchor + D``; when an
anchor moves (a new assignee, a newer agent reply) the old episode has ended and a new one
starts, which is how the evaluator re-arms its deadline.

Messages count as they stand now: a deleted message is as if it had never been sent, and
private notes never count. Only the agent's own replies answer the customer; a rule's bot
replies neither answer nor wait (SPEC §3.6).
"""
from __future__ import annotations

from dsl.vocabulary import STATES

from .model import Chat


# Messages are appended in time order and a message's position is its index, so each
# state reads from the end (or from a read position) instead of scanning the whole chat:
# simulations call these at every event.


def chat_open(chat: Chat) -> float | None:
    return chat.opened_at if chat.status == "open" else None


def chat_closed(chat: Chat) -> float | None:
    return chat.closed_at if chat.status == "closed" else None


def chat_pending(chat: Chat) -> float | None:
    return chat.pending_at if chat.status == "pending" else None


def chat_snoozed(chat: Chat) -> float | None:
    return chat.snoozed_at if chat.status == "snoozed" else None


def chat_idle(chat: Chat) -> float | None:
    """While open: since the last public message (customer, agent or bot), and never
    before the chat was (re)opened, so reopening starts the silence afresh."""
    if chat.status != "open":
        return None
    last = chat.created_at
    for m in reversed(chat.messages):
        if m.public:
            last = m.at
            break
    return max(last, chat.opened_at)


def chat_unassigned(chat: Chat) -> float | None:
    return chat.unassigned_at if chat.assignee is None else None


def chat_assigned(chat: Chat) -> float | None:
    """Since the chat got its current assignee (a new assignee starts a new episode)."""
    return chat.assigned_at if chat.assignee is not None else None


def chat_awaiting_agent(chat: Chat) -> float | None:
    """Since the first customer message after the last agent reply."""
    since = None
    for m in reversed(chat.messages):
        if not m.public:
            continue
        if m.author == "agent":
            break
        if m.author == "customer":
            since = m.at  # going back: the earliest one after the last agent reply wins
    return since


def chat_awaiting_customer(chat: Chat) -> float | None:
    """Since the latest agent reply, unless the customer wrote after it."""
    for m in reversed(chat.messages):
        if m.public and m.author in ("agent", "customer"):
            return m.at if m.author == "agent" else None
    return None


def chat_unread_by_assignee(chat: Chat) -> float | None:
    """Since the oldest customer message after the assignee's read position."""
    if chat.assignee is None:
        return None
    return _first_after(chat, chat.read_position(chat.assignee), "customer")


def chat_unread_by_customer(chat: Chat) -> float | None:
    """Since the oldest agent reply after the customer's read position."""
    return _first_after(chat, chat.customer_read, "agent")


def _first_after(chat: Chat, seen: int, author: str) -> float | None:
    """Time of the first public message by ``author`` after position ``seen``."""
    messages = chat.messages
    for i in range(max(seen + 1, 0), len(messages)):
        m = messages[i]
        if m.author == author and m.public:
            return m.at
    return None


def chat_locked(chat: Chat) -> float | None:
    return chat.locked_at if chat.locked_by is not None else None


def customer_online(chat: Chat) -> float | None:
    return chat.customer.online_since if chat.customer.online else None


def customer_offline(chat: Chat) -> float | None:
    return chat.customer.offline_since if not chat.customer.online else None


STATE_FUNCS = {
    "chat.open": chat_open,
    "chat.closed": chat_closed,
    "chat.pending": chat_pending,
    "chat.snoozed": chat_snoozed,
    "chat.idle": chat_idle,
    "chat.unassigned": chat_unassigned,
    "chat.assigned": chat_assigned,
    "chat.awaiting_agent": chat_awaiting_agent,
    "chat.awaiting_customer": chat_awaiting_customer,
    "chat.unread_by_assignee": chat_unread_by_assignee,
    "chat.unread_by_customer": chat_unread_by_customer,
    "chat.locked": chat_locked,
    "customer.online": customer_online,
    "customer.offline": customer_offline,
}
assert set(STATE_FUNCS) == set(STATES), "every state of the vocabulary has a function"


def state_since(chat: Chat, name: str) -> float | None:
    """The instant state ``name`` last became true for ``chat``, or None while false."""
    return STATE_FUNCS[name](chat)
