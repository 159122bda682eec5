"""SPEC §2 line 11 as a property: whatever agents do, in any order, no private note text
reaches anything customer-facing — the widget view, the unread-replies email, a reply, or
a webhook's body (which leaves the team too).

Random sequences of the commands of SPEC §4 run through the engine with the default
rules; notes carry a marker that must never show up on the customer's side.
"""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl.loader import load_rule_set
from engine.commands import customer_view
from engine.core import Engine
from engine.model import CommandRefused, World

SECRET = "SECRET-NOTE"
# the default rules, and webhooks on every event a note can cause (and on a deadline)
HOOKS = "\n".join(f'rule hook_{i} {{ on {e} then webhook "out" }}' for i, e in enumerate(
    ("message.created", "message.edited", "message.deleted", "chat.closed", "chat.assigned")))
RULESET = load_rule_set([], texts={"hooks.rules": HOOKS + '\nrule late { when chat.unread_by_assignee for 5m then webhook "out" }'}).ruleset
T0 = 1_767_600_000.0

agent = st.sampled_from(["alice", "bob"])
commands = st.one_of(
    st.tuples(st.just("customer_message"), st.just({}), st.sampled_from(["hi", "still there?"])),
    st.tuples(st.just("join"), st.fixed_dictionaries({"agent": agent}), st.none()),
    st.tuples(st.just("reply"), st.fixed_dictionaries({"agent": agent}), st.sampled_from(["hello", "one moment"])),
    st.tuples(st.just("note"), st.fixed_dictionaries({"agent": agent}), st.just(f"{SECRET} @bob check this")),
    # an edit may hit a reply (then its text is public by right), so edits carry no marker
    st.tuples(st.just("edit_message"), st.fixed_dictionaries({"agent": agent, "message": st.just("last")}),
              st.sampled_from(["fixed typo", "see above"])),
    st.tuples(st.just("delete_message"), st.fixed_dictionaries({"agent": agent, "message": st.just("last")}),
              st.none()),
    st.tuples(st.just("read"), st.fixed_dictionaries({"agent": agent}), st.none()),
    st.tuples(st.just("customer_reads"), st.just({}), st.none()),
    st.tuples(st.just("customer_leaves"), st.just({}), st.none()),
    st.tuples(st.just("customer_returns"), st.just({}), st.none()),
    st.tuples(st.just("lock"), st.fixed_dictionaries({"agent": agent}), st.none()),
    st.tuples(st.just("close"), st.fixed_dictionaries({"agent": agent}), st.none()),
    st.tuples(st.just("wait"), st.just({}), st.sampled_from([60, 600, 3600])),
)


def _run(ruleset, steps, agent_emails=False):
    """Agents alice and bob (at alice@/bob@example.com when ``agent_emails``) and a chat c1
    through ``ruleset``: ``steps`` drawn from ``commands`` a second apart, then a week of
    deadlines. Returns the engine and the chat."""
    world = World()
    for a in ("alice", "bob"):
        world.add_agent(a, email=f"{a}@example.com" if agent_emails else None)
    engine = Engine(ruleset, world)
    now = T0
    engine.execute("start_chat", now, chat_id="c1", customer={"id": "u1", "email": "ann@example.com"}, text="Hi")
    for name, args, extra in steps:
        now += 1
        engine.run_due(now)
        if name == "wait":
            now += extra
            engine.run_due(now)
            continue
        kwargs = dict(args)
        if extra is not None:
            kwargs["text"] = extra
        try:
            engine.execute(name, now, chat_id="c1", **kwargs)
        except CommandRefused:
            pass  # a step the domain refuses changes nothing; the sequence goes on
    engine.run_due(now + 7 * 86400)
    return engine, world.chats["c1"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands, max_size=25))
def test_no_note_text_reaches_the_customer(steps):
    engine, chat = _run(RULESET, steps)
    assert all(SECRET not in m.text for m in customer_view(chat))
    for effect in engine.effects:
        if effect.kind == "email":
            assert all(SECRET not in r["text"] for r in effect.data["replies"])
            assert SECRET not in repr(effect.data)
        if effect.kind == "reply":
            assert SECRET not in (effect.text or "")
        if effect.kind == "webhook":
            assert SECRET not in json.dumps(effect.data)
    # the secrets are really in the chat for agents (the property is not vacuous)
    assert all(SECRET in m.text for m in chat.messages if m.kind == "note" and m.edited_at is None)


