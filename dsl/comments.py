"""Comments in .rules text: attached to the node they stand before, so fmt keeps them,
and ``# chatflow: ignore=CODE`` markers resolved to the line they silence.

A comment attaches to the next item, clause, action, schedule line or routing line. A comment on the
same line after an action stays at the end of that action's line. Comments inside a
multi-line condition move to before the next clause.
"""
from __future__ import annotations

import dataclasses
import re

from . import ast

IGNORE_RE = re.compile(r"#\s*chatflow:\s*ignore=([A-Za-z0-9_\-]+(?:\s*,\s*[A-Za-z0-9_\-]+)*)")


def ignore_markers(source: str, comments) -> tuple:
    """((line, frozenset(codes)), …): a marker covers its own line, or the next line when
    it stands alone on its line."""
    lines = source.split("\n")  # Lark counts lines by \n only
    out = []
    for tok in comments:
        m = IGNORE_RE.match(tok.value)
        if not m:
            continue
        codes = frozenset(c.strip() for c in m.group(1).split(",") if c.strip())
        text = lines[tok.line - 1] if tok.line - 1 < len(lines) else ""
        alone = not text[: tok.column - 1].strip()
        line = tok.line
        if alone:  # covers the next line that has code on it
            line = tok.line + 1
            while line <= len(lines) and (not lines[line - 1].strip() or lines[line - 1].lstrip().startswith("#")):
                line += 1
        out.append((line, codes))
    return tuple(out)


class _Cursor:
    def __init__(self, comments, source):
        self.pending = sorted(comments, key=lambda t: (t.line, t.column))
        self.lines = source.split("\n")

    def before(self, line: int, column: int) -> tuple:
        """Pop the comments that start before (line, column)."""
        out = []
        while self.pending and (self.pending[0].line, self.pending[0].column) < (line, column):
            out.append(self.pending.pop(0).value.rstrip())
        return tuple(out)

    def trailing(self, line: int, column: int, limit: tuple | None = None) -> str | None:
        """Pop a comment that follows code on ``line`` at or after ``column`` and before
        ``limit`` (the start of the next node), so it stays with the node it ends."""
        if self.pending and self.pending[0].line == line and self.pending[0].column >= column:
            head = self.pending[0]
            if limit is None or (head.line, head.column) < limit:
                return self.pending.pop(0).value.rstrip()
        return None

    def rest(self) -> tuple:
        out = tuple(t.value.rstrip() for t in self.pending)
        self.pending = []
        return out


def attach_comments(rf: ast.RuleFile, items_in_order, comments) -> ast.RuleFile:
    """The RuleFile with each comment attached to the node it documents."""
    if not comments:
        return rf
    cur = _Cursor(comments, rf.source)
    by_id = {}
    starts = [(i.span.line, i.span.column) for i in items_in_order[1:]] + [None]
    for item, next_start in zip(items_in_order, starts):
        lead = cur.before(item.span.line, item.span.column)
        if isinstance(item, ast.Rule):
            new = _attach_rule(item, lead, cur)
        elif isinstance(item, (ast.Schedule, ast.Routing)):
            new_lines = []
            for line in item.lines:
                c = cur.before(line.span.line, line.span.column)
                new_lines.append(dataclasses.replace(line, comments=c))
            end = cur.before(item.span.end_line, item.span.end_column)
            new = dataclasses.replace(item, comments=lead, lines=tuple(new_lines), end_comments=end)
        elif isinstance(item, ast.Sla):
            new = _attach_sla(item, lead, cur)
        else:
            new = dataclasses.replace(item, comments=lead)
            trailing = cur.trailing(item.span.end_line, item.span.end_column, next_start)
            if trailing:
                new = dataclasses.replace(new, comments=lead + (trailing,))
        by_id[id(item)] = new
    return dataclasses.replace(
        rf,
        items=tuple(by_id[id(i)] for i in rf.items),
        schedules=tuple(by_id[id(s)] for s in rf.schedules),
        slas=tuple(by_id[id(s)] for s in rf.slas),
        end_comments=cur.rest(),
    )


def _attach_sla(sla: ast.Sla, lead: tuple, cur: _Cursor) -> ast.Sla:
    """Comments before each clause of a policy go with it (its lines keep their own)."""
    lines = list(sla.lines)
    clause_comments = []
    i = 0
    for clause, span in sla.clause_spans:
        c = cur.before(span.line, span.column)
        if clause == "line":
            lines[i] = dataclasses.replace(lines[i], comments=c)
            i += 1
        elif c:
            clause_comments.append((clause, c))
    end = cur.before(sla.span.end_line, sla.span.end_column)
    return dataclasses.replace(sla, comments=lead, lines=tuple(lines), clause_comments=tuple(clause_comments),
                               end_comments=end)


def _attach_rule(rule: ast.Rule, lead: tuple, cur: _Cursor) -> ast.Rule:
    clause_comments = []
    actions = list(rule.actions)
    clause_starts = [(s.line, s.column) for _, s in rule.clause_spans[1:]] + [(rule.span.end_line, rule.span.end_column)]
    for (clause, span), clause_end in zip(rule.clause_spans, clause_starts):
        c = cur.before(span.line, span.column)
        if c:
            clause_comments.append((clause, c))
        if clause == "then":
            limits = [(a.span.line, a.span.column) for a in actions[1:]] + [clause_end]
            for i, action in enumerate(actions):
                ac = cur.before(action.span.line, action.span.column)
                tr = cur.trailing(action.span.end_line, action.span.end_column, limits[i])
                actions[i] = dataclasses.replace(action, comments=ac, trailing=tr)
    end = cur.before(rule.span.end_line, rule.span.end_column)
    return dataclasses.replace(rule, comments=lead, clause_comments=tuple(clause_comments),
                               actions=tuple(actions), end_comments=end)
