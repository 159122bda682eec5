"""Type-checking and constant folding of conditions against the vocabulary.

``check_expr`` walks a condition once, reports every unknown name and type mismatch
through the ``report`` callback, and returns the node's type and, when it can be known at
compile time, its constant value (used for folding and for the always-true/false lint).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import regex
from zoneinfo import available_timezones

from . import ast, vocabulary as V
from .errors import did_you_mean

UNKNOWN = object()  # "value not known at compile time"


@dataclass(frozen=True)
class Typed:
    type: V.Type
    const: object = UNKNOWN
    is_state: bool = False

    @property
    def known(self) -> bool:
        return self.const is not UNKNOWN


NONE_T = V.Type("none", nullable=True)
DURATION_T = V.Type("duration")


@dataclass
class Scope:
    """What a condition may name: depends on the rule's event and the rule set's schedules."""

    event: str | None
    schedules: frozenset
    report: object  # callable(span, code, message, hint=None, severity="error")
    # the rule's `on` names no known event (already reported): event is None, yet this is
    # not a state rule
    unknown_event: bool = False
    # chat fields the rule set types by what its `set field` actions store in them (a
    # field set to a time, `now + 1d`, is a time everywhere): name -> Type
    field_types: dict = field(default_factory=dict)

    @property
    def has_message(self) -> bool:
        return self.event in V.MESSAGE_EVENTS


_TIMEZONES: frozenset | None = None


def timezones() -> frozenset:
    global _TIMEZONES
    if _TIMEZONES is None:
        _TIMEZONES = frozenset(available_timezones()) | {"UTC"}
    return _TIMEZONES


def fact_type(name: str) -> V.Type | None:
    if name in V.FACTS:
        return V.FACTS[name]
    if name in V.STATES:
        return V.BOOL
    for prefix in V.FIELD_PREFIXES:
        if name.startswith(prefix) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name[len(prefix):]):
            return V.ANY
    return None


def scoped_fact_type(name: str, scope: Scope) -> V.Type | None:
    """A fact's type where the rule set typed its custom fields (see Scope.field_types)."""
    if name.startswith(V.CHANGEABLE_FIELD_PREFIX) and name[len(V.CHANGEABLE_FIELD_PREFIX):] in scope.field_types:
        return scope.field_types[name[len(V.CHANGEABLE_FIELD_PREFIX):]]
    return fact_type(name)


def check_ref(node: ast.Ref, scope: Scope) -> Typed:
    name = node.name
    t = scoped_fact_type(name, scope)
    if t is None:
        scope.report(node.span, "unknown_fact", f"unknown fact `{name}`",
                     did_you_mean(name, V.all_names()) or _fact_hint(name))
        return Typed(V.ANY)
    if name.startswith("message.") and not scope.has_message:
        where = f"`on {scope.event}`" if scope.event else "a state rule"
        scope.report(node.span, "fact_unavailable", f"`{name}` has no value in {where}",
                     "message facts exist in rules on " + ", ".join(sorted(V.MESSAGE_EVENTS)))
    return Typed(t, is_state=name in V.STATES)


def _fact_hint(name: str) -> str:
    root = name.split(".")[0]
    roots = sorted({n.split(".")[0] for n in V.all_names()})
    if root not in roots:
        return "facts start with " + ", ".join(f"`{r}.`" for r in roots if r != "now") + " or are `now`"
    return f"custom fields are `{root}.fields.NAME`" if root in ("chat", "customer") else None


def _literal(node) -> Typed:
    if isinstance(node, ast.Literal):
        kind = {"str": V.STR, "int": V.INT, "bool": V.BOOL, "none": NONE_T}[node.kind]
        return Typed(kind, node.value)
    if isinstance(node, ast.Duration):
        return Typed(DURATION_T, node.seconds)
    raise TypeError(node)


