"""Lint findings over a compiled rule set (SPEC §3.5): rules that check but are likely wrong.

Each finding has a stable code, listed in LINT_CODES with a one-line explanation (shown by
``chatflow lint --explain CODE`` and in the README). ``# chatflow: ignore=CODE`` markers are
applied by :func:`apply_ignores` for both check and lint findings.
"""
from __future__ import annotations

from . import ast, vocabulary as V
from .compiler import RuleSet
from .errors import Diagnostic
from .types import UNKNOWN

LINT_CODES = {
    "always_true": "the condition is true whatever the chat: the `when` can go",
    "always_false": "the condition can never be true: the rule never fires",
    "unreachable_rule": "an earlier rule with `stop` fires on every event this rule could, so this one never runs",
    "conflicting_assign": "two rules can assign different agents on the same event; the later one wins",
    "rule_cycle": "rules cause events that trigger each other in a loop (cut at depth 10 at run time)",
    "empty_target": "a `notify` whose target is always empty: nobody is ever notified",
    "unknown_value": "a comparison with a value the fact never takes",
    "unknown_template": "a template name the product does not ship (define it on the server)",
}


def _conjuncts(expr) -> list:
    while isinstance(expr, ast.Paren):
        expr = expr.expr
    if expr is None:
        return []
    if isinstance(expr, ast.And):
        out = []
        for i in expr.items:
            out.extend(_conjuncts(i))
        return out
    return [expr]


def _equalities(expr) -> dict:
    """fact -> literal for top-level conjuncts ``fact == literal``."""
    out = {}
    for c in _conjuncts(expr):
        if isinstance(c, ast.Compare) and c.op == "==":
            if isinstance(c.left, ast.Ref) and isinstance(c.right, ast.Literal):
                out[c.left.name] = c.right.value
            elif isinstance(c.right, ast.Ref) and isinstance(c.left, ast.Literal):
                out[c.right.name] = c.left.value
    return out


def _exclusive(a, b) -> bool:
    """True when two conditions cannot both hold (by a conflicting ``fact == literal``)."""
    ea, eb = _equalities(a), _equalities(b)
    if any(k in eb and eb[k] != v for k, v in ea.items()):
        return True
    na, nb = _none_tests(a), _none_tests(b)
    return any(k in nb and nb[k] != v for k, v in na.items())


def _none_tests(expr) -> dict:
    """fact -> True (is none) / False (is not none) for top-level conjuncts."""
    out = {}
    for c in _conjuncts(expr):
        if isinstance(c, ast.IsNone) and isinstance(c.operand, ast.Ref):
            out[c.operand.name] = not c.negated
    return out


def lint(ruleset: RuleSet) -> list[Diagnostic]:
    """Warnings for a compiled rule set (the compiler's own warnings are not repeated)."""
    found: list[Diagnostic] = []

    def warn(span, code, message, hint=None):
        found.append(Diagnostic(span, code, message, "warning", hint))

    rules = list(ruleset.rules)
    for r in rules:
        if r.when is not None and r.constant is True:
            warn(r.when.span, "always_true", f"the condition of `{r.id}` is always true",
                 "drop the `when`, or fix the comparison")
        elif r.when is not None and r.constant is False:
            warn(r.when.span, "always_false", f"the condition of `{r.id}` is never true; the rule never fires")
        for a in r.actions:
            if a.kind == "notify":
                _check_target(r, a, warn)
            if a.kind in ("notify", "email") and a.template and a.template not in V.KNOWN_TEMPLATES:
                warn(a.span, "unknown_template", f"template `{a.template}` is not shipped",
                     "shipped: " + ", ".join(V.KNOWN_TEMPLATES))

    # unreachable: an earlier rule on the same event that always stops when this could fire
    for i, later in enumerate(rules):
        for earlier in rules[:i]:
            if not any(a.kind == "stop" for a in earlier.actions):
                continue
            if earlier.on is None or earlier.on != later.on:
                continue
            covers = earlier.when is None or earlier.constant is True or (
                set(map(_key, _conjuncts(earlier.when))) <= set(map(_key, _conjuncts(later.when)))
            )
            if covers:
                warn(later.id_span, "unreachable_rule",
                     f"`{later.id}` never runs: `{earlier.id}` (at {earlier.span}) stops every `{later.on}` it could fire on")
                break

    # conflicting assigns on the same event
    for i, a in enumerate(rules):
        agents_a = _assign_targets(a)
        if not agents_a or a.on is None:
            continue
        for b in rules[i + 1:]:
            agents_b = _assign_targets(b)
            if b.on != a.on or not agents_b or agents_a == agents_b:
                continue
            if _exclusive(a.when, b.when):
                continue
            warn(b.id_span, "conflicting_assign",
                 f"`{a.id}` and `{b.id}` can both assign on `{a.on}` ({_show(agents_a)} vs {_show(agents_b)}); the later one wins",
                 "make the conditions exclusive, or add `stop` to the first")

    found.extend(_cycles(rules))
    return found