def test_the_property_sees_secret_notes_and_emails():
    """One fixed run through the same code path: a note, a reply, the customer leaves,
    the unread-replies email goes out listing the reply and not the note."""
    world = World()
    world.add_agent("alice")
    engine = Engine(RULESET, world)
    engine.execute("start_chat", T0, chat_id="c1", customer={"id": "u1", "email": "ann@example.com"}, text="Hi")
    engine.execute("join", T0 + 1, chat_id="c1", agent="alice")
    engine.execute("note", T0 + 2, chat_id="c1", agent="alice", text=f"{SECRET} refund ok")
    engine.execute("reply", T0 + 3, chat_id="c1", agent="alice", text="hello")
    engine.execute("customer_leaves", T0 + 4, chat_id="c1")
    engine.run_due(T0 + 3600)
    [email] = [e for e in engine.effects if e.kind == "email"]
    hooks = [e for e in engine.effects if e.kind == "webhook"]
    assert [h.data["event"]["type"] for h in hooks] == ["message.created", "message.created"]  # the note, the reply
    assert SECRET in world.chats["c1"].messages[1].text and all(SECRET not in json.dumps(h.data) for h in hooks)
    assert [r["text"] for r in email.data["replies"]] == ["hello"]
    assert [m.text for m in customer_view(world.chats["c1"])] == ["Hi", "hello"]
    assert any(SECRET in m.text for m in world.chats["c1"].messages)


# Issue 8 item 9: `{{ message.text }}` in rule texts. Rules that repeat whatever message they
# run on, with no guard on its kind, and copy its text into fields a reply then shows: on a
# note (or a deleted message) the engine skips them, so the property above still holds.
ECHO_RULES = '''
rule echo { on message.created when event.actor != "rule" then reply "echo: {{ message.text }}" }
rule echo_whole { on message.created when event.actor != "rule" then reply "all: {{ message }} {{ message.mentions }}" }
rule echo_edit { on message.edited then reply "edited: {{ message.text | upper | lower }}" }
rule echo_deleted { on message.deleted then reply "deleted: {{ message.text }}" }
rule keep { on message.created when event.actor != "rule" then set field last = message.text }
rule keep_mentions { on message.created when event.actor != "rule" then set field who = message.mentions }
rule show { on chat.updated when changed(chat.fields.last) then reply "last: {{ chat.fields.last }}" }
rule transcript { on message.created when event.actor != "rule" then email transcript to customer, address "archive@example.com" }
rule summary { on message.created then email address "lead@example.com" template "chat_summary" }
rule to_staff { on message.edited then email agent "alice" template "chat_summary" }
'''


def _echo_ruleset():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "echo.rules"
        path.write_text(ECHO_RULES, encoding="utf-8")
        loaded = load_rule_set([str(path)])
    assert loaded.ruleset is not None, [d.message for d in loaded.diagnostics]
    return loaded.ruleset


ECHO_RULESET = _echo_ruleset()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands, max_size=25))
def test_no_note_text_reaches_the_customer_through_message_text(steps):
    engine, chat = _run(ECHO_RULESET, steps, agent_emails=True)
    assert all(SECRET not in m.text for m in customer_view(chat))
    assert all(SECRET not in (e.text or "") for e in engine.effects if e.kind == "reply")
    assert SECRET not in repr(chat.fields)
    # transcripts and summaries, to the customer or anyone else, carry public messages only
    assert all(SECRET not in repr(e.data) for e in engine.effects if e.kind == "email")
    assert all(SECRET in m.text for m in chat.messages if m.kind == "note" and m.edited_at is None)


def test_echo_rules_do_repeat_customer_messages():
    """The echo rules are live: a customer's message comes back in a reply and a field
    (so the property above is not vacuous), while a note's gives nothing."""
    world = World()
    world.add_agent("alice")
    engine = Engine(ECHO_RULESET, world)
    engine.execute("start_chat", T0, chat_id="c1", customer={"id": "u1"}, text="Hi")
    engine.execute("customer_message", T0 + 1, chat_id="c1", text="where is it")
    engine.execute("note", T0 + 2, chat_id="c1", agent="alice", text=f"{SECRET} @alice")
    replies = [e.text for e in engine.effects if e.kind == "reply"]
    assert "echo: where is it" in replies and "last: where is it" in replies
    assert world.chats["c1"].fields["last"] == "where is it"
    assert not any(SECRET in r for r in replies)
    # the note's message.created sent a summary too, without the note
    summaries = [e for e in engine.effects if e.kind == "email" and e.template == "chat_summary"]
    assert len(summaries) >= 3 and [m["text"] for m in summaries[-1].data["messages"]][:2] == ["Hi", "where is it"]
    assert not any(SECRET in repr(e.data) for e in summaries)
