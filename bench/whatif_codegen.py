"""What-if prototype, NOT chatflow's engine: a condition compiled to ONE Python function.

It backs a suggestion in bench/RESULTS.md with a measured figure. engine/conditions.py
builds a tree of closures (one call per node, one more per fact read, generic operator
functions such as ``_in``/``_contains``); this prototype generates the source of one
function per condition instead, inlines the fact reads and specialises each operator on
its literal operand, keeping SPEC §3.6's meanings (none is false, case-insensitive
``contains``/``starts with`` on texts, membership on lists, no bool/int equality).

It covers only what bench_engine.py generates (comparisons of facts with literals,
and/or); anything else falls back to engine.conditions.compile_condition. bench_engine
checks that it gives the same answer as every other engine, pair by pair.
"""
from __future__ import annotations

from dsl import ast
from engine.conditions import compile_condition as closure_condition
from engine.states import STATE_FUNCS

_CHAT = {"chat.id", "chat.channel", "chat.page_url", "chat.status", "chat.assignee", "chat.department",
         "chat.subscribers", "chat.tags", "chat.priority", "chat.locked_by", "chat.language",
         "chat.created_at", "chat.last_activity_at"}
_CUSTOMER = {"customer.id", "customer.name", "customer.email", "customer.language"}
_MESSAGE = {"message.id", "message.author", "message.kind", "message.text", "message.via"}


class _Unsupported(Exception):
    pass


class _Gen:
    def __init__(self):
        self.env = {"STATE": STATE_FUNCS}

    def const(self, value) -> str:
        name = f"K{len(self.env)}"
        self.env[name] = value
        return name

    def value(self, n) -> str:
        while isinstance(n, ast.Paren):
            n = n.expr
        if not isinstance(n, ast.Ref):
            raise _Unsupported
        name = n.name
        if name in STATE_FUNCS:  # a state reads as true/false (customer.online is one)
            return f"(STATE[{name!r}](ch) is not None)"
        if name in _CHAT:
            return f"ch.{name.split('.', 1)[1]}"
        if name == "chat.message_count":
            return "len(ch.messages)"
        if name in _CUSTOMER:
            return f"ch.customer.{name.split('.', 1)[1]}"
        if name in _MESSAGE:
            return f"(None if (m := ctx.message) is None else m.{name.split('.', 1)[1]})"
        if name == "event.actor":
            return "(None if (e := ctx.event) is None else e.actor)"
        raise _Unsupported

    def cond(self, n) -> str:
        while isinstance(n, ast.Paren):
            n = n.expr
        if isinstance(n, (ast.And, ast.Or)):
            joiner = " and " if isinstance(n, ast.And) else " or "
            return "(" + joiner.join(self.cond(i) for i in n.items) + ")"
        if not isinstance(n, ast.Compare):
            raise _Unsupported
        v, r, op = self.value(n.left), n.right, n.op
        if isinstance(r, ast.Literal):
            c = r.value
            if op == "==" and isinstance(c, bool):
                return f"({v} is {c!r})"
            if op == "==" and isinstance(c, str):
                return f"({v} == {self.const(c)})"
            if op == "==" and isinstance(c, int):
                return f"((x := {v}) == {c!r} and x.__class__ is not bool)"
            if op in ("<", "<=", ">", ">=") and isinstance(c, int) and not isinstance(c, bool):
                return f"(isinstance(x := {v}, (int, float)) and x.__class__ is not bool and x {op} {c!r})"
            if op == "contains" and isinstance(c, str):
                return (f"(({self.const(c.lower())} in x.lower()) if isinstance(x := {v}, str) else "
                        f"(isinstance(x, (list, tuple)) and {self.const(c)} in x))")
            if op == "starts with" and isinstance(c, str):
                return f"(isinstance(x := {v}, str) and x.lower().startswith({self.const(c.lower())}))"
        if op == "in" and isinstance(r, ast.ListLit) and r.items and all(
                isinstance(i, ast.Literal) and isinstance(i.value, str) for i in r.items):
            return f"(isinstance(x := {v}, str) and x in {self.const(frozenset(i.value for i in r.items))})"
        raise _Unsupported


def compile_condition(node, schedules):
    """Like engine.conditions.compile_condition: a function f(ctx) -> bool."""
    if node is None:
        return closure_condition(node, schedules)
    g = _Gen()
    try:
        body = g.cond(node)
    except _Unsupported:
        return closure_condition(node, schedules)
    source = f"def condition(ctx):\n    ch = ctx.chat\n    return {body}\n"
    exec(compile(source, "<chatflow condition>", "exec"), g.env)
    return g.env["condition"]
