"""The rule language's vocabulary, declared once.

Events, facts with their types, states, functions, actions and targets. The compiler
type-checks against this, the linter reads it, ``schemas/rules.schema.json`` and the
README's reference list it, and the engine provides exactly these names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

EVENTS = (
    "chat.created", "message.created", "message.edited", "message.deleted", "message.read",
    "chat.joined", "chat.assigned", "chat.unassigned", "chat.subscribed", "chat.unsubscribed",
    "chat.locked", "chat.unlocked", "chat.closed", "chat.reopened", "chat.tagged",
    "chat.untagged", "chat.updated", "chat.snoozed", "chat.pending",
    "customer.left", "customer.returned", "agent.status_changed",
)

# The event a change condition (``changed(FACT)``, ``FACT changed to V``, ``FACT changed
# from V to W``) reads: one per command or action that changed a field below, after the
# change's own event; ``data["changes"]`` maps each changed field to ``[old, new]``.
UPDATE_EVENT = "chat.updated"

# The chat fields a chat.updated reports, by fact, with their key in ``changes``; any
# ``chat.fields.NAME`` too (key ``fields.NAME``).
CHANGEABLE: dict[str, str] = {
    "chat.status": "status",
    "chat.priority": "priority",
    "chat.department": "department",
    "chat.tags": "tags",
    "chat.assignee": "assignee",
}
CHANGEABLE_FIELD_PREFIX = "chat.fields."


def change_key(fact: str) -> str | None:
    """The key of a changeable fact in a chat.updated's ``changes`` (``chat.priority`` →
    ``priority``, ``chat.fields.plan`` → ``fields.plan``), or None if it is not changeable."""
    if fact in CHANGEABLE:
        return CHANGEABLE[fact]
    if fact.startswith(CHANGEABLE_FIELD_PREFIX) and len(fact) > len(CHANGEABLE_FIELD_PREFIX):
        return fact[len("chat."):]
    return None

# Events whose rules see a ``message``: chat.created's message is the first message.
MESSAGE_EVENTS = frozenset({"chat.created", "message.created", "message.edited", "message.deleted"})


@dataclass(frozen=True)
class Type:
    """A fact's type. ``name``: str|int|bool|time|list; ``values`` limits a str's values."""

    name: str
    values: tuple = ()
    nullable: bool = False
    low: int | None = None
    high: int | None = None

    def __str__(self) -> str:
        return self.name


STR = Type("str")
OPT_STR = Type("str", nullable=True)
INT = Type("int")
COUNT = Type("int", low=0)
BOOL = Type("bool")
TIME = Type("time")
LIST = Type("list")
ANY = Type("any", nullable=True)

CHANNELS = ("widget", "email", "telegram", "facebook", "whatsapp", "api")
# A chat is open (being worked on), pending (waiting on the customer or someone else until
# it is reopened), snoozed (set aside until an instant: it reopens by itself then, or when
# the customer writes) or closed. Only open chats count towards an agent's capacity.
STATUSES = ("open", "pending", "snoozed", "closed")
# Why a chat.reopened happened (`event.reason`).
REOPEN_REASONS = ("customer_message", "snooze_ended", "agent", "rule", "system")
AGENT_STATUSES = ("online", "away", "offline")
EVENT_TYPES = EVENTS

FACTS: dict[str, Type] = {
    "chat.id": STR,
    "chat.channel": Type("str", CHANNELS),
    "chat.page_url": OPT_STR,
    "chat.status": Type("str", STATUSES),
    "chat.assignee": OPT_STR,
    "chat.department": OPT_STR,
    "chat.subscribers": LIST,
    "chat.tags": LIST,
    "chat.priority": Type("int", low=0, high=4),
    "chat.locked_by": OPT_STR,
    "chat.language": OPT_STR,
    "chat.created_at": TIME,
    "chat.snoozed_until": Type("time", nullable=True),
    "chat.last_activity_at": TIME,
    "chat.message_count": COUNT,
    "chat.sla_policy": OPT_STR,
    "customer.id": STR,
    "customer.name": OPT_STR,
    "customer.email": OPT_STR,
    "customer.online": BOOL,
    "customer.language": OPT_STR,
    "customer.phone": OPT_STR,
    "customer.country": OPT_STR,
    "customer.city": OPT_STR,
    "customer.company": OPT_STR,
    "message.id": STR,
    "message.author": Type("str", ("customer", "agent", "bot", "system")),
    "message.author_id": OPT_STR,
    "message.kind": Type("str", ("reply", "note")),
    "message.text": STR,
    "message.via": Type("str", ("widget", "email", "api")),
    "message.mentions": LIST,
    "message.subject": OPT_STR,
    "message.is_auto_reply": BOOL,
    "agent.id": Type("str", nullable=True),
    "agent.name": OPT_STR,
    "agent.departments": Type("list", nullable=True),
    "agent.status": Type("str", AGENT_STATUSES, nullable=True),
    "assignee.id": Type("str", nullable=True),
    "assignee.name": OPT_STR,
    "assignee.departments": Type("list", nullable=True),
    "assignee.status": Type("str", AGENT_STATUSES, nullable=True),
    "assignee.open_chats": Type("int", nullable=True, low=0),
    "event.type": Type("str", EVENT_TYPES),
    "event.actor": Type("str", ("customer", "agent", "rule", "system")),
    "event.rule": OPT_STR,
    "event.reason": Type("str", REOPEN_REASONS, nullable=True),
    "now": TIME,
}

# Prefixes under which any NAME is a custom field (``chat.fields.plan``); values are any type.
FIELD_PREFIXES = ("chat.fields.", "customer.fields.")

# States: boolean, each with the instant it last became true (its anchor for ``for``).
STATES: dict[str, str] = {
    "chat.open": "since the chat was opened or reopened",
    "chat.closed": "since the chat was closed",
    "chat.pending": "since the chat was set pending",
    "chat.snoozed": "since the chat was snoozed (a new snooze starts a new episode)",
    "chat.idle": "since the last public message",
    "chat.unassigned": "since the chat lost (or never had) an assignee",
    "chat.assigned": "since the chat got its assignee",
    "chat.awaiting_agent": "since the first customer message not yet answered by an agent",
    "chat.awaiting_customer": "since the latest agent reply the customer has not answered",
    "chat.unread_by_assignee": "since the oldest customer message the assignee has not read",
    "chat.unread_by_customer": "since the oldest agent reply the customer has not read",
    "chat.locked": "since the reply lock was taken",
    "customer.online": "since the customer came online",
    "customer.offline": "since the customer left",
}


# SLA policies (``sla NAME { when … first_response 1h … }``): the targets a policy sets,
# and what each measures. The first policy, in file order, whose ``when`` holds applies.
SLA_TARGETS: dict[str, str] = {
    "first_response": "from the first customer message to the first agent reply",
    "next_response": "from a customer message after an agent reply to the next agent reply",
    "resolution": "from the chat's start (or its last reopening) to its close",
}

# The SLA states, written as calls with a target: ``chat.sla_breached("first_response")``.
# Each is true from an instant the engine knows in advance, so state rules on them fire at
# that exact instant (their deadlines are armed like those of ``STATE for D``).
SLA_STATES: dict[str, str] = {
    "chat.sla_due_soon": "the target is not met yet and its due time is within the policy's `due_soon`",
    "chat.sla_breached": "the target was not met by its due time",
}

# What a `(CONDITION) for D` may read, by how the engine sees it change. Its anchor is
# refreshed at each event and deadline of the chat, so a fact that changes with no event of
# the chat (another chat's assignment changes `assignee.open_chats`) moves it late, and a
# condition of facts that nothing changes after the chat starts just counts the chat's age.
UNOBSERVED_FACTS = frozenset({"assignee.open_chats", "assignee.name", "assignee.departments", "now"})
STATIC_FACTS = frozenset({"chat.id", "chat.channel", "chat.page_url", "chat.created_at", "chat.language",
                          "customer.id", "customer.name", "customer.email", "customer.language"})
STATIC_FIELD_PREFIX = "customer.fields."


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple  # parameter types by name: "str" | "time" | "any"
    returns: Type
    doc: str


FUNCTIONS: dict[str, Function] = {
    "in_schedule": Function("in_schedule", ("schedule",), BOOL, "true while now is inside the named schedule"),
    "hour": Function("hour", ("time", "timezone"), Type("int", low=0, high=23), "the hour 0–23 of a time in a timezone"),
    "weekday": Function("weekday", ("time", "timezone"),
                        Type("str", ("mon", "tue", "wed", "thu", "fri", "sat", "sun")),
                        "the weekday mon…sun of a time in a timezone"),
    "lower": Function("lower", ("str",), OPT_STR, "the text in lower case"),
    "len": Function("len", ("any",), COUNT, "the length of a text or list"),
    "chat.sla_due_soon": Function("chat.sla_due_soon", ("sla_target",), BOOL, SLA_STATES["chat.sla_due_soon"]),
    "chat.sla_breached": Function("chat.sla_breached", ("sla_target",), BOOL, SLA_STATES["chat.sla_breached"]),
}

# Comparison operators and the operand types they accept.
ORDER_OPS = ("<", "<=", ">", ">=")
EQUALITY_OPS = ("==", "!=")
TEXT_OPS = ("contains", "starts with", "ends with")

ACTIONS = (
    "assign", "unassign", "subscribe", "unsubscribe", "notify", "email", "webhook", "reply", "note",
    "tag", "untag", "set", "close", "reopen", "snooze", "lock", "unlock", "stop",
)
NOTIFY_TARGETS = ("subscribers", "assignee", "operators", "mentioned", "agent", "department")
SUBSCRIBE_TARGETS = ("operators", "agent", "department")
STRATEGIES = ("round_robin", "least_busy")

# The events an action can cause, for the cycle lint and the cascade.
ACTION_EVENTS: dict[str, tuple] = {
    "assign_agent": ("chat.assigned", "chat.updated"),
    "assign_department": ("chat.assigned", "chat.updated"),
    "unassign": ("chat.unassigned", "chat.updated"),
    "subscribe": ("chat.subscribed",),
    "unsubscribe": ("chat.unsubscribed",),
    "reply": ("message.created",),
    "reply_article": ("message.created",),
    "note": ("message.created",),
    "tag": ("chat.tagged", "chat.updated"),
    "untag": ("chat.untagged", "chat.updated"),
    "set_priority": ("chat.updated",),
    "set_field": ("chat.updated",),
    "set_department": ("chat.updated",),
    "close": ("chat.closed", "chat.updated"),
    "reopen": ("chat.reopened", "chat.updated"),
    "snooze": ("chat.snoozed", "chat.updated"),
    "set_status": ("chat.pending", "chat.updated"),
    "lock": ("chat.locked",),
    "unlock": ("chat.unlocked",),
}

# The changeable fields (keys of ``changes``) each action can change; ``fields.*`` stands
# for the field a ``set field`` names. The cycle lint reads it: a rule that needs a
# change of the priority is not triggered again by an action that only tags.
ACTION_CHANGES: dict[str, tuple] = {
    "assign_agent": ("assignee",),
    "assign_department": ("department", "assignee"),
    "unassign": ("assignee",),
    "tag": ("tags",),
    "untag": ("tags",),
    "set_priority": ("priority",),
    "set_field": ("fields.*",),
    "set_department": ("department",),
    "close": ("status",),
    "reopen": ("status",),
    "snooze": ("status",),
    "set_status": ("status",),
}

# A webhook's name, as rules write it and the server's settings declare it (WEBHOOKS): the
# URL and secret live only in the settings, so no rule text can send data anywhere else.
WEBHOOK_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}"
# An address a rule names (`email address "a@b"`, `email transcript to address "a@b"`) and
# an agent's email: a plain addr-spec, no display name, no placeholders.
ADDRESS_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`|~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
# Who an `email` reaches: `customer`, `agent "id"`, `department "id"`, `address "a@b"`.
EMAIL_TARGETS = ("customer", "agent", "department", "address")
# The email the service writes for `email transcript`: the chat's public messages.
TRANSCRIPT_TEMPLATE = "transcript"

# What `set status S` may set: the other statuses have actions of their own.
SETTABLE_STATUSES = ("pending",)

# What a template placeholder may name: the roots templates see (SPEC §3.6).
TEMPLATE_ROOTS = ("chat", "customer", "agent", "assignee", "message")

# Notification and email templates the product ships; a rule may name others (they are
# rendered from the server's template store), so unknown names are a lint warning only.
KNOWN_TEMPLATES = (
    "new_chat", "new_message", "assigned", "mention", "unread_messages", "unread_replies",
    "unattended", "sla_due_soon", "sla_breached", "chat_summary",
)


def fact_names() -> list[str]:
    return list(FACTS)


def all_names() -> list[str]:
    return list(FACTS) + list(STATES)