def _show(targets) -> str:
    return ", ".join(sorted(targets))


def _assign_targets(rule) -> frozenset:
    out = set()
    for a in rule.actions:
        if a.kind == "assign_agent":
            out.add(f'agent "{a.agent}"')
        elif a.kind == "assign_department":
            out.add(f'department "{a.department}"')
    return frozenset(out)


def _key(expr):
    # AST equality ignores spans, so the node itself is a structural key
    return expr


def _check_target(rule, action, warn):
    t = action.target
    if t.kind == "mentioned" and rule.on not in ("message.created", "message.edited", "chat.created"):
        warn(action.span, "empty_target", f"`notify mentioned` in `{rule.id}` has no message to take mentions from",
             "use it in a rule `on message.created`")
        return
    if t.kind == "assignee":
        tests = _none_tests(rule.when)
        states = {c.name for c in _conjuncts(rule.when) if isinstance(c, ast.Ref)}
        if tests.get("chat.assignee") is True or "chat.unassigned" in states:
            warn(action.span, "empty_target", f"`notify assignee` in `{rule.id}` runs only when the chat has no assignee")
            return
    if action.except_ == "assignee" and t.kind == "assignee":
        warn(action.span, "empty_target", "`notify assignee except assignee` never notifies anyone")


def _cycles(rules) -> list[Diagnostic]:
    """Event rules whose actions cause events that lead back to themselves."""
    by_event: dict[str, list] = {}
    for r in rules:
        if r.on and r.constant is not False:
            by_event.setdefault(r.on, []).append(r)

    def caused(rule):
        out = []
        for a in rule.actions:
            for ev in V.ACTION_EVENTS.get(a.kind, ()):
                if ev not in out:
                    out.append(ev)
        return out

    found, reported = [], set()
    for start in rules:
        if not start.on:
            continue
        # depth-first search for a path back to `start`
        stack = [(start, [start.id])]
        seen = set()
        while stack:
            rule, path = stack.pop()
            for ev in caused(rule):
                for nxt in by_event.get(ev, ()):
                    if nxt.id == start.id:
                        cycle = path + [ev, start.id]
                        members = frozenset(cycle[::2])
                        if members not in reported:
                            reported.add(members)
                            found.append(Diagnostic(
                                start.id_span, "rule_cycle",
                                "rules trigger each other in a loop: " + " → ".join(cycle),
                                "warning", "guard a rule's condition (e.g. `event.actor != \"rule\"`) to break it"))
                    elif nxt.id not in seen:
                        seen.add(nxt.id)
                        stack.append((nxt, path + [ev, nxt.id]))
    return found


def apply_ignores(diagnostics, files) -> list[Diagnostic]:
    """Drop findings silenced by a ``# chatflow: ignore=CODE`` marker on their line."""
    markers: dict[tuple, set] = {}
    for rf in files:
        for line, codes in rf.ignores:
            markers.setdefault((rf.path, line), set()).update(codes)
    out = []
    for d in diagnostics:
        codes = markers.get((d.span.path, d.span.line), ())
        if d.code in codes or "all" in codes:
            continue
        out.append(d)
    return out