def check_expr(node, scope: Scope) -> Typed:
    """Type and (if known) constant value of a condition node; reports problems."""
    if isinstance(node, (ast.Literal, ast.Duration)):
        return _literal(node)
    if isinstance(node, ast.Paren):
        return check_expr(node.expr, scope)
    if isinstance(node, ast.Ref):
        return check_ref(node, scope)
    if isinstance(node, ast.ListLit):
        items = [check_expr(i, scope) for i in node.items]
        const = tuple(i.const for i in items) if all(i.known for i in items) else UNKNOWN
        return Typed(V.LIST, const)
    if isinstance(node, ast.Call):
        return _check_call(node, scope)
    if isinstance(node, ast.Compare):
        return _check_compare(node, scope)
    if isinstance(node, ast.IsNone):
        t = check_expr(node.operand, scope)
        if t.known:
            return Typed(V.BOOL, (t.const is None) != node.negated)
        if not t.type.nullable and t.type.name != "any":
            return Typed(V.BOOL, node.negated)  # a fact that always has a value
        return Typed(V.BOOL)
    if isinstance(node, ast.For):
        return _check_for(node, scope)
    if isinstance(node, ast.Changed):
        return _check_changed(node, scope)
    if isinstance(node, ast.Not):
        t = _boolean(node.operand, scope, "not")
        return Typed(V.BOOL, (not t.const) if t.known else UNKNOWN)
    if isinstance(node, (ast.And, ast.Or)):
        word = "and" if isinstance(node, ast.And) else "or"
        parts = [_boolean(i, scope, word) for i in node.items]
        if isinstance(node, ast.And):
            if any(p.known and p.const is False for p in parts):
                return Typed(V.BOOL, False)
            return Typed(V.BOOL, True if all(p.known for p in parts) else UNKNOWN)
        if any(p.known and p.const is True for p in parts):
            return Typed(V.BOOL, True)
        return Typed(V.BOOL, False if all(p.known for p in parts) else UNKNOWN)
    raise TypeError(f"not an expression: {node!r}")


def check_condition(node, scope: Scope) -> Typed:
    """A whole ``when``: must be true/false."""
    return _boolean(node, scope, "when")


def _boolean(node, scope: Scope, where: str) -> Typed:
    t = check_expr(node, scope)
    if t.type.name not in ("bool", "any"):
        scope.report(_span_of(node), "type_mismatch",
                     f"`{where}` needs true/false, got {_describe(t.type)}",
                     "compare it, e.g. `chat.assignee is not none` or `chat.priority > 2`")
        return Typed(V.BOOL)
    return t


def _describe(t: V.Type) -> str:
    return {"str": "a text", "int": "a number", "list": "a list", "time": "a time",
            "none": "none", "duration": "a duration", "bool": "true/false"}.get(t.name, t.name)


def _span_of(node):
    return node.span


def _check_for(node: ast.For, scope: Scope) -> Typed:
    """``STATE for D`` holds once the state has held for D since its anchor;
    ``(CONDITION) for D`` once the whole condition has held for D since it became true. The
    condition must be about the chat: facts of one event (``event.*``, ``message.*``, the
    acting ``agent.*``) and change conditions do not last, so they cannot be held."""
    inner = node.operand
    while isinstance(inner, ast.Paren):
        inner = inner.expr
    if node.within is not None:
        check_schedule_name(node.within, node.within_span, scope)
        check_business_duration(node.duration, scope)
    if isinstance(inner, ast.Ref) and inner.name in V.STATES:
        return Typed(V.BOOL)
    sla_calls = [n for n in _nodes(node.operand) if isinstance(n, ast.Call) and n.name in V.SLA_STATES]
    if sla_calls:
        scope.report(sla_calls[0].span if inner is not sla_calls[0] else _span_of(node.operand), "unknown_state",
                     "`for` does not apply to an SLA state",
                     "set the time in the policy: `due_soon` says how long before its due time a target is due soon")
        return Typed(V.BOOL)
    if isinstance(inner, ast.Ref):
        t = fact_type(inner.name)
        if t is None:
            check_ref(inner, scope)
            return Typed(V.BOOL)
        if t.name not in ("bool", "any"):
            scope.report(inner.span, "unknown_state", f"`{inner.name}` is not a state",
                         (did_you_mean(inner.name, V.STATES) or "states: " + ", ".join(V.STATES))
                         + "; a condition for a duration is written in parentheses, "
                         + f"e.g. `({inner.name} == …) for {node.duration.text}`")
            return Typed(V.BOOL)
    if node.within is not None:
        scope.report(node.within_span, "unknown_state",
                     "`within` counts a state's duration in business time, not a condition's",
                     'hold a state, e.g. `chat.awaiting_agent for 2h within "support_hours"`')
        return Typed(V.BOOL)
    t = check_expr(node.operand, scope)
    if t.type.name not in ("bool", "any"):
        scope.report(node.operand.span, "unknown_state",
                     f"`for` applies to a state or a condition, not {_describe(t.type)}",
                     "`for` binds to what stands just before it: write the condition in "
                     f"parentheses, e.g. `(chat.priority >= 3) for {node.duration.text}`")
        return Typed(V.BOOL)
    for name, span in _event_facts(node.operand):
        scope.report(span, "duration_of_event",
                     f"{name} belongs to one event: a condition held `for` a duration must be about the chat",
                     "test it outside the parentheses, or use a fact of the chat")
    if t.known and t.const is False:
        return Typed(V.BOOL, False)
    return Typed(V.BOOL)


