"""Commands: every change to the domain, each returning the events it emits.

Two families share one set of internal mutations:

- **inputs** — one per scenario step of SPEC §4 (`start_chat`, `reply`, `join` …). They
  enforce the (core) permission lines of SPEC §2 and raise :class:`CommandRefused` with
  *nothing* changed: every function checks everything first and mutates after.
- **rule actions** — what the evaluator calls for a rule's ``then`` (`assign_agent`,
  `tag`, `bot_reply` …). No permission checks; ``actor="rule"`` and ``rule=RULE_ID``.
  A rule action that would change nothing emits nothing. ``close``, ``reopen``, ``lock``
  and ``unlock`` serve both families: passing ``rule=`` selects the rule behaviour.

Every function is ``(world, at, ...) -> list[Event]``; ``at`` is seconds since the epoch.

A command or action that changes any of a chat's status, priority, department, tags,
custom fields or assignee emits one ``chat.updated`` after its own events (if any), with
``data["changes"] = {field: [old, new]}`` (fields ``status priority department tags
assignee fields.NAME``) and ``data["events"]``, the types of those own events.
"""
from __future__ import annotations

import re

from dsl.vocabulary import AGENT_STATUSES, CHANNELS, SETTABLE_STATUSES, STRATEGIES

from .model import Chat, CommandRefused, Customer, Message, World
from .routing import has_free_capacity, note_pick, pick_agent, routing_of, waiting_chats, within_limit

CUSTOMER_KEYS = ("id", "name", "email", "fields", "language", "online", "phone", "country", "city", "company")
# the customer's profile texts: a string or none each
PROFILE_KEYS = ("phone", "country", "city", "company")
MAX_SUBJECT = 998  # RFC 5322's longest header line
_MENTION = re.compile(r"@([A-Za-z0-9_][A-Za-z0-9_.\-]*)")


# ---------------------------------------------------------------- shared internals

def _event(world: World, chat: Chat | None, type: str, at: float, actor: str, **kw):
    if chat is not None:
        chat.last_activity_at = at  # last_activity_at = the time of the chat's last event
    return world.new_event(type, at, chat.id if chat else None, actor, **kw)


# ---------------------------------------------------------------- chat.updated

_WATCHED = ("status", "priority", "department", "assignee")


def _watch(chat: Chat) -> tuple:
    """The fields a chat.updated reports, as they stand now (lists and mappings copied)."""
    return (chat.status, chat.priority, chat.department, chat.assignee, list(chat.tags), dict(chat.fields))


def _same(a, b) -> bool:
    # `true` is not `1`: a field set from 1 to true changed
    return type(a) is type(b) and a == b


def _changes(before: tuple, chat: Chat) -> dict:
    """{field: [old, new]} of each watched field that differs from ``before``."""
    changes = {}
    for key, old in zip(_WATCHED, before):
        new = getattr(chat, key)
        if not _same(old, new):
            changes[key] = [old, new]
    tags, fields = before[4], before[5]
    if tags != chat.tags:
        changes["tags"] = [tags, list(chat.tags)]
    if fields != chat.fields:
        for name in sorted(set(fields) | set(chat.fields)):
            old, new = fields.get(name), chat.fields.get(name)
            if not _same(old, new):
                changes[f"fields.{name}"] = [old, new]
    return changes


def _updated(world: World, chat: Chat, at: float, before: tuple | None, events: list, actor: str,
             by=None, rule=None) -> list:
    """``events`` followed by one chat.updated when a watched field changed since ``before``."""
    if before is None:
        return events
    changes = _changes(before, chat)
    if changes:
        events.append(_event(world, chat, "chat.updated", at, actor, agent_id=by, rule=rule,
                             data={"changes": changes, "events": [e.type for e in events]}))
    return events


def _seen_by(world: World, chat_id, agent_id) -> tuple[Chat, object]:
    """The chat and the agent acting on it; an agent acts only on chats it sees."""
    chat = world.chat(chat_id)
    agent = world.agent(agent_id)
    if not agent.sees(chat):
        raise CommandRefused("no_access", f"agent {agent.id!r} does not see chat {chat.id!r}")
    return chat, agent


def _text(value, what="text") -> str:
    if not isinstance(value, str) or not value.strip():
        raise CommandRefused("bad_request", f"{what} must be a non-empty string")
    return value


def _via_of(channel: str) -> str:
    return channel if channel in ("widget", "email") else "api"


def _mentions(world: World, text: str) -> tuple:
    """Ids of known agents written as ``@ID``, in order, once each. A sentence's final
    dot is not part of the id (``ask @bob.`` mentions bob)."""
    found = []
    for token in _MENTION.findall(text):
        for candidate in (token, token.rstrip(".-")):
            if candidate in world.agents:
                if candidate not in found:
                    found.append(candidate)
                break
    return tuple(found)


def _add_message(world, chat, at, author, author_id, kind, text, via, article=None) -> Message:
    mentions = _mentions(world, text) if kind == "note" else ()
    position = len(chat.messages)
    message = Message(f"{chat.id}:m{position + 1}", position, author, author_id, kind, text, via,
                      at, mentions, article=article)
    chat.messages.append(message)
    return message


def _subscribe(chat: Chat, agent_id: str) -> bool:
    if agent_id in chat.subscribers:
        return False
    chat.subscribers.append(agent_id)
    return True


