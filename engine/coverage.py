"""Rule coverage for ``chatflow test --coverage``: which rules never fired, and which
condition branches were never seen true or never seen false across the scenarios run."""
from __future__ import annotations

from dataclasses import dataclass, field

from dsl import ast

from .conditions import compile_condition


def branches(expr) -> list:
    """The boolean sub-conditions of a condition, outermost first (the whole included)."""
    out = []

    def walk(node):
        if isinstance(node, ast.Paren):
            return walk(node.expr)
        out.append(node)
        if isinstance(node, (ast.And, ast.Or)):
            for i in node.items:
                walk(i)
        elif isinstance(node, ast.Not):
            walk(node.operand)

    if expr is not None:
        walk(expr)
    return out


@dataclass
class _RuleCoverage:
    rule: object
    fired: int = 0
    evaluated: int = 0
    # branch index -> set of values seen
    seen: dict = field(default_factory=dict)
    closures: list = field(default_factory=list)
    nodes: list = field(default_factory=list)


class Coverage:
    """Collects evaluations through the Engine's observer hook."""

    def __init__(self):
        self.rules: dict[str, _RuleCoverage] = {}

    def add_ruleset(self, ruleset) -> None:
        for r in ruleset.rules:
            if r.id not in self.rules:
                nodes = branches(r.when)
                self.rules[r.id] = _RuleCoverage(r, nodes=nodes,
                                                 closures=[compile_condition(n, ruleset.schedules) for n in nodes])

    def observe(self, rule, ctx, value) -> None:
        rc = self.rules.get(rule.id)
        if rc is None:
            return
        rc.evaluated += 1
        for i, f in enumerate(rc.closures):
            rc.seen.setdefault(i, set()).add(bool(f(ctx)))

    def note_fired(self, rule_ids) -> None:
        for rid in rule_ids:
            if rid in self.rules:
                self.rules[rid].fired += 1

    def report(self) -> tuple[float, list[str]]:
        """(percent covered, lines naming what was never exercised)."""
        from dsl.formatter import format_expr

        total = covered = 0
        lines = []
        for rid, rc in self.rules.items():
            total += 1
            if rc.fired:
                covered += 1
            else:
                lines.append(f"{rc.rule.path}:{rc.rule.span.line}: rule {rid} never fired")
            for i, node in enumerate(rc.nodes):
                seen = rc.seen.get(i, set())
                total += 2
                covered += len(seen)
                missing = [str(v).lower() for v in (True, False) if v not in seen]
                if missing:
                    lines.append(f"{rc.rule.path}:{node.span.line}:{node.span.column}: rule {rid}: "
                                 f"`{format_expr(node)}` never {' or '.join(missing)}")
        percent = 100.0 * covered / total if total else 100.0
        return percent, lines
