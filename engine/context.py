"""What a rule sees when it is evaluated, and how each fact of the vocabulary is read.

``FACT_GETTERS`` maps every fact name of dsl.vocabulary.FACTS to a function of the
context; the condition compiler binds these once per rule so evaluation does no lookups.
"""
from __future__ import annotations

from dsl import vocabulary as V

from .states import STATE_FUNCS


class Context:
    """One evaluation: the chat, the event being handled (None at a deadline), the message
    of a message event, the agent who caused the event, and the engine's clock."""

    __slots__ = ("world", "chat", "event", "message", "agent", "now", "ruleset", "anchors")

    def __init__(self, world, chat, event, now, ruleset=None, anchors=None):
        self.world = world
        # key -> instant each `(CONDITION) for D` condition of the rule set became true
        # (engine.core keeps them per chat and refreshes them at every event and deadline)
        self.anchors = anchors if anchors is not None else {}
        self.chat = chat
        self.event = event
        self.now = now
        self.ruleset = ruleset
        self.message = None
        self.agent = None
        if event is not None:
            if event.message_id is not None:
                self.message = _find_message(chat, event.message_id)
            if event.agent_id is not None:
                self.agent = world.agents.get(event.agent_id)

    @property
    def assignee(self):
        a = self.chat.assignee
        return self.world.agents.get(a) if a is not None else None


def _find_message(chat, message_id):
    for m in reversed(chat.messages):
        if m.id == message_id:
            return m
    return None


def _attr(obj_getter, name):
    def get(ctx):
        obj = obj_getter(ctx)
        return None if obj is None else getattr(obj, name)
    return get


def _chat(name):
    return lambda ctx: getattr(ctx.chat, name)


def _customer(name):
    return lambda ctx: getattr(ctx.chat.customer, name)


def _list(getter):
    def get(ctx):
        v = getter(ctx)
        return None if v is None else list(v)
    return get


def _message_author_id(ctx):
    m = ctx.message
    return None if m is None else m.author_id


def _open_chats(ctx):
    a = ctx.chat.assignee
    return None if a is None else ctx.world.open_chats(a)


FACT_GETTERS = {
    "chat.id": _chat("id"),
    "chat.channel": _chat("channel"),
    "chat.page_url": _chat("page_url"),
    "chat.status": _chat("status"),
    "chat.assignee": _chat("assignee"),
    "chat.department": _chat("department"),
    "chat.subscribers": lambda ctx: list(ctx.chat.subscribers),
    "chat.tags": lambda ctx: list(ctx.chat.tags),
    "chat.priority": _chat("priority"),
    "chat.locked_by": _chat("locked_by"),
    "chat.language": _chat("language"),
    "chat.created_at": _chat("created_at"),
    "chat.snoozed_until": _chat("snoozed_until"),
    "chat.last_activity_at": _chat("last_activity_at"),
    "chat.message_count": lambda ctx: len(ctx.chat.messages),
    "chat.sla_policy": lambda ctx: _sla().policy_id(ctx),
    "customer.id": _customer("id"),
    "customer.name": _customer("name"),
    "customer.email": _customer("email"),
    "customer.online": _customer("online"),
    "customer.language": _customer("language"),
    "customer.phone": _customer("phone"),
    "customer.country": _customer("country"),
    "customer.city": _customer("city"),
    "customer.company": _customer("company"),
    "message.id": _attr(lambda c: c.message, "id"),
    "message.author": _attr(lambda c: c.message, "author"),
    "message.author_id": _message_author_id,
    "message.kind": _attr(lambda c: c.message, "kind"),
    "message.text": _attr(lambda c: c.message, "text"),
    "message.via": _attr(lambda c: c.message, "via"),
    "message.mentions": _list(_attr(lambda c: c.message, "mentions")),
    "message.subject": _attr(lambda c: c.message, "subject"),
    "message.is_auto_reply": _attr(lambda c: c.message, "auto_reply"),
    "agent.id": _attr(lambda c: c.agent, "id"),
    "agent.name": _attr(lambda c: c.agent, "name"),
    "agent.departments": _list(_attr(lambda c: c.agent, "departments")),
    "agent.status": _attr(lambda c: c.agent, "status"),
    "assignee.id": _chat("assignee"),
    "assignee.name": _attr(lambda c: c.assignee, "name"),
    "assignee.departments": _list(_attr(lambda c: c.assignee, "departments")),
    "assignee.status": _attr(lambda c: c.assignee, "status"),
    "assignee.open_chats": _open_chats,
    "event.type": _attr(lambda c: c.event, "type"),
    "event.actor": _attr(lambda c: c.event, "actor"),
    "event.rule": _attr(lambda c: c.event, "rule"),
    "event.reason": lambda ctx: None if ctx.event is None else ctx.event.data.get("reason"),
    "now": lambda ctx: ctx.now,
}

assert set(FACT_GETTERS) == set(V.FACTS), set(V.FACTS) ^ set(FACT_GETTERS)
assert set(STATE_FUNCS) == set(V.STATES), set(V.STATES) ^ set(STATE_FUNCS)


def _sla():
    from . import sla  # engine.sla compiles conditions, which read facts through this module

    return sla


def field_getter(name: str):
    """Getter for ``chat.fields.X`` / ``customer.fields.X`` (none when unset)."""
    root, _, key = name.partition(".fields.")
    if root == "chat":
        return lambda ctx: ctx.chat.fields.get(key)
    return lambda ctx: ctx.chat.customer.fields.get(key)


def getter(name: str):
    """The function reading a fact or a state (a state reads as true/false)."""
    if name in V.STATES:
        since = STATE_FUNCS[name]
        return lambda ctx: since(ctx.chat) is not None
    if name in FACT_GETTERS:
        return FACT_GETTERS[name]
    return field_getter(name)


class TemplateValue(list):
    """A list as templates print it: ``a, b, c`` (SPEC §3.6)."""

    def __str__(self):
        return ", ".join(str(x) for x in self)


def template_data(ctx: Context) -> dict:
    """The variables an action text sees: chat, customer, agent, assignee, message."""

    def ns(prefix):
        out = {}
        for name, get in FACT_GETTERS.items():
            if name.startswith(prefix + "."):
                v = get(ctx)
                out[name[len(prefix) + 1:]] = TemplateValue(v) if isinstance(v, list) else v
        return out

    chat = ns("chat")
    chat["fields"] = dict(ctx.chat.fields)
    customer = ns("customer")
    customer["fields"] = dict(ctx.chat.customer.fields)
    data = {"chat": chat, "customer": customer, "assignee": ns("assignee")}
    data["agent"] = ns("agent") if ctx.agent is not None else {}
    if ctx.message is not None:
        data["message"] = ns("message")
    return data