def _end_lock(chat: Chat) -> str | None:
    holder = chat.locked_by
    chat.locked_by = chat.locked_at = None
    return holder


def _change_assignee(world: World, chat: Chat, agent_id: str | None, at: float) -> str | None:
    """Set the assignee with its anchors; the lock always belongs to the assignee, so a
    change of assignee ends it. Returns the holder of the lock that ended."""
    ended = _end_lock(chat) if chat.locked_by not in (None, agent_id) else None
    if chat.status == "open":
        world.count_open(chat.assignee, -1, chat.channel)
        world.count_open(agent_id, +1, chat.channel)
    chat.assignee = agent_id
    if agent_id is None:
        chat.unassigned_at, chat.assigned_at = at, None
    else:
        chat.assigned_at, chat.unassigned_at = at, None
    return ended


def _assign_to(world, chat, at, agent_id, actor, by=None, rule=None, extra=None) -> list:
    """Make ``agent_id`` the assignee. An agent's assignment subscribes and unmutes the
    assignee; a rule's subscribes it only when it has not unsubscribed (SPEC §2.7)."""
    if agent_id == chat.assignee:
        return []
    previous = chat.assignee
    ended = _change_assignee(world, chat, agent_id, at)
    if actor == "agent":
        chat.muted.discard(agent_id)
    if agent_id not in chat.muted:
        _subscribe(chat, agent_id)
    data = {"assignee": agent_id, "previous_assignee": previous, "ended_lock": ended, **(extra or {})}
    return [_event(world, chat, "chat.assigned", at, actor, agent_id=by, rule=rule, data=data)]


def _assign_department(world, chat, at, department, strategy, actor, by=None, rule=None) -> list:
    """SPEC §3.6: set the department; an online assignee of it stays; otherwise pick a free
    online agent; nobody free leaves the chat unassigned in that department."""
    _text(department, "department")
    if strategy not in STRATEGIES:
        raise CommandRefused("bad_request", f"strategy must be one of {', '.join(STRATEGIES)}")
    current = world.agents.get(chat.assignee)
    if current is not None and current.status == "online" and department in current.departments:
        chat.department = department
        return []
    picked = pick_agent(world, chat, department, strategy, at)
    chat.department = department
    if picked is not None:
        note_pick(world, department, picked, chat.id, at)
        return _assign_to(world, chat, at, picked, actor, by, rule, {"department": department})
    if chat.assignee is None:
        return []
    previous = chat.assignee
    ended = _change_assignee(world, chat, None, at)
    data = {"previous_assignee": previous, "department": department, "ended_lock": ended}
    return [_event(world, chat, "chat.unassigned", at, actor, agent_id=by, rule=rule, data=data)]


def _set_status(world: World, chat: Chat, status: str, at: float) -> str:
    """Move the chat to ``status`` with the anchors of its states; only open chats count
    towards the assignee's capacity. Returns the previous status."""
    previous = chat.status
    if previous == "open" and status != "open":
        world.count_open(chat.assignee, -1, chat.channel)
    elif previous != "open" and status == "open":
        world.count_open(chat.assignee, +1, chat.channel)
    chat.status = status
    if status == "open":
        chat.opened_at = at
    chat.closed_at = at if status == "closed" else None
    chat.pending_at = at if status == "pending" else None
    chat.snoozed_at = at if status == "snoozed" else None
    if status != "snoozed":
        chat.snoozed_until = None
    return previous


def _close(world, chat, at, actor, by=None, rule=None) -> list:
    previous = _set_status(world, chat, "closed", at)
    ended = _end_lock(chat)
    return [_event(world, chat, "chat.closed", at, actor, agent_id=by, rule=rule,
                   data={"ended_lock": ended, "previous_status": previous})]


def _reopen(world, chat, at, actor, by=None, rule=None, reason=None) -> list:
    """Any status but open → open; ``reason`` (``event.reason``) defaults to the actor."""
    previous = _set_status(world, chat, "open", at)
    return [_event(world, chat, "chat.reopened", at, actor, agent_id=by, rule=rule,
                   data={"reason": reason or actor, "previous_status": previous})]


def _snooze(world, chat, at, until, actor, by=None, rule=None) -> list:
    """Snooze until ``until`` (a snoozed chat's end moves, and a new episode starts)."""
    previous = _set_status(world, chat, "snoozed", at)
    chat.snoozed_until = until
    return [_event(world, chat, "chat.snoozed", at, actor, agent_id=by, rule=rule,
                   data={"until": until, "previous_status": previous})]


def _pending(world, chat, at, actor, by=None, rule=None) -> list:
    previous = _set_status(world, chat, "pending", at)
    return [_event(world, chat, "chat.pending", at, actor, agent_id=by, rule=rule,
                   data={"previous_status": previous})]


def _snooze_end(at: float, duration=None, until=None) -> float:
    """The instant a snooze ends: ``duration`` (seconds, or a duration text such as
    ``"2h"``) from now, or ``until`` (seconds since the epoch); exactly one, in the future."""
    if (duration is None) == (until is None):
        raise CommandRefused("bad_request", "snooze takes exactly one of a duration (for) or an end (until)")
    if duration is not None:
        if isinstance(duration, str):
            from dsl.parser import duration_seconds

            seconds = duration_seconds(duration[:40])
            if seconds is None or len(duration) > 40:
                raise CommandRefused("bad_request", f"{duration[:40]!r} is not a duration such as 30m, 2h or 1d")
            duration = seconds
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration <= MAX_SNOOZE:
            raise CommandRefused("bad_request", "a snooze lasts more than 0 seconds and at most 366 days")
        return at + duration
    if isinstance(until, bool) or not isinstance(until, (int, float)) or not at < until <= at + MAX_SNOOZE:
        raise CommandRefused("bad_request", "a snooze ends after now and within 366 days")
    return float(until)


