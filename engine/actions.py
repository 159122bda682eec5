"""Running a fired rule's actions: changes go through the domain's rule-side commands
(so a rule can do nothing an agent's command could not express), notifications,
emails and webhooks come out as Effects, and texts are rendered in Jinja's sandbox."""
from __future__ import annotations

import functools

from jinja2.exceptions import SecurityError, TemplateError

from dsl import ast, vocabulary as V
from dsl.formatter import format_value
from dsl.templates import environment, reads_message

from . import commands as C
from .conditions import compile_value
from .context import Context, template_data
from .effects import Effect
from .model import CommandRefused
from .webhooks import webhook_body

MAX_TEXT = 20_000  # a rendered text longer than this is cut: no rule can flood a chat


class Stop(Exception):
    """``stop``: end the evaluation of the current event."""


@functools.lru_cache(maxsize=4096)
def _template(text: str):
    return environment().from_string(text)


def private(message) -> bool:
    """A message whose text the customer must never get: a note, or anything deleted."""
    return message is not None and (message.kind == "note" or message.deleted)


# Why a customer-facing action was skipped (the trace shows it).
PRIVATE_TEXT = "the text of a private note or a deleted message never reaches the customer"
AUTO_REPLY = "no automatic answer to an automatic reply or bounce (RFC 3834)"


def _answers_a_machine(ctx: Context) -> bool:
    m = ctx.message
    return m is not None and m.auto_reply and ctx.event is not None and ctx.event.type == "message.created"


def _leaks(text: str | None, ctx: Context) -> bool:
    """A customer-facing text that would read a private message's fields."""
    return text is not None and private(ctx.message) and reads_message(text)


def render(text: str | None, ctx: Context) -> str | None:
    """An action text with its placeholders filled, or the raw text if rendering fails."""
    if text is None or "{" not in text:
        return text
    try:
        out = _template(text).render(template_data(ctx))
    except (SecurityError, TemplateError, TypeError, ValueError, RecursionError, OverflowError):
        return text
    return out[:MAX_TEXT]


def recipients(action, ctx: Context) -> list[str]:
    """The agent ids a ``notify`` reaches, in a stable order: agents who see the chat
    and did not unsubscribe from it."""
    chat, world, t = ctx.chat, ctx.world, action.target
    if t.kind == "subscribers":
        ids = list(chat.subscribers)
    elif t.kind == "assignee":
        ids = [chat.assignee] if chat.assignee else []
    elif t.kind == "operators":
        ids = [a.id for a in world.agents.values() if a.sees(chat)]
    elif t.kind == "mentioned":
        ids = list(ctx.message.mentions) if ctx.message is not None else []
    elif t.kind == "agent":
        ids = [t.id] if t.id in world.agents else []
    elif t.kind == "department":
        ids = [a.id for a in world.agents.values() if t.id in a.departments and a.sees(chat)]
    else:
        ids = []
    if action.except_ == "assignee":
        ids = [i for i in ids if i != chat.assignee]
    elif action.except_ == "actor" and ctx.event is not None and ctx.event.agent_id:
        ids = [i for i in ids if i != ctx.event.agent_id]
    seen, out = set(), []
    for i in ids:
        agent = world.agents.get(i)
        # only agents who see the chat hear of it: a notification names the chat
        if agent is None or not agent.sees(chat):
            continue
        if i not in seen and i not in chat.muted:
            seen.add(i)
            out.append(i)
    return out


