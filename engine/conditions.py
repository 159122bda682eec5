"""Conditions compiled to Python closures, and the same conditions explained for traces.

``compile_condition`` turns a type-checked condition AST into one closure
``f(ctx) -> bool``: every fact getter, regex and constant is bound at compile time, so
evaluating a rule walks no tree and looks nothing up by name. ``explain`` evaluates the
same AST slowly, returning each sub-condition with its value, for ``dry-run`` traces.

The meanings are those of SPEC §3.6: none compares false with everything but none;
``A != B`` is ``not (A == B)``; ``contains``/``starts with``/``ends with`` ignore case
on texts; ``matches`` searches anywhere.
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import regex

from dsl import ast
from dsl.compiler import anchor_key, is_state_duration
from dsl.schedule import business_deadline
from dsl.vocabulary import SLA_STATES, UPDATE_EVENT, change_key

from .context import getter
from .states import STATE_FUNCS

REGEX_TIMEOUT = 0.05  # seconds one `matches` may take
MAX_MATCH_TEXT = 100_000  # characters of a text `matches` looks at
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _eq(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _order(op):
    import operator

    fn = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[op]

    def cmp(a, b):
        if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
            return False
        try:
            return fn(a, b)
        except TypeError:
            return False
    return cmp


def _in(a, b):
    if a is None or b is None:
        return False
    try:
        return any(_eq(a, x) for x in b)
    except TypeError:
        return False


def _contains(a, b):
    if a is None or b is None:
        return False
    if isinstance(a, str):
        return isinstance(b, str) and b.lower() in a.lower()
    if isinstance(a, (list, tuple)):
        return any(_eq(x, b) for x in a)
    return False


def _starts(a, b):
    return isinstance(a, str) and isinstance(b, str) and a.lower().startswith(b.lower())


def _ends(a, b):
    return isinstance(a, str) and isinstance(b, str) and a.lower().endswith(b.lower())


BINARY = {
    "==": _eq,
    "!=": lambda a, b: not _eq(a, b),
    "<": _order("<"), "<=": _order("<="), ">": _order(">"), ">=": _order(">="),
    "in": _in,
    "not in": lambda a, b: not _in(a, b),
    "contains": _contains,
    "starts with": _starts,
    "ends with": _ends,
}


def _lower(x):
    return x.lower() if isinstance(x, str) else None


def _len(x):
    return len(x) if isinstance(x, (str, list, tuple)) else None


def _hour(t, tz):
    if t is None:
        return None
    return datetime.fromtimestamp(t, ZoneInfo(tz)).hour


def _weekday(t, tz):
    if t is None:
        return None
    return WEEKDAYS[datetime.fromtimestamp(t, ZoneInfo(tz)).weekday()]


def compile_value(node, schedules):
    """A closure ``f(ctx) -> value`` for an operand node."""
    if isinstance(node, ast.Paren):
        return compile_value(node.expr, schedules)
    if isinstance(node, ast.Literal):
        v = node.value
        return lambda ctx: v
    if isinstance(node, ast.Duration):
        v = node.seconds
        return lambda ctx: v
    if isinstance(node, ast.ListLit):
        items = [compile_value(i, schedules) for i in node.items]
        if all(isinstance(i, ast.Literal) for i in node.items):
            const = [i.value for i in node.items]
            return lambda ctx: const
        return lambda ctx: [f(ctx) for f in items]
    if isinstance(node, ast.Ref):
        return getter(node.name)
    if isinstance(node, ast.Call):
        return _compile_call(node, schedules)
    return compile_condition(node, schedules)


def _compile_call(node: ast.Call, schedules):
    if node.name == "in_schedule":
        sched = schedules[node.args[0].value]
        return lambda ctx: sched.contains(ctx.now)
    if node.name in SLA_STATES:
        from . import sla

        test, target = sla.STATE_TESTS[node.name], node.args[0].value
        return lambda ctx: test(ctx, target)
    args = [compile_value(a, schedules) for a in node.args]
    if node.name == "lower":
        (a,) = args
        return lambda ctx: _lower(a(ctx))
    if node.name == "len":
        (a,) = args
        return lambda ctx: _len(a(ctx))
    fn = _hour if node.name == "hour" else _weekday
    t, tz = args
    return lambda ctx: fn(t(ctx), tz(ctx))


def compile_condition(node, schedules):
    """A closure ``f(ctx) -> bool`` for a type-checked condition; None compiles to always true."""
    if node is None:
        return lambda ctx: True
    if isinstance(node, ast.Paren):
        return compile_condition(node.expr, schedules)
    if isinstance(node, ast.And):
        parts = tuple(compile_condition(i, schedules) for i in node.items)
        if len(parts) == 2:
            a, b = parts
            return lambda ctx: a(ctx) and b(ctx)
        return lambda ctx: all(p(ctx) for p in parts)
    if isinstance(node, ast.Or):
        parts = tuple(compile_condition(i, schedules) for i in node.items)
        if len(parts) == 2:
            a, b = parts
            return lambda ctx: a(ctx) or b(ctx)
        return lambda ctx: any(p(ctx) for p in parts)
    if isinstance(node, ast.Not):
        inner = compile_condition(node.operand, schedules)
        return lambda ctx: not inner(ctx)
    if isinstance(node, ast.For):
        return _compile_for(node, schedules)
    if isinstance(node, ast.Changed):
        return _compile_changed(node, schedules)
    if isinstance(node, ast.IsNone):
        v = compile_value(node.operand, schedules)
        if node.negated:
            return lambda ctx: v(ctx) is not None
        return lambda ctx: v(ctx) is None
    if isinstance(node, ast.Compare):
        return _compile_compare(node, schedules)
    if isinstance(node, ast.Literal):
        value = node.value is True
        return lambda ctx: value
    v = compile_value(node, schedules)
    return lambda ctx: v(ctx) is True


def _compile_for(node: ast.For, schedules):
    inner = node.operand
    while isinstance(inner, ast.Paren):
        inner = inner.expr
    seconds = node.duration.seconds
    if not is_state_duration(node):
        key = anchor_key(inner)

        def held_condition(ctx):
            s = ctx.anchors.get(key)
            return s is not None and ctx.now - s >= seconds
        return held_condition
    since = STATE_FUNCS[inner.name]
    if node.within is not None:
        sched = schedules[node.within]

        def held_within(ctx):
            s = since(ctx.chat)
            if s is None:
                return False
            due = business_deadline(sched, s, seconds)
            return due is not None and ctx.now >= due
        return held_within

    def held(ctx):
        s = since(ctx.chat)
        return s is not None and ctx.now - s >= seconds
    return held


def changes_of(ctx) -> dict | None:
    """The ``{field: [old, new]}`` of the chat.updated being evaluated, or None at any
    other event and at a deadline."""
    e = ctx.event
    if e is None or e.type != UPDATE_EVENT:
        return None
    return e.data.get("changes")


def _compile_changed(node: ast.Changed, schedules):
    """``changed(F)``: F is among the changes; ``F changed to V``: and its new value == V;
    ``F changed from V to W``: and its old value == V and its new value == W."""
    fact = node.fact
    while isinstance(fact, ast.Paren):
        fact = fact.expr
    key = change_key(fact.name)
    if node.new is None:
        def changed(ctx):
            c = changes_of(ctx)
            return c is not None and key in c
        return changed
    new = compile_value(node.new, schedules)
    old = compile_value(node.old, schedules) if node.old is not None else None

    def changed_to(ctx):
        c = changes_of(ctx)
        if c is None or key not in c:
            return False
        was, now = c[key]
        return (old is None or _eq(was, old(ctx))) and _eq(now, new(ctx))
    return changed_to


def _compile_compare(node: ast.Compare, schedules):
    left = compile_value(node.left, schedules)
    if node.op == "matches":
        search = regex.compile(node.right.pattern).search

        def matches(ctx):
            v = left(ctx)
            if not isinstance(v, str):
                return False
            try:  # a catastrophic pattern gives up instead of stalling the engine
                return search(v[:MAX_MATCH_TEXT], timeout=REGEX_TIMEOUT) is not None
            except TimeoutError:
                return False
        return matches
    op = BINARY[node.op]
    if isinstance(node.right, ast.Literal):
        const = node.right.value
        if node.op == "==" and isinstance(const, str):
            return lambda ctx: left(ctx) == const  # a text equals only that text
        return lambda ctx: op(left(ctx), const)
    right = compile_value(node.right, schedules)
    return lambda ctx: op(left(ctx), right(ctx))


def explain(node, ctx, schedules) -> list:
    """[(depth, text, value)] for the condition and each sub-condition, in reading order:
    why a rule fired or did not."""
    out = []

    def walk(n, depth):
        fn, text = _explained(n, schedules)
        out.append((depth, text, fn(ctx)))
        inner = n.expr if isinstance(n, ast.Paren) else n
        if isinstance(inner, (ast.And, ast.Or)):
            for i in inner.items:
                walk(i, depth + 1)
        elif isinstance(inner, ast.Not):
            walk(inner.operand, depth + 1)
        elif isinstance(inner, ast.For):
            r = inner.operand
            while isinstance(r, ast.Paren):
                r = r.expr
            if is_state_duration(inner):
                since = STATE_FUNCS[r.name](ctx.chat)
                sched = schedules.get(inner.within) if inner.within is not None else None
                out.append((depth + 1, f"{r.name} {_held(since, ctx.now, inner.duration, sched)}", since is not None))
            else:
                since = ctx.anchors.get(anchor_key(r))
                out.append((depth + 1, f"the condition {_held(since, ctx.now, inner.duration)}", since is not None))
                walk(r, depth + 1)
        elif isinstance(inner, ast.Compare):
            for side in (inner.left, inner.right):
                if isinstance(side, (ast.Ref, ast.Call)):
                    fn, text = _explained(side, schedules, as_value=True)
                    out.append((depth + 1, text, fn(ctx)))
        elif isinstance(inner, ast.IsNone) and isinstance(inner.operand, (ast.Ref, ast.Call)):
            fn, text = _explained(inner.operand, schedules, as_value=True)
            out.append((depth + 1, text, fn(ctx)))
        elif isinstance(inner, ast.Changed):
            out.append((depth + 1, "changes", _shown_changes(changes_of(ctx))))
        if isinstance(inner, ast.Call) and inner.name in SLA_STATES:
            out.append((depth + 1, "sla", _shown_sla(ctx, inner.args[0].value)))

    walk(node, 0)
    return out


_EXPLAINED: dict = {}  # (id(node), as_value) -> (node, schedules, closure, text)


def _explained(n, schedules, as_value: bool = False) -> tuple:
    """The closure (of the condition, or with ``as_value`` of the operand's value) and the
    source text of a node, made once per node and schedules: a service explains the same
    rules again and again. The entry keeps the node alive, so its id is not reused."""
    key = (id(n), as_value)
    hit = _EXPLAINED.get(key)
    if hit is not None and hit[0] is n and hit[1] is schedules:
        return hit[2], hit[3]
    from dsl.formatter import format_expr

    value = as_value or _is_operand(n)
    fn = compile_value(n, schedules) if value else compile_condition(n, schedules)
    text = format_expr(n)
    if len(_EXPLAINED) > 20_000:  # rule sets come and go over a long life: start again
        _EXPLAINED.clear()
    _EXPLAINED[key] = (n, schedules, fn, text)
    return fn, text


def _shown_changes(changes) -> dict | None:
    # what the event changed, as the trace shows a value: {field: [old, new]}
    return None if changes is None else {k: list(v) for k, v in changes.items()}


def _is_operand(n) -> bool:
    return isinstance(n, (ast.Literal, ast.Duration, ast.ListLit, ast.Regex))


def _held(since, now, duration, sched=None) -> str:
    if since is None:
        return "is false"
    if sched is not None:
        from dsl.schedule import business_seconds

        return f"has held {business_seconds(sched, since, now):g}s of {duration.text} within {sched.id}"
    return f"has held {now - since:g}s of {duration.text}"


def _shown_sla(ctx, target: str) -> dict | None:
    # the chat's policy and the target's cycle, as the trace shows a value
    from . import sla

    c = sla.clock(ctx, target)
    if c is None:
        return {"policy": sla.policy_id(ctx), "target": target, "state": "none"}
    return c.as_dict(ctx.now)