MAX_SNOOZE = 366 * 86400


def _lock(world, chat, at, actor, by=None, rule=None) -> list:
    chat.locked_by, chat.locked_at = chat.assignee, at
    return [_event(world, chat, "chat.locked", at, actor, agent_id=by, rule=rule,
                   data={"locked_by": chat.assignee})]


def _unlock(world, chat, at, actor, by=None, rule=None) -> list:
    holder = _end_lock(chat)
    return [_event(world, chat, "chat.unlocked", at, actor, agent_id=by, rule=rule,
                   data={"locked_by": holder})]


def customer_view(chat: Chat) -> list[Message]:
    """Exactly what the widget shows, in order: public replies, not deleted, as edited.
    Private notes never appear (SPEC §2.11)."""
    return [m for m in chat.messages if m.public]


# ---------------------------------------------------------------- customer inputs

def start_chat(world: World, at: float, chat_id: str, customer: dict, channel: str = "widget",
               page_url=None, text=None, fields=None, department=None) -> list:
    """Open a chat → [chat.created]; its message is the first customer message, if any."""
    if not isinstance(chat_id, str) or not chat_id:
        raise CommandRefused("bad_request", "a chat needs a non-empty string id")
    if chat_id in world.chats:
        raise CommandRefused("chat_exists", f"chat {chat_id!r} already exists")
    if channel not in CHANNELS:
        raise CommandRefused("bad_request", f"channel must be one of {', '.join(CHANNELS)}")
    if not isinstance(customer, dict) or not isinstance(customer.get("id"), str) or not customer["id"]:
        raise CommandRefused("bad_request", "customer must be a mapping with a string id")
    unknown = sorted(set(customer) - set(CUSTOMER_KEYS))
    if unknown:
        raise CommandRefused("bad_request", f"unknown customer key {unknown[0]!r}")
    if fields is not None and not isinstance(fields, dict):
        raise CommandRefused("bad_request", "fields must be a mapping")
    for key in PROFILE_KEYS:
        if customer.get(key) is not None and not isinstance(customer[key], str):
            raise CommandRefused("bad_request", f"customer {key} must be a string")
    if text is not None:
        _text(text)
    online = bool(customer.get("online", True))
    person = Customer(customer["id"], customer.get("name"), customer.get("email"), online,
                      customer.get("language"), dict(customer.get("fields") or {}),
                      online_since=at, offline_since=None if online else at,
                      **{key: customer.get(key) for key in PROFILE_KEYS})
    chat = Chat(chat_id, channel, person, at, page_url=page_url, department=department,
                language=person.language, last_activity_at=at, fields=dict(fields or {}),
                opened_at=at, unassigned_at=at)
    world.chats[chat_id] = chat
    message_id = None
    if text is not None:
        message = _add_message(world, chat, at, "customer", person.id, "reply", text, _via_of(channel))
        chat.customer_read = message.position
        message_id = message.id
    return [_event(world, chat, "chat.created", at, "customer", message_id=message_id)]


def customer_message(world: World, at: float, chat_id: str, text: str, via: str | None = None,
                     subject: str | None = None, auto_reply: bool = False) -> list:
    """A customer message → [message.created], or [chat.reopened, message.created] in a
    closed chat. It marks the agent replies before it as read by the customer. ``via``
    defaults to the chat's channel (widget, email, otherwise api); ``subject`` is an
    email's Subject line.

    ``auto_reply``: a machine wrote it (an out-of-office, a bounce): it is kept for agents
    and rules (``message.is_auto_reply``) but never reopens a closed chat, reads nothing
    and counts for no state (it is not a public message)."""
    chat = world.chat(chat_id)
    _text(text)
    via = via or _via_of(chat.channel)
    if via not in ("widget", "email", "api"):
        raise CommandRefused("bad_request", "via must be widget, email or api")
    if subject is not None and (not isinstance(subject, str) or len(subject) > MAX_SUBJECT):
        raise CommandRefused("bad_request", f"subject must be a string of at most {MAX_SUBJECT} characters")
    if not isinstance(auto_reply, bool):
        raise CommandRefused("bad_request", "auto_reply must be true or false")
    # a closed, pending or snoozed chat reopens (that is the message's only change);
    # an automatic reply reopens nothing
    reopening = chat.status != "open" and not auto_reply
    before = _watch(chat) if reopening else None
    events = _reopen(world, chat, at, "customer", reason="customer_message") if reopening else []
    message = _add_message(world, chat, at, "customer", chat.customer.id, "reply", text, via)
    message.subject = subject or None
    message.auto_reply = auto_reply
    if not auto_reply:
        chat.customer_read = max(chat.customer_read, message.position)
    events.append(_event(world, chat, "message.created", at, "customer", message_id=message.id))
    return _updated(world, chat, at, before, events, "customer")