def run_action(engine, ctx: Context, rule, index: int, action, key_event: str):
    """Apply one action. Returns (events caused, effects, note for the trace or None).

    Raises Stop for ``stop``. A change the domain refuses (say, assigning an unknown
    agent) is skipped and reported, never raised: a rule cannot break an evaluation.
    """
    world, chat, at, rid = ctx.world, ctx.chat, ctx.now, rule.id
    key = (key_event, rid, index)
    kind = action.kind
    try:
        if kind == "stop":
            raise Stop()
        if kind == "notify":
            text = render(action.message, ctx)
            template = action.template or "notification"
            # an agent who turned this template off is not notified (its preferences)
            return [], [Effect("notify", key, chat.id, rid, at, r, template, text)
                        for r in recipients(action, ctx)
                        if world.agents[r].notification_channel(template) != "off"], None
        if kind in ("email", "email_transcript"):
            return [], *emails(action, ctx, key, rid)
        if kind == "webhook":
            # the body is the chat as this rule saw it; the server posts it after the commit
            body = webhook_body(action.webhook, rid, at, chat, ctx.event)
            return [], [Effect("webhook", key, chat.id, rid, at, action.webhook, None, None, body)], None
        if kind in ("reply", "reply_article") and _answers_a_machine(ctx):
            return [], [], AUTO_REPLY
        if kind == "reply":
            if _leaks(action.text, ctx):
                return [], [], PRIVATE_TEXT
            text = render(action.text, ctx)
            events = C.bot_reply(world, at, chat.id, text, rule=rid)
            return events, [Effect("reply", key, chat.id, rid, at, None, None, text)], None
        if kind == "reply_article":
            article = engine.articles.get(action.article)
            if article is None:
                return [], [], f"no article `{action.article}`"
            text = article_text(article)
            events = C.reply_article(world, at, chat.id, action.article, text, rule=rid)
            return events, [Effect("reply", key, chat.id, rid, at, None, None, text)], None
        if kind == "note":
            return C.bot_note(world, at, chat.id, render(action.text, ctx), rule=rid), [], None
        if kind == "assign_agent":
            return C.assign_agent(world, at, chat.id, action.agent, rule=rid), [], None
        if kind == "assign_department":
            return C.assign_department(world, at, chat.id, action.department, action.strategy, rule=rid), [], None
        if kind == "unassign":
            return C.unassign(world, at, chat.id, rule=rid), [], None
        if kind == "subscribe":
            t = action.target
            if t.kind == "operators":
                return C.subscribe_operators(world, at, chat.id, rule=rid), [], None
            if t.kind == "agent":
                return C.subscribe_agent(world, at, chat.id, t.id, rule=rid), [], None
            return C.subscribe_department(world, at, chat.id, t.id, rule=rid), [], None
        if kind == "unsubscribe":
            return C.unsubscribe_agent(world, at, chat.id, action.target.id, rule=rid), [], None
        if kind == "tag":
            return C.tag(world, at, chat.id, action.tag, rule=rid), [], None
        if kind == "untag":
            return C.untag(world, at, chat.id, action.tag, rule=rid), [], None
        if kind == "set_priority":
            return C.set_priority(world, at, chat.id, action.priority, rule=rid), [], None
        if kind == "set_department":
            return C.set_department(world, at, chat.id, action.department, rule=rid), [], None
        if kind == "set_field":
            if private(ctx.message) and _reads_message_text(action.value):
                return [], [], PRIVATE_TEXT  # a field can reach the customer through a reply
            value = _field_value(action.value, ctx)
            if value is _NOT_A_TIME:
                return [], [], f"`{format_value(action.value.base)}` is not a time"
            return C.set_field(world, at, chat.id, action.field_name, value, rule=rid), [], None
        if kind == "snooze":
            if action.schedule is not None:
                until = ctx.ruleset.schedules[action.schedule].next_start(at)
                if until is None:
                    return [], [], f"schedule `{action.schedule}` never opens after a closed period"
                return C.snooze(world, at, chat.id, until=until, rule=rid), [], None
            return C.snooze(world, at, chat.id, duration=action.duration.seconds, rule=rid), [], None
        if kind == "set_status":
            return C.set_status(world, at, chat.id, status=action.status, rule=rid), [], None
        if kind in ("close", "reopen", "lock", "unlock"):
            if kind == "close" and chat.status == "closed" or kind == "reopen" and chat.status == "open":
                return [], [], f"chat is already {chat.status}"
            if kind in ("lock", "unlock") and (chat.assignee is None or (kind == "unlock" and chat.locked_by is None)):
                return [], [], "no assignee to lock for" if kind == "lock" else "chat is not locked"
            fn = getattr(C, kind)
            return fn(world, at, chat.id, rule=rid), [], None
    except CommandRefused as e:
        return [], [], f"{e.code}: {e.message}"
    raise ValueError(f"unknown action kind {kind!r}")  # the compiler only makes known kinds


_NOT_A_TIME = object()


def _field_value(node, ctx: Context):
    """The value a ``set field`` stores; a Shift moves a time (seconds since the epoch)."""
    if isinstance(node, ast.Shift):
        base = compile_value(node.base, {})(ctx)
        if isinstance(base, bool) or not isinstance(base, (int, float)):
            return _NOT_A_TIME  # a custom field holding something else, or none
        seconds = node.amount.seconds
        return float(base + seconds if node.op == "+" else base - seconds)
    return compile_value(node, {})(ctx)