_EVENT_ROOTS = ("event.", "message.", "agent.")


def _nodes(node) -> list:
    """Every node of a condition, the node itself first."""
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        out.append(n)
        for attr in ("items", "args"):
            stack.extend(getattr(n, attr, ()) or ())
        for attr in ("operand", "left", "right", "expr", "fact", "old", "new"):
            child = getattr(n, attr, None)
            if child is not None and not isinstance(child, (str, int, bool)):
                stack.append(child)
    return out


def _event_facts(node) -> list:
    """(name, span) of each fact of the current event (or change condition) in a condition."""
    found, stack = [], [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Ref) and n.name.startswith(_EVENT_ROOTS):
            found.append((f"`{n.name}`", n.span))
        elif isinstance(n, ast.Changed):
            found.append(("a change condition", n.span))
            continue
        for attr in ("items", "args"):
            stack.extend(getattr(n, attr, ()) or ())
        for attr in ("operand", "left", "right", "expr"):
            child = getattr(n, attr, None)
            if child is not None and not isinstance(child, (str, int, bool)):
                stack.append(child)
    return sorted(found, key=lambda f: (f[1].line, f[1].column))


def _changeable_hint() -> str:
    return "a `chat.updated` reports " + ", ".join(f"`{f}`" for f in V.CHANGEABLE) + \
        f" and `{V.CHANGEABLE_FIELD_PREFIX}NAME`"


def _check_changed(node: ast.Changed, scope: Scope) -> Typed:
    """``changed(FACT)``, ``FACT changed to V``, ``FACT changed from V to W``: FACT must be
    a field a chat.updated reports, V and W values of its type, and the rule must run
    ``on chat.updated`` (on any other event, and in a state rule, it could never hold)."""
    fact = node.fact
    while isinstance(fact, ast.Paren):
        fact = fact.expr
    ftype = V.ANY
    if not isinstance(fact, ast.Ref):
        scope.report(node.fact.span, "not_changeable", "`changed` tests a chat field, not an expression",
                     _changeable_hint())
    elif V.change_key(fact.name) is None:
        name = fact.name
        if fact_type(name) is None:
            scope.report(fact.span, "unknown_fact", f"unknown fact `{name}`",
                         did_you_mean(name, V.CHANGEABLE) or did_you_mean(name, V.all_names()) or _changeable_hint())
        else:
            if name.startswith("customer.fields."):
                hint = f"did you mean `chat.fields.{name[len('customer.fields.'):]}`?"
            elif name == "assignee.id":
                hint = "did you mean `chat.assignee`?"
            else:  # spelled right, but a fact no command changes (or not one of the chat's)
                hint = _changeable_hint()
            scope.report(fact.span, "not_changeable", f"`{name}` is not a field a `chat.updated` reports", hint)
    else:
        ftype = scoped_fact_type(fact.name, scope)
    if scope.event != V.UPDATE_EVENT and not scope.unknown_event:
        where = f"a rule `on {scope.event}`" if scope.event else "a state rule"
        scope.report(node.span, "change_unavailable",
                     f"a change condition is never true in {where}: changes come with `{V.UPDATE_EVENT}`",
                     f"run the rule `on {V.UPDATE_EVENT}`" if scope.event
                     else f"make it an event rule `on {V.UPDATE_EVENT}`")
    typed_fact = Typed(ftype)
    values = []
    for value in (node.old, node.new):
        if value is None:
            continue
        t = check_expr(value, scope)
        values.append(t)
        if not _comparable(ftype, t.type):
            hint = _enum_hint(node, ftype, t.type)
            if ftype.name == "list":
                hint = f'test the list itself: `changed({_name(fact)}) and {_name(fact)} contains "…"`'
            scope.report(value.span, "type_mismatch",
                         f"`{_name(fact)}` is {_describe(ftype)}, not {_describe(t.type)}", hint)
            continue
        _check_enum(ast.Compare("==", fact, value, value.span), typed_fact, t, scope)
    const = UNKNOWN
    if any(_outside_enum(typed_fact, t) or _out_of_range(ftype, t) for t in values):
        const = False  # a value the field never takes
    elif len(values) == 2 and values[0].known and values[1].known and values[0].const == values[1].const \
            and type(values[0].const) is type(values[1].const):
        const = False  # a change always has a new value other than the old
    return Typed(V.BOOL, const)