def email_reply(world: World, at: float, chat_id: str, text: str, subject: str | None = None,
                auto_reply: bool = False) -> list:
    """The customer's answer to an email: a customer message ``via: email`` (an automatic
    reply or a bounce with ``auto_reply``)."""
    return customer_message(world, at, chat_id, text, via="email", subject=subject, auto_reply=auto_reply)


def customer_leaves(world: World, at: float, chat_id: str) -> list:
    """→ [customer.left]; nothing when already offline (presence updates repeat)."""
    chat = world.chat(chat_id)
    if not chat.customer.online:
        return []
    chat.customer.online, chat.customer.offline_since = False, at
    return [_event(world, chat, "customer.left", at, "customer")]


def customer_returns(world: World, at: float, chat_id: str) -> list:
    """→ [customer.returned]; nothing when already online."""
    chat = world.chat(chat_id)
    if chat.customer.online:
        return []
    customer = chat.customer
    customer.online, customer.online_since, customer.offline_since = True, at, None
    return [_event(world, chat, "customer.returned", at, "customer")]


def customer_reads(world: World, at: float, chat_id: str) -> list:
    """The customer read everything so far → [message.read]."""
    chat = world.chat(chat_id)
    chat.customer_read = len(chat.messages) - 1
    last = chat.messages[-1].id if chat.messages else None
    return [_event(world, chat, "message.read", at, "customer", message_id=last,
                   data={"reader": "customer", "position": chat.customer_read})]


# ---------------------------------------------------------------- agent inputs

def join(world: World, at: float, chat_id: str, agent: str) -> list:
    """Become the responsible agent, subscribed and unmuted → [chat.joined]. Takes over
    from another assignee unless that one holds the lock. Reads nothing. Nothing to do
    (already the subscribed assignee) emits nothing."""
    chat, who = _seen_by(world, chat_id, agent)
    if chat.status == "closed":
        raise CommandRefused("chat_closed", f"chat {chat.id!r} is closed")
    if chat.locked_by not in (None, who.id):
        raise CommandRefused("locked", f"chat {chat.id!r} is locked by {chat.locked_by!r}")
    if chat.assignee == who.id and who.id in chat.subscribers and who.id not in chat.muted:
        return []
    previous = chat.assignee
    before = _watch(chat)
    if previous != who.id:
        _change_assignee(world, chat, who.id, at)
    chat.muted.discard(who.id)
    _subscribe(chat, who.id)
    events = [_event(world, chat, "chat.joined", at, "agent", agent_id=who.id,
                     data={"assignee": who.id, "previous_assignee": previous})]
    return _updated(world, chat, at, before, events, "agent", by=who.id)


def read(world: World, at: float, chat_id: str, agent: str) -> list:
    """The agent read everything so far → [message.read]."""
    chat, who = _seen_by(world, chat_id, agent)
    position = max(chat.read_position(who.id), len(chat.messages) - 1)
    chat.agent_read[who.id] = position
    last = chat.messages[-1].id if chat.messages else None
    return [_event(world, chat, "message.read", at, "agent", agent_id=who.id, message_id=last,
                   data={"reader": who.id, "position": position})]


def subscribe(world: World, at: float, chat_id: str, agent: str) -> list:
    """Follow the chat (and lift a mute) → [chat.subscribed]; nothing when already following."""
    chat, who = _seen_by(world, chat_id, agent)
    if who.id in chat.subscribers and who.id not in chat.muted:
        return []
    chat.muted.discard(who.id)
    _subscribe(chat, who.id)
    return [_event(world, chat, "chat.subscribed", at, "agent", agent_id=who.id,
                   data={"agent": who.id})]


def unsubscribe(world: World, at: float, chat_id: str, agent: str) -> list:
    """Unfollow and mute: no rule notifies or re-subscribes the agent until it subscribes
    or joins again → [chat.unsubscribed]; nothing when already unfollowed."""
    chat, who = _seen_by(world, chat_id, agent)
    if who.id not in chat.subscribers and who.id in chat.muted:
        return []
    if who.id in chat.subscribers:
        chat.subscribers.remove(who.id)
    chat.muted.add(who.id)
    return [_event(world, chat, "chat.unsubscribed", at, "agent", agent_id=who.id,
                   data={"agent": who.id})]


def lock(world: World, at: float, chat_id: str, agent: str | None = None, *, rule=None) -> list:
    """Take the reply lock. An agent must be the assignee of an open chat; a rule locks
    for the assignee (nothing without one, or when closed). Already locked: nothing."""
    chat = world.chat(chat_id)
    if rule is not None:
        if chat.assignee is None or chat.status == "closed" or chat.locked_by is not None:
            return []
        return _lock(world, chat, at, "rule", rule=rule)
    chat, who = _seen_by(world, chat_id, agent)
    if chat.status == "closed":
        raise CommandRefused("chat_closed", f"chat {chat.id!r} is closed")
    if chat.assignee != who.id:
        raise CommandRefused("not_joined", f"only the assignee of chat {chat.id!r} may lock it")
    if chat.locked_by == who.id:
        return []
    return _lock(world, chat, at, "agent", by=who.id)


