"""Conditions compiled to the source of one Python function each.

Evaluating a tree of closures costs a call per node and per fact read; a generated
function reads facts inline (``ch.priority``), specialises each operator on its literal
operand (a set for ``in [...]``, a pre-lowered text for ``contains``), and lets Python's
own ``and``/``or`` short-circuit. The meanings are exactly those of
:mod:`engine.conditions` (SPEC §3.6), which stays the reference: a property test checks
that both give the same answer on generated conditions and chats.

Safety: the generated text contains no text from the rule file. Every literal, name and
pattern is bound in the function's namespace as a constant (``K3``) and referred to by
that generated name, so a rule cannot inject code.
"""
from __future__ import annotations

import functools

from dsl import ast
from dsl import vocabulary as V
from dsl.schedule import business_deadline
from dsl.compiler import anchor_key, is_state_duration

from . import conditions as ref
from .context import getter
from .states import STATE_FUNCS

# facts read straight off the chat and its customer
_CHAT_ATTRS = {"chat.id", "chat.channel", "chat.page_url", "chat.status", "chat.assignee",
               "chat.department", "chat.subscribers", "chat.tags", "chat.priority", "chat.locked_by",
               "chat.language", "chat.created_at", "chat.last_activity_at", "chat.snoozed_until"}
_OPTIONAL_ATTRS = {"message.id", "message.author", "message.author_id", "message.kind", "message.text",
                   "message.via", "event.type", "event.actor", "event.rule", "agent.id", "agent.name",
                   "agent.status", "message.subject"}
_CUSTOMER_ATTRS = {"customer.id", "customer.name", "customer.email", "customer.online", "customer.language",
                   "customer.phone", "customer.country", "customer.city", "customer.company"}


def _business_due(sched, seconds, since):
    return business_deadline(sched, since, seconds)