def check_shift(node: ast.Shift, scope: Scope) -> Typed:
    """``BASE + DURATION`` / ``BASE - DURATION``: BASE must be a time (``now``, a time
    fact, a field the rule set holds times in; a custom field of unknown type is checked
    when the rule runs), the amount a duration literal. The result is a time."""
    base = check_expr(node.base, scope)
    if base.type.name not in ("time", "any"):
        scope.report(node.base.span, "type_mismatch",
                     f"`{node.op}` moves a time by a duration; this is {_describe(base.type)}",
                     "start from `now` or a time such as `chat.created_at` (`now + 1d`)")
    if not isinstance(node.amount, ast.Duration):
        amount = check_expr(node.amount, scope)
        scope.report(node.amount.span, "type_mismatch",
                     f"a time moves by a duration, not {_describe(amount.type)}",
                     "write a duration such as `1d`, `2h` or `1h30m`")
    return Typed(V.Type("time", nullable=True))


def value_type(node, scope: Scope) -> V.Type | None:
    """The type a ``set field`` value stores, as far as the compiler knows (None: none)."""
    while isinstance(node, ast.Paren):
        node = node.expr
    if isinstance(node, ast.Shift):
        return V.TIME
    if isinstance(node, ast.Literal):
        return None if node.kind == "none" else {"str": V.STR, "int": V.INT, "bool": V.BOOL}[node.kind]
    if isinstance(node, ast.Duration):
        return DURATION_T
    if isinstance(node, ast.ListLit):
        return V.LIST
    if isinstance(node, ast.Ref):
        return scoped_fact_type(node.name, scope)
    return None


def describe(t: V.Type) -> str:
    return _describe(t)


def _out_of_range(t: V.Type, value: Typed) -> bool:
    if not value.known or not isinstance(value.const, int) or isinstance(value.const, bool):
        return False
    return (t.low is not None and value.const < t.low) or (t.high is not None and value.const > t.high)


def check_business_duration(duration: ast.Duration, scope: Scope) -> None:
    """Report a duration too long to count inside a schedule (see dsl.schedule.MAX_WEEKS)."""
    from .schedule import MAX_BUSINESS_SECONDS

    if duration.seconds > MAX_BUSINESS_SECONDS:
        scope.report(duration.span, "bad_duration",
                     f"`{duration.text}` is too long to count within a schedule: at most 366d",
                     "business time is counted up to two years ahead")


def check_schedule_name(name: str, span, scope: Scope) -> None:
    """Report a schedule name the rule set does not declare."""
    if name not in scope.schedules:
        scope.report(span, "unknown_schedule", f"unknown schedule `{name}`",
                     did_you_mean(name, scope.schedules)
                     or ("schedules: " + ", ".join(sorted(scope.schedules)) if scope.schedules
                         else 'declare it: schedule NAME { timezone "…" mon-fri 09:00-18:00 }'))