def unlock(world: World, at: float, chat_id: str, agent: str | None = None, *, rule=None) -> list:
    """Release the reply lock (an agent must be the assignee) → [chat.unlocked]; nothing
    when not locked."""
    chat = world.chat(chat_id)
    if rule is not None:
        return _unlock(world, chat, at, "rule", rule=rule) if chat.locked_by else []
    chat, who = _seen_by(world, chat_id, agent)
    if chat.assignee != who.id:
        raise CommandRefused("not_joined", f"only the assignee of chat {chat.id!r} may unlock it")
    if chat.locked_by is None:
        return []
    return _unlock(world, chat, at, "agent", by=who.id)


def reply(world: World, at: float, chat_id: str, agent: str, text=None, canned_text=None,
          article=None) -> list:
    """A public reply by the assignee → [message.created]. ``canned_text`` is a canned
    response already resolved by the caller; ``article`` is a help-center slug (the text
    defaults to it). Marks the messages before it as read by the agent."""
    chat, who = _seen_by(world, chat_id, agent)
    if text is not None and canned_text is not None:
        raise CommandRefused("bad_request", "give text or canned_text, not both")
    body = text if text is not None else canned_text if canned_text is not None else article
    _text(body, "reply text")
    if article is not None:
        _text(article, "article")
    if chat.status == "closed":
        raise CommandRefused("chat_closed", f"chat {chat.id!r} is closed")
    if chat.locked_by not in (None, who.id):
        raise CommandRefused("locked", f"chat {chat.id!r} is locked by {chat.locked_by!r}")
    if chat.assignee != who.id:
        raise CommandRefused("not_joined", f"agent {who.id!r} must join chat {chat.id!r} to reply")
    message = _add_message(world, chat, at, "agent", who.id, "reply", body, "api", article)
    chat.agent_read[who.id] = max(chat.read_position(who.id), message.position)
    return [_event(world, chat, "message.created", at, "agent", agent_id=who.id,
                   message_id=message.id)]


def note(world: World, at: float, chat_id: str, agent: str, text: str) -> list:
    """A private note by anyone who sees the chat, even locked or closed →
    [message.created]; ``@ID`` of known agents become its mentions."""
    chat, who = _seen_by(world, chat_id, agent)
    _text(text)
    message = _add_message(world, chat, at, "agent", who.id, "note", text, "api")
    return [_event(world, chat, "message.created", at, "agent", agent_id=who.id,
                   message_id=message.id, data={"mentions": list(message.mentions)})]


def assign(world: World, at: float, chat_id: str, by: str, agent: str | None = None,
           department: str | None = None, strategy: str = "round_robin") -> list:
    """A manual assignment by agent ``by`` to an agent or a department → [chat.assigned]
    (or [chat.unassigned] when a department has nobody free and the chat had an assignee;
    [] when nothing changes), then chat.updated for the assignee and department changed."""
    chat, doer = _seen_by(world, chat_id, by)
    if (agent is None) == (department is None):
        raise CommandRefused("bad_request", "assign takes exactly one of agent or department")
    if chat.status == "closed":
        raise CommandRefused("chat_closed", f"chat {chat.id!r} is closed")
    if chat.locked_by not in (None, doer.id):
        raise CommandRefused("locked", f"chat {chat.id!r} is locked by {chat.locked_by!r}")
    if agent is not None:
        target = world.agent(agent)
        if not target.sees(chat):
            raise CommandRefused("no_access", f"agent {target.id!r} does not see chat {chat.id!r}")
    before = _watch(chat)
    if agent is not None:
        events = _assign_to(world, chat, at, target.id, "agent", by=doer.id)
    else:  # checks its arguments before it changes anything
        events = _assign_department(world, chat, at, department, strategy, "agent", by=doer.id)
    return _updated(world, chat, at, before, events, "agent", by=doer.id)


def close(world: World, at: float, chat_id: str, agent: str | None = None, *, rule=None) -> list:
    """Close the chat → [chat.closed]; keeps assignee and subscribers, ends any lock.
    Refused when already closed, except for a rule (nothing happens)."""
    chat = world.chat(chat_id)
    if rule is not None:
        if chat.status == "closed":
            return []
        before = _watch(chat)
        return _updated(world, chat, at, before, _close(world, chat, at, "rule", rule=rule), "rule", rule=rule)
    if agent is not None:
        chat, _ = _seen_by(world, chat_id, agent)
    if chat.status == "closed":
        raise CommandRefused("chat_closed", f"chat {chat.id!r} is already closed")
    before = _watch(chat)
    actor = "agent" if agent else "system"
    return _updated(world, chat, at, before, _close(world, chat, at, actor, by=agent), actor, by=agent)


def reopen(world: World, at: float, chat_id: str, agent: str | None = None, *, rule=None) -> list:
    """Reopen a closed, pending or snoozed chat → [chat.reopened] (``event.reason`` is
    ``agent``, ``rule`` or ``system``). Refused when open (``chat_open``), except for a rule
    (nothing happens)."""
    chat = world.chat(chat_id)
    if rule is not None:
        if chat.status == "open":
            return []
        before = _watch(chat)
        return _updated(world, chat, at, before, _reopen(world, chat, at, "rule", rule=rule), "rule", rule=rule)
    if agent is not None:
        chat, _ = _seen_by(world, chat_id, agent)
    if chat.status == "open":
        raise CommandRefused("chat_open", f"chat {chat.id!r} is already open")
    before = _watch(chat)
    actor = "agent" if agent else "system"
    return _updated(world, chat, at, before, _reopen(world, chat, at, actor, by=agent), actor, by=agent)