def _reads_message_text(node) -> bool:
    """Whether a ``set field`` value reads what a message says (its text or subject)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Ref) and n.name in ("message.text", "message.subject", "message.mentions"):
            return True
        for name in ("expr", "base", "left", "right", "operand"):
            child = getattr(n, name, None)
            if child is not None and not isinstance(child, (str, int, float)):
                stack.append(child)
        stack.extend(getattr(n, "items", ()) or ())
        stack.extend(getattr(n, "args", ()) or ())
    return False


MAX_TRANSCRIPT = 1000  # messages in one transcript email (the latest ones)
SUMMARY_MESSAGES = 5   # the latest public messages an email to staff shows


def emails(action, ctx: Context, key: tuple, rid: str) -> tuple[list, str | None]:
    """The Effects of ``email RECIPIENT template "t"`` and ``email transcript to …``: one
    email per address, and why a recipient got none (for the trace), or None.

    What an email says comes from the chat's public messages only (``customer_view``):
    never a note, a deleted message or an automatic reply. The customer gets nothing in
    answer to an automatic reply (RFC 3834). ``auto_submitted`` is the RFC 3834 keyword
    the sent email carries: ``auto-replied`` when it answers a customer's message,
    ``auto-generated`` otherwise (a deadline, an agent's action)."""
    chat, at = ctx.chat, ctx.now
    transcript = action.kind == "email_transcript"
    targets = action.targets if transcript else (action.target,)
    event = ctx.event
    answering = (event is not None and event.type in ("message.created", "chat.created")
                 and ctx.message is not None and ctx.message.author == "customer")
    base = {"auto_submitted": "auto-replied" if answering else "auto-generated"}
    if transcript:
        visible = C.customer_view(chat)
        base.update(kind="transcript", messages=[_public(m) for m in visible[-MAX_TRANSCRIPT:]],
                    omitted=max(0, len(visible) - MAX_TRANSCRIPT))
    template = V.TRANSCRIPT_TEMPLATE if transcript else action.template
    effects, skipped, sent = [], [], set()
    for target in targets:
        if target.kind == "customer":
            if _answers_a_machine(ctx):
                skipped.append(AUTO_REPLY)
                continue
            if not chat.customer.email:
                skipped.append("the customer has no email address")
                continue
            addresses = [chat.customer.email]
            if not transcript:
                unread = [m for m in chat.messages if m.public and m.author == "agent" and m.position > chat.customer_read]
                data = {**base, "kind": "customer", "replies": [
                    {"id": m.id, "text": m.text, "at": m.at, "author_id": m.author_id} for m in unread]}
        else:
            addresses, why = _staff_addresses(target, ctx)
            if why:
                skipped.append(why)
            if not transcript:
                data = {**base, "kind": "summary", "to": target.kind, "chat": _chat_summary(chat),
                        "messages": [_public(m) for m in C.customer_view(chat)[-SUMMARY_MESSAGES:]]}
        for address in addresses:
            if address.lower() in sent:
                continue  # one email per address, whoever it is for
            sent.add(address.lower())
            payload = {**base, "to": target.kind} if transcript else data
            effects.append(Effect("email", key, chat.id, rid, at, address, template, None, payload))
    return effects, ("; ".join(dict.fromkeys(skipped)) if skipped else None)


def _staff_addresses(target, ctx: Context) -> tuple[list, str | None]:
    """Addresses of ``agent "id"``, ``department "id"`` or ``address "a@b"``: agents who
    see the chat, did not unsubscribe from it and have an email address."""
    chat, world = ctx.chat, ctx.world
    if target.kind == "address":
        return [target.id], None
    if target.kind == "agent":
        agent = world.agents.get(target.id)
        if agent is None:
            return [], f"no agent `{target.id}`"
        members = [agent]
    else:
        members = [a for a in world.agents.values() if target.id in a.departments]
        if not members:
            return [], f"nobody in department `{target.id}`"
    out = [a.email for a in members if a.sees(chat) and a.id not in chat.muted and a.email]
    if not out:
        who = f"agent `{target.id}`" if target.kind == "agent" else f"department `{target.id}`"
        return [], f"{who}: nobody who sees the chat has an email address"
    return out, None


def _public(m) -> dict:
    return {"author": m.author, "author_id": m.author_id if m.author == "agent" else None,
            "text": m.text, "at": m.at}


def _chat_summary(chat) -> dict:
    c = chat.customer
    return {"id": chat.id, "channel": chat.channel, "status": chat.status, "priority": chat.priority,
            "department": chat.department, "assignee": chat.assignee, "tags": list(chat.tags),
            "customer": {"id": c.id, "name": c.name, "email": c.email, "company": c.company}}


def article_text(article) -> str:
    """How an embedded help-center article reads in a reply."""
    if isinstance(article, str):
        return article
    title = article.get("title") or ""
    body = article.get("body") or article.get("text") or ""
    url = article.get("url")
    parts = [p for p in (title, body, url) if p]
    return "\n".join(parts)