def _check_call(node: ast.Call, scope: Scope) -> Typed:
    fn = V.FUNCTIONS.get(node.name)
    if fn is None:
        scope.report(node.span, "unknown_function", f"unknown function `{node.name}`",
                     did_you_mean(node.name, V.FUNCTIONS) or "functions: " + ", ".join(V.FUNCTIONS))
        for a in node.args:
            check_expr(a, scope)
        return Typed(V.ANY)
    if len(node.args) != len(fn.params):
        scope.report(node.span, "bad_arguments",
                     f"`{node.name}` takes {len(fn.params)} argument{'s' if len(fn.params) != 1 else ''}, got {len(node.args)}",
                     f"{node.name}({', '.join(fn.params)})")
        return Typed(fn.returns)
    args = [check_expr(a, scope) for a in node.args]
    for param, arg, t in zip(fn.params, node.args, args):
        if param == "schedule":
            if not (isinstance(arg, ast.Literal) and arg.kind == "str"):
                scope.report(arg.span, "bad_arguments", "a schedule is named by a string", 'in_schedule("support_hours")')
            else:
                check_schedule_name(arg.value, arg.span, scope)
        elif param == "sla_target":
            if not (isinstance(arg, ast.Literal) and arg.kind == "str"):
                scope.report(arg.span, "bad_arguments", "an SLA target is named by a string",
                             f'{node.name}("first_response")')
            elif arg.value not in V.SLA_TARGETS:
                scope.report(arg.span, "unknown_sla_target", f"unknown SLA target `{arg.value}`",
                             did_you_mean(arg.value, V.SLA_TARGETS) or "targets: " + ", ".join(V.SLA_TARGETS))
        elif param == "timezone":
            if not (isinstance(arg, ast.Literal) and arg.kind == "str"):
                scope.report(arg.span, "bad_arguments", "a timezone is named by a string", '"Europe/Berlin"')
            elif arg.value not in timezones():
                scope.report(arg.span, "unknown_timezone", f"unknown timezone `{arg.value}`",
                             did_you_mean(arg.value, timezones()) or "use an IANA name such as \"Europe/Berlin\"")
        elif param == "time":
            if t.type.name not in ("time", "any"):
                scope.report(arg.span, "type_mismatch", f"`{node.name}` needs a time, got {_describe(t.type)}",
                             "use `now` or a time fact such as `chat.created_at`")
        elif param == "str":
            if t.type.name not in ("str", "any", "none"):
                scope.report(arg.span, "type_mismatch", f"`{node.name}` needs a text, got {_describe(t.type)}")
        elif param == "any":
            if t.type.name not in ("str", "list", "any", "none"):
                scope.report(arg.span, "type_mismatch", f"`{node.name}` needs a text or a list, got {_describe(t.type)}")
    if node.name == "lower" and args[0].known and isinstance(args[0].const, str):
        return Typed(fn.returns, args[0].const.lower())
    if node.name == "len" and args and args[0].known and isinstance(args[0].const, (str, tuple)):
        return Typed(fn.returns, len(args[0].const))
    return Typed(fn.returns)


def _comparable(a: V.Type, b: V.Type) -> bool:
    if "any" in (a.name, b.name) or "none" in (a.name, b.name):
        return True
    return a.name == b.name