def snooze(world: World, at: float, chat_id: str, agent: str | None = None, duration=None, until=None,
           *, rule=None) -> list:
    """Set the chat aside until ``duration`` from now or ``until`` → [chat.snoozed] (then
    chat.updated when the status changed). At the end it reopens by itself
    (:func:`snooze_ended`), or earlier when the customer writes. An agent who sees the chat
    may snooze it unless it is closed or another agent holds the lock; a rule's snooze of
    a closed chat does nothing."""
    chat = world.chat(chat_id)
    end = _snooze_end(at, duration, until)
    if rule is not None:
        if chat.status == "closed":
            return []
        before = _watch(chat)
        return _updated(world, chat, at, before, _snooze(world, chat, at, end, "rule", rule=rule), "rule", rule=rule)
    chat, who = _seen_by(world, chat_id, agent)
    _check_workable(chat, who)
    before = _watch(chat)
    return _updated(world, chat, at, before, _snooze(world, chat, at, end, "agent", by=who.id), "agent", by=who.id)


def set_status(world: World, at: float, chat_id: str, agent: str | None = None, status=None, *, rule=None) -> list:
    """``set status pending`` → [chat.pending, chat.updated]; nothing when already pending.
    Other statuses have commands of their own (close, reopen, snooze). Allowed like
    :func:`snooze`."""
    chat = world.chat(chat_id)
    if status not in SETTABLE_STATUSES:
        raise CommandRefused("bad_request", "status is pending (use close, reopen or snooze for the others)")
    if rule is not None:
        if chat.status in ("closed", status):
            return []
        before = _watch(chat)
        return _updated(world, chat, at, before, _pending(world, chat, at, "rule", rule=rule), "rule", rule=rule)
    chat, who = _seen_by(world, chat_id, agent)
    _check_workable(chat, who)
    if chat.status == status:
        return []
    before = _watch(chat)
    return _updated(world, chat, at, before, _pending(world, chat, at, "agent", by=who.id), "agent", by=who.id)


def _check_workable(chat: Chat, who) -> None:
    """A status change by an agent: not in a closed chat, not past another agent's lock."""
    if chat.status == "closed":
        raise CommandRefused("chat_closed", f"chat {chat.id!r} is closed")
    if chat.locked_by not in (None, who.id):
        raise CommandRefused("locked", f"chat {chat.id!r} is locked by {chat.locked_by!r}")


def snooze_ended(world: World, at: float, chat_id: str) -> list:
    """The snooze's end is due → [chat.reopened (reason snooze_ended), chat.updated];
    nothing when the chat is no longer snoozed or its end moved later."""
    chat = world.chat(chat_id)
    if chat.status != "snoozed" or chat.snoozed_until is None or chat.snoozed_until > at:
        return []
    before = _watch(chat)
    return _updated(world, chat, at, before, _reopen(world, chat, at, "system", reason="snooze_ended"), "system")


def _own_message(chat: Chat, agent_id: str, ref) -> Message:
    """``ref`` is ``"last"`` (the agent's last message not deleted) or a 1-based position."""
    if ref == "last":
        for m in reversed(chat.messages):
            if m.author == "agent" and m.author_id == agent_id and not m.deleted:
                return m
        raise CommandRefused("unknown_message", f"agent {agent_id!r} has no message in chat {chat.id!r}")
    if isinstance(ref, str) and ref.isdigit():
        ref = int(ref)
    if not isinstance(ref, int) or isinstance(ref, bool):
        raise CommandRefused("bad_request", "message must be 'last' or a position (1 = first)")
    if not 1 <= ref <= len(chat.messages):
        raise CommandRefused("unknown_message", f"chat {chat.id!r} has no message {ref}")
    message = chat.messages[ref - 1]
    if message.author != "agent" or message.author_id != agent_id:
        raise CommandRefused("not_author", f"message {ref} of chat {chat.id!r} is not by {agent_id!r}")
    if message.deleted:
        raise CommandRefused("message_deleted", f"message {ref} of chat {chat.id!r} was deleted")
    return message


def edit_message(world: World, at: float, chat_id: str, agent: str, message, text: str) -> list:
    """The author changes its message's text → [message.edited]; the customer sees the new text."""
    chat, who = _seen_by(world, chat_id, agent)
    target = _own_message(chat, who.id, message)
    _text(text)
    target.text, target.edited_at = text, at
    if target.kind == "note":
        target.mentions = _mentions(world, text)
    return [_event(world, chat, "message.edited", at, "agent", agent_id=who.id,
                   message_id=target.id)]


def delete_message(world: World, at: float, chat_id: str, agent: str, message) -> list:
    """The author deletes its message → [message.deleted]; gone for the customer, shown
    as deleted to agents (the text is kept for them)."""
    chat, who = _seen_by(world, chat_id, agent)
    target = _own_message(chat, who.id, message)
    target.deleted = True
    return [_event(world, chat, "message.deleted", at, "agent", agent_id=who.id,
                   message_id=target.id)]


def agent_status(world: World, at: float, agent: str, status: str) -> list:
    """→ [agent.status_changed] (no chat); nothing when the status is unchanged."""
    who = world.agent(agent)
    if status not in AGENT_STATUSES:
        raise CommandRefused("bad_request", f"status must be one of {', '.join(AGENT_STATUSES)}")
    if who.status == status:
        return []
    previous, who.status = who.status, status
    return [_event(world, None, "agent.status_changed", at, "agent", agent_id=who.id,
                   data={"previous_status": previous, "status": status})]