class _Gen:
    def __init__(self, schedules):
        self.schedules = schedules
        self.env: dict = {"_ref": ref}
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value) -> str:
        k = self.name("K")
        self.env[k] = value
        return k

    def tmp(self) -> str:
        return self.name("v")

    # ---------------------------------------------------------------- values

    def value(self, n) -> str:
        """A Python expression for an operand's value (None for none)."""
        while isinstance(n, ast.Paren):
            n = n.expr
        if isinstance(n, ast.Literal):
            return self.const(n.value)
        if isinstance(n, ast.Duration):
            return self.const(n.seconds)
        if isinstance(n, ast.ListLit):
            if all(isinstance(i, ast.Literal) for i in n.items):
                return self.const([i.value for i in n.items])
            return "[" + ", ".join(self.value(i) for i in n.items) + "]"
        if isinstance(n, ast.Ref):
            return self.ref(n.name)
        if isinstance(n, ast.Call):
            return self.call(n)
        return f"bool({self.cond(n)})"

    def ref(self, name: str) -> str:
        if name in STATE_FUNCS:
            return f"({self.const(STATE_FUNCS[name])}(ch) is not None)"
        if name in _CHAT_ATTRS:
            return f"ch.{name[5:]}"
        if name in _CUSTOMER_ATTRS:
            return f"ch.customer.{name[9:]}"
        if name == "chat.message_count":
            return "len(ch.messages)"
        if name == "assignee.id":
            return "ch.assignee"
        root, _, attr = name.partition(".")
        if root in ("message", "event", "agent") and name in _OPTIONAL_ATTRS:
            # the event's message / the event / the acting agent may be absent: none then
            m = self.tmp()
            return f"(None if ({m} := ctx.{root}) is None else {m}.{attr})"
        if name == "now":
            return "ctx.now"
        if name.startswith("chat.fields."):
            return f"ch.fields.get({self.const(name[len('chat.fields.'):])})"
        if name.startswith("customer.fields."):
            return f"ch.customer.fields.get({self.const(name[len('customer.fields.'):])})"
        return f"{self.const(getter(name))}(ctx)"

    def call(self, n: ast.Call) -> str:
        if n.name == "in_schedule":
            sched = self.schedules[n.args[0].value]
            return f"{self.const(sched.contains)}(ctx.now)"
        if n.name in V.SLA_STATES:
            from . import sla

            return f"{self.const(sla.STATE_TESTS[n.name])}(ctx, {self.const(n.args[0].value)})"
        fn = {"lower": ref._lower, "len": ref._len, "hour": ref._hour, "weekday": ref._weekday}[n.name]
        return f"{self.const(fn)}(" + ", ".join(self.value(a) for a in n.args) + ")"

    # ---------------------------------------------------------------- conditions

    def cond(self, n) -> str:
        """A Python expression that is True or False."""
        while isinstance(n, ast.Paren):
            n = n.expr
        if isinstance(n, ast.And):
            return "(" + " and ".join(self.cond(i) for i in n.items) + ")"
        if isinstance(n, ast.Or):
            return "(" + " or ".join(self.cond(i) for i in n.items) + ")"
        if isinstance(n, ast.Not):
            return f"(not {self.cond(n.operand)})"
        if isinstance(n, ast.IsNone):
            return f"({self.value(n.operand)} is {'not ' if n.negated else ''}None)"
        if isinstance(n, ast.For):
            inner = n.operand
            while isinstance(inner, ast.Paren):
                inner = inner.expr
            s = self.tmp()
            if not is_state_duration(n):  # the whole condition's anchor, kept by the engine
                key = self.const(anchor_key(inner))
                return f"(({s} := ctx.anchors.get({key})) is not None and ctx.now - {s} >= {n.duration.seconds!r})"
            since = self.const(STATE_FUNCS[inner.name])
            if n.within is not None:
                due, d = self.const(functools.partial(_business_due, self.schedules[n.within], n.duration.seconds)), self.tmp()
                return (f"(({s} := {since}(ch)) is not None and ({d} := {due}({s})) is not None"
                        f" and ctx.now >= {d})")
            return f"(({s} := {since}(ch)) is not None and ctx.now - {s} >= {n.duration.seconds!r})"
        if isinstance(n, ast.Compare):
            return self.compare(n)
        if isinstance(n, ast.Changed):
            return self.changed(n)
        if isinstance(n, ast.Literal):
            return "True" if n.value is True else "False"
        return f"({self.value(n)} is True)"

    def compare(self, n: ast.Compare) -> str:
        op, left = n.op, self.value(n.left)
        right_node = n.right
        while isinstance(right_node, ast.Paren):
            right_node = right_node.expr
        lit = right_node if isinstance(right_node, ast.Literal) else None
        v = self.tmp()
        if op == "matches":
            return f"{self.const(ref._compile_compare(n, self.schedules))}(ctx)"
        if op in ("==", "!=") and lit is not None and isinstance(lit.value, str):
            test = f"({left} == {self.const(lit.value)})"  # a text equals only that text
            return test if op == "==" else f"(not {test})"
        if op in ("==", "!=") and lit is not None and lit.value is None:
            test = f"({left} is None)"
            return test if op == "==" else f"(not {test})"
        if op in ("<", "<=", ">", ">=") and lit is not None and type(lit.value) is int and self._typed(n.left, "int"):
            return f"(({v} := {left}) is not None and {v} {op} {self.const(lit.value)})"
        if op in ("in", "not in") and self._typed(n.left, "str") and isinstance(right_node, ast.ListLit) and all(
                isinstance(i, ast.Literal) and isinstance(i.value, str) for i in right_node.items):
            test = f"({left} in {self.const(frozenset(i.value for i in right_node.items))})"
            return test if op == "in" else f"(not {test})"
        if op == "contains" and lit is not None and isinstance(lit.value, str):
            if self._typed(n.left, "str"):
                return f"(({v} := {left}) is not None and {self.const(lit.value.lower())} in {v}.lower())"
            if self._typed(n.left, "list"):
                return f"(({v} := {left}) is not None and {self.const(lit.value)} in {v})"
        if op in ("starts with", "ends with") and lit is not None and isinstance(lit.value, str) \
                and self._typed(n.left, "str"):
            method = "startswith" if op == "starts with" else "endswith"
            return f"(({v} := {left}) is not None and {v}.lower().{method}({self.const(lit.value.lower())}))"
        fn = self.const(ref.BINARY[op])
        return f"{fn}({left}, {self.value(n.right)})"

    def changed(self, n: ast.Changed) -> str:
        """True only on a chat.updated whose changes hold the fact (and its values)."""
        fact = n.fact
        while isinstance(fact, ast.Paren):
            fact = fact.expr
        e, c, key = self.tmp(), self.tmp(), self.const(V.change_key(fact.name))
        test = (f"(({e} := ctx.event) is not None and {e}.type == {self.const(V.UPDATE_EVENT)}"
                f" and ({c} := {e}.data.get('changes')) is not None and {key} in {c}")
        if n.new is None:
            return test + ")"
        eq = self.const(ref._eq)
        if n.old is not None:
            test += f" and {eq}({c}[{key}][0], {self.value(n.old)})"
        return test + f" and {eq}({c}[{key}][1], {self.value(n.new)}))"

    @staticmethod
    def _typed(node, type_name: str) -> bool:
        """True when the node is a fact declared with this type (so no other kind of value
        can reach the specialised code)."""
        while isinstance(node, ast.Paren):
            node = node.expr
        if not isinstance(node, ast.Ref) or node.name in STATE_FUNCS:
            return False
        t = V.FACTS.get(node.name)
        return t is not None and t.name == type_name


def compile_condition(node, schedules):
    """One generated function ``f(ctx) -> bool`` for a type-checked condition."""
    if node is None:
        return lambda ctx: True
    gen = _Gen(schedules)
    body = gen.cond(node)
    # every part is already True/False (or/and of them too), so no bool() is needed
    source = f"def condition(ctx):\n    ch = ctx.chat\n    return {body}\n"
    code = compile(source, "<chatflow condition>", "exec")
    namespace = dict(gen.env)
    exec(code, namespace)  # the source is ours alone: rule text only enters as bound constants
    fn = namespace["condition"]
    fn.source = source
    return fn
