"""The generated condition functions (engine.codegen) mean exactly what the reference
closures (engine.conditions) mean, on generated conditions and generated chats."""
from __future__ import annotations

import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl import ast
from engine import codegen, conditions
from engine.context import Context
from engine.model import Chat, Customer, Event, Message, World

TEXT_FACTS = ["chat.page_url", "chat.channel", "chat.status", "chat.assignee", "chat.department",
              "customer.name", "customer.email", "message.text", "message.author", "chat.fields.plan"]
INT_FACTS = ["chat.priority", "chat.message_count", "assignee.open_chats", "chat.fields.score"]
LIST_FACTS = ["chat.tags", "chat.subscribers", "message.mentions"]
STATES = ["chat.idle", "chat.open", "chat.assigned", "chat.awaiting_agent", "customer.online"]
# few, overlapping words, so that case differences and substrings meet often
WORDS = ["", "a", "A", "ab", "Ab", "b", "widget", "open", "alice"]

texts = st.sampled_from(WORDS)
ints = st.integers(-1, 5)
# change conditions: the facts a chat.updated reports, and values that meet often
CHANGE_FACTS = ["chat.status", "chat.priority", "chat.department", "chat.tags", "chat.assignee",
                "chat.fields.plan", "chat.fields.score"]
CHANGE_KEYS = ["status", "priority", "department", "tags", "assignee", "fields.plan", "fields.score"]
change_values = st.one_of(st.sampled_from(["a", "open", "alice"]), st.integers(0, 2), st.none(),
                          st.lists(st.sampled_from(["a", "b"]), max_size=2))


def lit(v):
    if isinstance(v, list):
        return ast.ListLit(tuple(lit(x) for x in v))
    kind = "none" if v is None else "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "str"
    return ast.Literal(v, kind)


def _changed(fact, form, old, new):
    if form == 0:
        return ast.Changed(ast.Ref(fact))
    return ast.Changed(ast.Ref(fact), lit(old) if form == 2 else None, lit(new))


atoms = st.one_of(
    st.builds(lambda f, op, v: ast.Compare(op, ast.Ref(f), lit(v)), st.sampled_from(TEXT_FACTS),
              st.sampled_from(["==", "!=", "contains", "starts with", "ends with"]), st.one_of(texts, st.none())),
    st.builds(lambda f, op, v: ast.Compare(op, ast.Ref(f), lit(v)), st.sampled_from(INT_FACTS),
              st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), st.one_of(ints, st.none())),
    st.builds(lambda f, vs, neg: ast.Compare("not in" if neg else "in", ast.Ref(f),
                                             ast.ListLit(tuple(lit(v) for v in vs))),
              st.sampled_from(TEXT_FACTS), st.lists(texts, max_size=3), st.booleans()),
    st.builds(lambda f, v: ast.Compare("contains", ast.Ref(f), lit(v)), st.sampled_from(LIST_FACTS), texts),
    st.builds(lambda f, neg: ast.IsNone(ast.Ref(f), neg), st.sampled_from(TEXT_FACTS + INT_FACTS), st.booleans()),
    st.builds(lambda s, secs: ast.For(ast.Ref(s), ast.Duration(secs, f"{secs}s")), st.sampled_from(STATES),
              st.integers(1, 900)),
    st.builds(ast.Ref, st.sampled_from(STATES)),
    st.builds(lambda f, p: ast.Compare("matches", ast.Ref(f), ast.Regex(p)), st.sampled_from(TEXT_FACTS),
              st.sampled_from(["^p", "(?i)PRICING", "a|b", "^$"])),
    st.builds(_changed, st.sampled_from(CHANGE_FACTS), st.integers(0, 2), change_values, change_values),
)

conditions_st = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.builds(lambda xs: ast.And(tuple(xs)), st.lists(inner, min_size=2, max_size=4)),
        st.builds(lambda xs: ast.Or(tuple(xs)), st.lists(inner, min_size=2, max_size=4)),
        st.builds(ast.Not, inner),
        st.builds(ast.Paren, inner),
        # issue 8.2: a condition held for a duration reads its anchor from the context
        st.builds(lambda c, secs: ast.For(ast.Paren(c), ast.Duration(secs, f"{secs}s")), inner,
                  st.integers(1, 900)),
    ),
    max_leaves=8,
)


class _Anchors(dict):
    """Anchors for any condition: none, or an instant picked from its key, the same for
    the generated code and the reference."""

    def get(self, key, default=None):
        return (None, 0.0, 90.0, 350.0)[zlib.crc32(key.encode()) % 4]