# ---------------------------------------------------------------- rule actions

def assign_agent(world: World, at: float, chat_id: str, agent: str, *, rule=None) -> list:
    """``assign agent "id"`` → [chat.assigned]; ends the lock of a previous assignee.
    An unknown agent id is refused (``unknown_agent``) so the trace can say why."""
    chat = world.chat(chat_id)
    world.agent(agent)
    before = _watch(chat)
    return _updated(world, chat, at, before, _assign_to(world, chat, at, agent, "rule", rule=rule), "rule", rule=rule)


def assign_department(world: World, at: float, chat_id: str, department: str,
                      strategy: str = "round_robin", *, rule=None) -> list:
    """``assign department "d" [by round_robin|least_busy]`` (SPEC §3.6)."""
    chat = world.chat(chat_id)
    before = _watch(chat)
    events = _assign_department(world, chat, at, department, strategy or "round_robin", "rule", rule=rule)
    return _updated(world, chat, at, before, events, "rule", rule=rule)


def unassign(world: World, at: float, chat_id: str, *, rule=None) -> list:
    """→ [chat.unassigned]; ends any lock; the previous assignee stays subscribed."""
    chat = world.chat(chat_id)
    if chat.assignee is None:
        return []
    previous = chat.assignee
    before = _watch(chat)
    ended = _change_assignee(world, chat, None, at)
    events = [_event(world, chat, "chat.unassigned", at, "rule", rule=rule,
                     data={"previous_assignee": previous, "ended_lock": ended})]
    return _updated(world, chat, at, before, events, "rule", rule=rule)


def _subscribe_all(world, chat, at, agents, rule) -> list:
    events = []
    for agent in agents:
        if agent.sees(chat) and agent.id not in chat.muted and _subscribe(chat, agent.id):
            events.append(_event(world, chat, "chat.subscribed", at, "rule", rule=rule,
                                 data={"agent": agent.id}))
    return events


def subscribe_operators(world: World, at: float, chat_id: str, *, rule=None) -> list:
    """Every operator who sees the chat, whatever its status, unless it unsubscribed →
    one [chat.subscribed] per agent newly subscribed."""
    chat = world.chat(chat_id)
    return _subscribe_all(world, chat, at, [a for a in world.agents.values() if a.is_operator], rule)


def subscribe_agent(world: World, at: float, chat_id: str, agent: str, *, rule=None) -> list:
    chat = world.chat(chat_id)
    return _subscribe_all(world, chat, at, [world.agent(agent)], rule)


def subscribe_department(world: World, at: float, chat_id: str, department: str, *, rule=None) -> list:
    chat = world.chat(chat_id)
    members = [a for a in world.agents.values() if department in a.departments]
    return _subscribe_all(world, chat, at, members, rule)


def unsubscribe_agent(world: World, at: float, chat_id: str, agent: str, *, rule=None) -> list:
    """Remove a subscriber. Unlike the agent's own ``unsubscribe`` it does not mute: the
    agent did not choose to stop following."""
    chat = world.chat(chat_id)
    world.agent(agent)
    if agent not in chat.subscribers:
        return []
    chat.subscribers.remove(agent)
    return [_event(world, chat, "chat.unsubscribed", at, "rule", rule=rule, data={"agent": agent})]


def tag(world: World, at: float, chat_id: str, name: str, *, rule=None) -> list:
    chat = world.chat(chat_id)
    _text(name, "tag")
    if name in chat.tags:
        return []
    before = _watch(chat)
    chat.tags.append(name)
    events = [_event(world, chat, "chat.tagged", at, "rule", rule=rule, data={"tag": name})]
    return _updated(world, chat, at, before, events, "rule", rule=rule)


def untag(world: World, at: float, chat_id: str, name: str, *, rule=None) -> list:
    """Remove a tag → [chat.untagged, chat.updated]; nothing when the chat lacks it."""
    chat = world.chat(chat_id)
    if name not in chat.tags:
        return []
    before = _watch(chat)
    chat.tags.remove(name)
    events = [_event(world, chat, "chat.untagged", at, "rule", rule=rule, data={"tag": name})]
    return _updated(world, chat, at, before, events, "rule", rule=rule)


def set_priority(world: World, at: float, chat_id: str, priority: int, *, rule=None) -> list:
    """→ [chat.updated] (the change's only event); nothing when the priority is the same."""
    chat = world.chat(chat_id)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 4:
        raise CommandRefused("bad_request", "priority must be an integer 0–4")
    before = _watch(chat)
    chat.priority = priority
    return _updated(world, chat, at, before, [], "rule", rule=rule)


def set_field(world: World, at: float, chat_id: str, name: str, value, *, rule=None) -> list:
    """→ [chat.updated] (the change's only event); nothing when the value is the same."""
    chat = world.chat(chat_id)
    _text(name, "field name")
    before = _watch(chat)
    chat.fields[name] = value
    return _updated(world, chat, at, before, [], "rule", rule=rule)