def _check_compare(node: ast.Compare, scope: Scope) -> Typed:
    op = node.op
    if isinstance(node.right, ast.For):
        # `chat.priority >= 3 for 15m` reads as `chat.priority >= (3 for 15m)`
        from .formatter import format_expr

        check_expr(node.left, scope)
        check_expr(node.right.operand, scope)
        meant = format_expr(ast.Compare(op, node.left, node.right.operand))
        scope.report(node.right.span, "unknown_state",
                     f"`for` applies to the value just before it, not to the comparison",
                     f"write the condition in parentheses: `({meant}) for {node.right.duration.text}`")
        return Typed(V.BOOL)
    left = check_expr(node.left, scope)
    if op == "matches":
        try:  # the engine matches with the `regex` module (it can time out); check with it
            regex.compile(node.right.pattern)
        except (RecursionError, OverflowError, MemoryError):
            scope.report(node.right.span, "bad_regex", "regex nested too deeply")
        except regex.error as e:
            scope.report(node.right.span, "bad_regex", f"bad regex: {getattr(e, 'msg', None) or e}",
                         "the regex takes Python's syntax; escape `/` as `\\/`")
        if left.type.name not in ("str", "any", "none"):
            scope.report(node.left.span, "type_mismatch", f"`matches` needs a text, got {_describe(left.type)}")
        return Typed(V.BOOL)
    right = check_expr(node.right, scope)
    lt, rt = left.type, right.type
    const = UNKNOWN
    if op in V.EQUALITY_OPS:
        if not _comparable(lt, rt):
            scope.report(node.span, "type_mismatch",
                         f"cannot compare {_describe(lt)} with {_describe(rt)}",
                         _enum_hint(node, lt, rt))
        else:
            _check_enum(node, left, right, scope)
        if left.known and right.known:
            const = (left.const == right.const) == (op == "==")
        elif _outside_enum(left, right) or _outside_enum(right, left):
            const = op == "!="
    elif op in V.ORDER_OPS:
        ok = {lt.name, rt.name} <= {"int", "any"} or {lt.name, rt.name} <= {"time", "any"}
        if not ok:
            scope.report(node.span, "type_mismatch", f"`{op}` compares numbers or times, not {_describe(lt)} and {_describe(rt)}")
        elif left.known and right.known and isinstance(left.const, int) and isinstance(right.const, int):
            const = {"<": left.const < right.const, "<=": left.const <= right.const,
                     ">": left.const > right.const, ">=": left.const >= right.const}[op]
        else:
            const = _range_const(op, left, right)
    elif op in ("in", "not in"):
        if rt.name not in ("list", "any"):
            scope.report(node.right.span, "type_mismatch", f"`{op}` needs a list on its right, got {_describe(rt)}",
                         'e.g. `chat.channel in ["email", "widget"]`')
        elif lt.name == "list":
            scope.report(node.left.span, "type_mismatch", f"`{op}` tests one value, got a list",
                         "use `contains` to test a list for a value")
        else:
            if isinstance(node.right, ast.ListLit) and lt.values:
                for item in node.right.items:
                    if isinstance(item, ast.Literal) and item.kind == "str" and item.value not in lt.values:
                        scope.report(item.span, "unknown_value", f"`{item.value}` is never a value of `{_name(node.left)}`",
                                     did_you_mean(item.value, lt.values) or "values: " + ", ".join(lt.values),
                                     severity="warning")
            if left.known and right.known and left.const is not None:
                const = (left.const in right.const) == (op == "in")
    elif op == "contains":
        if lt.name == "list":
            pass
        elif lt.name in ("str", "any", "none"):
            if rt.name not in ("str", "any", "none"):
                scope.report(node.right.span, "type_mismatch", f"a text contains a text, not {_describe(rt)}")
        else:
            scope.report(node.left.span, "type_mismatch", f"`contains` needs a text or a list, got {_describe(lt)}")
    elif op in ("starts with", "ends with"):
        for side, t in ((node.left, lt), (node.right, rt)):
            if t.name not in ("str", "any", "none"):
                scope.report(side.span, "type_mismatch", f"`{op}` needs texts, got {_describe(t)}")
    return Typed(V.BOOL, const)


def _name(node) -> str:
    return node.name if isinstance(node, ast.Ref) else "this value"


def _enum_hint(node, lt, rt):
    for t in (lt, rt):
        if t.values:
            return "values: " + ", ".join(f'"{v}"' for v in t.values)
    if "int" in (lt.name, rt.name):
        return "numbers are written without quotes"
    return None


def _outside_enum(fact: Typed, lit: Typed) -> bool:
    return bool(fact.type.values) and lit.known and isinstance(lit.const, str) and lit.const not in fact.type.values


def _check_enum(node: ast.Compare, left: Typed, right: Typed, scope: Scope) -> None:
    for fact, lit, fact_node, lit_node in ((left, right, node.left, node.right), (right, left, node.right, node.left)):
        if _outside_enum(fact, lit):
            scope.report(lit_node.span, "unknown_value", f"`{lit.const}` is never a value of `{_name(fact_node)}`",
                         did_you_mean(lit.const, fact.type.values) or "values: " + ", ".join(fact.type.values),
                         severity="warning")


def _range_const(op: str, left: Typed, right: Typed):
    """Folds comparisons a fact's declared range decides, e.g. ``chat.priority > 4``."""
    if left.known and not right.known:
        flipped = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[op]
        return _range_const(flipped, right, left)
    if right.known and isinstance(right.const, int) and not left.known and not left.type.nullable:
        low, high, n = left.type.low, left.type.high, right.const
        if op == ">":
            if high is not None and n >= high:
                return False
            if low is not None and n < low:
                return True
        if op == ">=":
            if high is not None and n > high:
                return False
            if low is not None and n <= low:
                return True
        if op == "<":
            if low is not None and n <= low:
                return False
            if high is not None and n > high:
                return True
        if op == "<=":
            if low is not None and n < low:
                return False
            if high is not None and n >= high:
                return True
    return UNKNOWN