@st.composite
def contexts(draw):
    world = World()
    for a in ("alice", "bob"):
        world.add_agent(a)
    customer = Customer("u1", draw(st.one_of(texts, st.none())), draw(st.one_of(texts, st.none())),
                        online=draw(st.booleans()), online_since=0.0)
    chat = Chat("c1", draw(st.sampled_from(["widget", "email"])), customer, created_at=0.0,
                page_url=draw(st.one_of(texts, st.none())), assignee=draw(st.sampled_from([None, "alice"])),
                department=draw(st.one_of(texts, st.none())), priority=draw(st.integers(0, 4)),
                tags=draw(st.lists(texts, max_size=3)), subscribers=draw(st.lists(st.sampled_from(["alice", "bob"]),
                                                                                   unique=True)),
                fields=draw(st.dictionaries(st.sampled_from(["plan", "score"]),
                                            st.one_of(texts, ints, st.none(), st.booleans()))),
                opened_at=0.0, assigned_at=0.0, unassigned_at=0.0)
    n = draw(st.integers(0, 3))
    for i in range(n):
        author = draw(st.sampled_from(["customer", "agent"]))
        chat.messages.append(Message(f"c1:m{i + 1}", i, author, "alice" if author == "agent" else "u1", "reply",
                                     draw(texts), "widget", at=float(10 * i)))
    world.chats["c1"] = chat
    message_id = chat.messages[-1].id if chat.messages and draw(st.booleans()) else None
    kind = draw(st.sampled_from(["message.created", "chat.updated", "deadline"]))
    if kind == "deadline":
        event = None
    elif kind == "chat.updated":
        changes = draw(st.dictionaries(st.sampled_from(CHANGE_KEYS),
                                       st.tuples(change_values, change_values).map(list), max_size=3))
        event = Event("c1:1", "chat.updated", "c1", 100.0, "rule", rule="r",
                      data={"changes": changes, "events": []})
    else:
        event = Event("c1:1", "message.created", "c1", 100.0, "customer", message_id=message_id)
    return Context(world, chat, event, draw(st.sampled_from([100.0, 400.0, 2000.0])), anchors=_Anchors())


def _agree(cond, ctx):
    got = codegen.compile_condition(cond, {})(ctx)
    want = conditions.compile_condition(cond, {})(ctx)
    assert got == want, codegen.compile_condition(cond, {}).source


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(atoms, contexts())
def test_each_operator_agrees_with_the_reference(cond, ctx):
    _agree(cond, ctx)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conditions_st, contexts())
def test_nested_conditions_agree_with_the_reference(cond, ctx):
    _agree(cond, ctx)


def test_change_conditions_are_true_only_on_chat_updated():
    world = World()
    chat = Chat("c1", "widget", Customer("u1"), created_at=0.0, priority=4)
    world.chats["c1"] = chat
    data = {"changes": {"priority": [1, 4]}, "events": []}
    for fn in (codegen.compile_condition, conditions.compile_condition):
        def holds(cond, event):
            return fn(cond, {})(Context(world, chat, event, 100.0))
        to4 = ast.Changed(ast.Ref("chat.priority"), None, lit(4))
        updated = Event("c1:2", "chat.updated", "c1", 100.0, "rule", data=data)
        # another event carrying the same data is not a change
        other = Event("c1:2", "chat.tagged", "c1", 100.0, "rule", data=data)
        assert holds(to4, updated) and not holds(to4, other) and not holds(to4, None)
        assert holds(ast.Changed(ast.Ref("chat.priority"), lit(1), lit(4)), updated)
        assert not holds(ast.Changed(ast.Ref("chat.priority"), lit(2), lit(4)), updated)
        assert not holds(ast.Changed(ast.Ref("chat.status")), updated)


def test_rule_text_never_enters_the_generated_source():
    evil = '"); import os; os.system("echo pwned"); ("'
    cond = ast.Compare("==", ast.Ref("chat.page_url"), ast.Literal(evil, "str"))
    fn = codegen.compile_condition(cond, {})
    assert evil not in fn.source and "import" not in fn.source


# ---------------------------------------------------------------- SLA states and business time

_SLA_SET = None


def _sla_ruleset():
    """Policies with short targets (the generated chats live in the first 2000 s of 1970,
    a Thursday night: `within "h"` moves their due times to 09:00)."""
    global _SLA_SET
    if _SLA_SET is None:
        from dsl.loader import load_rule_set

        _SLA_SET = load_rule_set([], defaults=False, texts={"sla.rules": '''
            schedule h { mon-fri 09:00-18:00 }
            sla vip { when chat.priority >= 3 first_response 20s next_response 30s resolution 500s due_soon 10s }
            sla mail { when chat.channel == "email" within "h" first_response 1h due_soon 30m }
        '''}).ruleset
    return _SLA_SET


sla_atoms = st.one_of(
    st.builds(lambda name, target: ast.Call(name, (lit(target),)),
              st.sampled_from(["chat.sla_breached", "chat.sla_due_soon"]),
              st.sampled_from(["first_response", "next_response", "resolution"])),
    st.builds(lambda s, secs: ast.For(ast.Ref(s), ast.Duration(secs, f"{secs}s"), within="h"),
              st.sampled_from(STATES), st.integers(1, 40000)),
    atoms,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(sla_atoms, lambda inner: st.one_of(
    st.builds(lambda xs: ast.And(tuple(xs)), st.lists(inner, min_size=2, max_size=3)),
    st.builds(ast.Not, inner)), max_leaves=5), contexts(), st.sampled_from([100.0, 400.0, 40000.0]))
def test_sla_states_and_business_time_agree_with_the_reference(cond, ctx, now):
    ruleset = _sla_ruleset()
    ctx = Context(ctx.world, ctx.chat, ctx.event, now, ruleset)
    got = codegen.compile_condition(cond, ruleset.schedules)(ctx)
    want = conditions.compile_condition(cond, ruleset.schedules)(ctx)
    assert got == want, codegen.compile_condition(cond, ruleset.schedules).source