def set_department(world: World, at: float, chat_id: str, department: str, *, rule=None) -> list:
    """``set department "d"``: the chat joins department ``d`` and nobody is picked (the
    assignee stays) → [chat.updated]; nothing when it is already there. An unassigned
    chat now waits in that department's backlog."""
    chat = world.chat(chat_id)
    _text(department, "department")
    before = _watch(chat)
    chat.department = department
    return _updated(world, chat, at, before, [], "rule", rule=rule)


def fill_backlog(world: World, at: float, agent_id: str) -> list:
    """The backlog (routing ``backlog``): give ``agent_id`` the waiting chats of its
    departments, longest waiting first, while it has free capacity and stays within the
    fair-distribution limit → per chat [chat.assigned, chat.updated], actor ``system``,
    ``data["backlog"]`` true. Nothing when the backlog is off or the agent is not online."""
    routing = routing_of(world)
    agent = world.agents.get(agent_id)
    if not routing.backlog or agent is None or agent.status != "online" or not agent.departments:
        return []
    if world.before_pick is not None:
        world.before_pick()
    events = []
    for chat in waiting_chats(world, agent, at):
        if not within_limit(world, agent, at) or not has_free_capacity(world, agent):
            break
        if not has_free_capacity(world, agent, chat):
            continue  # that channel is full; another channel may have room
        note_pick(world, chat.department, agent.id, chat.id, at)
        before = _watch(chat)
        assigned = _assign_to(world, chat, at, agent.id, "system",
                              extra={"department": chat.department, "backlog": True})
        events.extend(_updated(world, chat, at, before, assigned, "system"))
    return events


# ---------------------------------------------------------------- agent changes (issue 8.10)

MAX_TAG = 100  # characters of a tag an agent types


def agent_tag(world: World, at: float, chat_id: str, agent: str, tag: str) -> list:
    """An agent tags the chat → [chat.tagged, chat.updated]; nothing when it has the tag.
    Any agent who sees the chat may, whatever its status or lock (like a note)."""
    chat, who = _seen_by(world, chat_id, agent)
    name = _tag_name(tag)
    if name in chat.tags:
        return []
    before = _watch(chat)
    chat.tags.append(name)
    events = [_event(world, chat, "chat.tagged", at, "agent", agent_id=who.id, data={"tag": name})]
    return _updated(world, chat, at, before, events, "agent", by=who.id)


def agent_untag(world: World, at: float, chat_id: str, agent: str, tag: str) -> list:
    """An agent removes a tag → [chat.untagged, chat.updated]; nothing when the chat lacks it."""
    chat, who = _seen_by(world, chat_id, agent)
    name = _tag_name(tag)
    if name not in chat.tags:
        return []
    before = _watch(chat)
    chat.tags.remove(name)
    events = [_event(world, chat, "chat.untagged", at, "agent", agent_id=who.id, data={"tag": name})]
    return _updated(world, chat, at, before, events, "agent", by=who.id)


def agent_set_priority(world: World, at: float, chat_id: str, agent: str, priority) -> list:
    """An agent sets the priority 0–4 → [chat.updated]; nothing when it is the same."""
    chat, who = _seen_by(world, chat_id, agent)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 4:
        raise CommandRefused("bad_request", "priority must be an integer 0–4")
    before = _watch(chat)
    chat.priority = priority
    return _updated(world, chat, at, before, [], "agent", by=who.id)


def _tag_name(tag) -> str:
    _text(tag, "tag")
    if len(tag) > MAX_TAG or tag != tag.strip():
        raise CommandRefused("bad_request", f"a tag is at most {MAX_TAG} characters, without spaces around it")
    return tag


def _bot_message(world, at, chat_id, text, kind, rule, article=None) -> list:
    chat = world.chat(chat_id)
    _text(text)
    message = _add_message(world, chat, at, "bot", rule, kind, text, "api", article)
    return [_event(world, chat, "message.created", at, "rule", rule=rule, message_id=message.id)]


def bot_reply(world: World, at: float, chat_id: str, text: str, *, rule=None) -> list:
    """A rule's ``reply``: a public bot message. It neither answers the customer
    (awaiting_agent goes on) nor waits for them (awaiting_customer does not start)."""
    return _bot_message(world, at, chat_id, text, "reply", rule)


def bot_note(world: World, at: float, chat_id: str, text: str, *, rule=None) -> list:
    """A rule's ``note``: private, with @mentions like an agent's note."""
    return _bot_message(world, at, chat_id, text, "note", rule)


def reply_article(world: World, at: float, chat_id: str, slug: str, text: str | None = None,
                  *, rule=None) -> list:
    """A rule's ``reply article "slug"``; ``text`` is the rendered article (default: the slug)."""
    _text(slug, "article")
    return _bot_message(world, at, chat_id, text if text is not None else slug, "reply", rule, slug)


# Scenario step name -> input command (the runner maps step arguments onto parameters).
INPUTS = {
    "start_chat": start_chat, "customer_message": customer_message, "email_reply": email_reply,
    "customer_leaves": customer_leaves, "customer_returns": customer_returns,
    "customer_reads": customer_reads, "join": join, "read": read, "subscribe": subscribe,
    "unsubscribe": unsubscribe, "lock": lock, "unlock": unlock, "reply": reply, "note": note,
    "assign": assign, "close": close, "reopen": reopen, "edit_message": edit_message,
    "delete_message": delete_message, "agent_status": agent_status, "snooze": snooze,
    "set_status": set_status, "tag": agent_tag, "untag": agent_untag, "set_priority": agent_set_priority,
}
