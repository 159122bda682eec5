"""The generated condition functions (engine.codegen) mean exactly what the reference
closures (engine.conditions) mean, on generated conditions and generated chats."""
from __future__ import annotations

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


def lit(v):
    kind = "none" if v is None else "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "str"
    return ast.Literal(v, kind)


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
)

conditions_st = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.builds(lambda xs: ast.And(tuple(xs)), st.lists(inner, min_size=2, max_size=4)),
        st.builds(lambda xs: ast.Or(tuple(xs)), st.lists(inner, min_size=2, max_size=4)),
        st.builds(ast.Not, inner),
        st.builds(ast.Paren, inner),
    ),
    max_leaves=8,
)


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
    event = Event("c1:1", "message.created", "c1", 100.0, "customer", message_id=message_id)
    return Context(world, chat, event, draw(st.sampled_from([100.0, 400.0, 2000.0])))


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


def test_rule_text_never_enters_the_generated_source():
    evil = '"); import os; os.system("echo pwned"); ("'
    cond = ast.Compare("==", ast.Ref("chat.page_url"), ast.Literal(evil, "str"))
    fn = codegen.compile_condition(cond, {})
    assert evil not in fn.source and "import" not in fn.source
