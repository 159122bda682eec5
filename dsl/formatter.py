"""The canonical layout of rule text: the printer behind ``chatflow fmt``.

``format_rules`` turns a RuleFile (parsed from .rules text, loaded from YAML or built by
hand) into canonical .rules text; ``format_expr`` prints one condition. Parsing the output
gives back an equal tree, and formatting the output again changes nothing. (A tree built
without the Paren nodes its precedence needs comes back with them: Paren nodes take part
in equality, and the text has to carry those parentheses.)

Comments come from the tree (see dsl/comments.py). When the tree was parsed from .rules
text, the formatter also reads where each comment stood in ``RuleFile.source``, so that a
comment written after code on a line (``when … # chatflow: ignore=X``, ``}  # done``)
stays at the end of that same line, a comment left after the last action stays inside the
``then`` block, and blank lines between top-level comment groups survive. Without a source
(YAML, hand-built trees) every comment simply stands on its own line before its node.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from . import ast
from .errors import NO_SPAN
from .parser import duration_seconds, parse

MAX_LINE = 100
INDENT = "  "
# How tightly each kind of node binds, loosest first (SPEC §3.7).
_OR, _AND, _NOT, _COMPARE, _FOR, _ATOM = range(1, 7)

_COMPARE_OPS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains",
                          "starts with", "ends with", "matches"})
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
# Words the grammar reads as something else where a condition's name would stand.
_NOT_A_NAME = frozenset({"true", "false", "none", "not", "changed"})
_REGEX_BODY_RE = re.compile(r"(\\[^\n]|[^\\/\n])*\Z")
_NOTIFY_OPTIONS = ("except_", "template", "message")
_BARE_ACTIONS = frozenset({"unassign", "close", "reopen", "lock", "unlock", "stop"})


# ---------------------------------------------------------------- expressions

def format_expr(expr) -> str:
    """An expression as condition text, e.g. ``not (chat.idle for 5m)`` → ``not chat.idle for 5m``.

    Written parentheses (Paren nodes) are kept; more are added only where the grammar's
    precedence needs them, so ``parse_expression(format_expr(e)) == e`` for every parsed
    tree, and for any other tree up to those added Paren nodes. Raises ValueError for a
    tree no text can express (an empty ``and``, a regex outside ``matches``, a negative
    integer, …).
    """
    return _expr(expr, _OR)


def format_value(value) -> str:
    """The value of a ``set field``: an expression, or ``BASE + DURATION`` (a Shift)."""
    if isinstance(value, ast.Shift):
        if value.op not in ("+", "-"):
            raise ValueError(f"a time moves by `+` or `-`, not {value.op!r}")
        return f"{format_expr(value.base)} {value.op} {_expr(value.amount, _ATOM)}"
    return format_expr(value)


def _binding(e) -> int:
    if isinstance(e, ast.Or):
        return _OR
    if isinstance(e, ast.And):
        return _AND
    if isinstance(e, ast.Not):
        return _NOT
    if isinstance(e, (ast.Compare, ast.IsNone)):
        return _COMPARE
    if isinstance(e, ast.Changed):
        return _ATOM if e.new is None else _COMPARE  # changed(F) | F changed to V
    if isinstance(e, ast.For):
        return _FOR
    return _ATOM


def _expr(e, needs: int) -> str:
    """``e`` printed where the grammar accepts only nodes binding at least as tight as ``needs``."""
    text = _bare_expr(e)
    return f"({text})" if _binding(e) < needs else text


def _bare_expr(e) -> str:
    if isinstance(e, (ast.Or, ast.And)):
        word, inner = ("or", _AND) if isinstance(e, ast.Or) else ("and", _NOT)
        if len(e.items) < 2:
            raise ValueError(f"`{word}` needs at least two operands, got {len(e.items)}")
        return f" {word} ".join(_expr(i, inner) for i in e.items)
    if isinstance(e, ast.Not):
        return "not " + _expr(e.operand, _NOT)
    if isinstance(e, ast.Compare):
        if e.op not in _COMPARE_OPS:
            raise ValueError(f"unknown comparison `{e.op}`")
        left = _expr(e.left, _FOR)
        if e.op == "matches":
            if not isinstance(e.right, ast.Regex):
                raise ValueError("`matches` takes a /regex/ on its right")
            return f"{left} matches {_regex(e.right)}"
        return f"{left} {e.op} {_expr(e.right, _FOR)}"
    if isinstance(e, ast.IsNone):
        return _expr(e.operand, _FOR) + (" is not none" if e.negated else " is none")
    if isinstance(e, ast.Changed):
        return _changed(e)
    if isinstance(e, ast.For):
        if not isinstance(e.duration, ast.Duration):
            raise ValueError("`for` takes a duration")
        within = f" within {quote(e.within)}" if e.within is not None else ""
        return f"{_expr(e.operand, _ATOM)} for {_duration(e.duration)}{within}"
    if isinstance(e, ast.Paren):
        return f"({_expr(e.expr, _OR)})"
    if isinstance(e, ast.Literal):
        return _literal(e)
    if isinstance(e, ast.Duration):
        return _duration(e)
    if isinstance(e, ast.ListLit):
        return "[" + ", ".join(_expr(i, _OR) for i in e.items) + "]"
    if isinstance(e, ast.Ref):
        return _ref_name(e.name)
    if isinstance(e, ast.Call):
        return _ref_name(e.name) + "(" + ", ".join(_expr(a, _OR) for a in e.args) + ")"
    if isinstance(e, ast.Regex):
        raise ValueError("a /regex/ stands only after `matches`")
    raise ValueError(f"not an expression node: {e!r}")


def _changed(e: ast.Changed) -> str:
    if e.new is None:
        if e.old is not None:
            raise ValueError("`changed from V` needs `to W`")
        if not isinstance(e.fact, ast.Ref):
            raise ValueError("`changed(…)` takes a name")
        return f"changed({_name(e.fact.name)})"
    fact = _expr(e.fact, _FOR)
    if e.old is None:
        return f"{fact} changed to {_expr(e.new, _FOR)}"
    return f"{fact} changed from {_expr(e.old, _FOR)} to {_expr(e.new, _FOR)}"


def _literal(e: ast.Literal) -> str:
    if e.kind == "str" and isinstance(e.value, str):
        return quote(e.value)
    if e.kind == "bool" and isinstance(e.value, bool):
        return "true" if e.value else "false"
    if e.kind == "none":
        return "none"
    if e.kind == "int":
        return _int(e.value)
    raise ValueError(f"bad literal {e.value!r} of kind {e.kind!r}")


def _int(value) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"integers in rule text are whole numbers ≥ 0, got {value!r}")
    return str(value)


def _duration(d: ast.Duration) -> str:
    if d.text:
        return d.text
    # A duration built without its text (by hand): spell the seconds canonically.
    if not isinstance(d.seconds, int) or d.seconds <= 0:
        raise ValueError(f"a duration is above zero, got {d.seconds!r}")
    rest, parts = d.seconds, []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    text = "".join(parts)
    assert duration_seconds(text) == d.seconds
    return text


def _regex(r: ast.Regex) -> str:
    if not _REGEX_BODY_RE.match(r.pattern):
        raise ValueError(f"regex {r.pattern!r} has an unescaped `/`, a newline or a trailing `\\`")
    return f"/{r.pattern}/"


def _name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{name!r} cannot be written as a name")
    return name


def _ref_name(name: str) -> str:
    if name in _NOT_A_NAME:
        raise ValueError(f"`{name}` in a condition reads as a keyword, not a name")
    return _name(name)


def quote(text: str) -> str:
    """A string literal: only ``\\"``, ``\\\\`` and ``\\n`` are escapes (SPEC §3.7)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# ---------------------------------------------------------------- actions

def format_action(a: ast.Action) -> str:
    """One action as written inside ``then``, e.g. ``assign department "night" by least_busy``."""
    k = a.kind
    if k in _BARE_ACTIONS:
        return k
    if k == "assign_agent":
        return f"assign agent {quote(a.agent)}"
    if k == "assign_department":
        by = f" by {_name(a.strategy)}" if a.strategy else ""
        return f"assign department {quote(a.department)}{by}"
    if k == "subscribe":
        return "subscribe " + _target(a.target, ("operators", "agent", "department"))
    if k == "unsubscribe":
        return "unsubscribe " + _target(a.target, ("agent",))
    if k == "notify":
        return " ".join(["notify", _target(a.target, ("subscribers", "assignee", "operators", "mentioned",
                                                      "agent", "department"))] + _notify_options(a))
    if k == "email":
        return f"email {_email_target(a.target)} template {quote(a.template)}"
    if k == "email_transcript":
        if not a.targets:
            raise ValueError("`email transcript` needs at least one recipient")
        return "email transcript to " + ", ".join(_email_target(t) for t in a.targets)
    if k == "webhook":
        return f"webhook {quote(a.webhook)}"
    if k in ("reply", "note"):
        return f"{k} {quote(a.text)}"
    if k == "reply_article":
        return f"reply article {quote(a.article)}"
    if k in ("tag", "untag"):
        return f"{k} {quote(a.tag)}"
    if k == "set_priority":
        return f"set priority {_int(a.priority)}"
    if k == "set_field":
        return f"set field {_name(a.field_name)} = {format_value(a.value)}"
    if k == "set_department":
        return f"set department {quote(a.department)}"
    if k == "snooze" and a.duration is not None:
        return f"snooze for {_duration(a.duration)}"
    if k == "snooze":
        return f"snooze until next {quote(a.schedule)}"
    if k == "set_status":
        return f"set status {_name(a.status)}"
    raise ValueError(f"unknown action kind {k!r}")


def _email_target(t: ast.Target) -> str:
    if t is None or t.kind not in ("customer", "agent", "department", "address"):
        raise ValueError(f"bad email recipient {t!r}; expected customer, agent, department or address")
    return t.kind if t.kind == "customer" else f"{t.kind} {quote(t.id or '')}"


def _target(t: ast.Target, allowed) -> str:
    if t is None or t.kind not in allowed:
        raise ValueError(f"bad target {t!r} here; expected one of {', '.join(allowed)}")
    return f"{t.kind} {quote(t.id)}" if t.kind in ("agent", "department") else t.kind


def _notify_options(a: ast.Action) -> list:
    # As written (Action.order), then any set option the order does not list.
    names = [n for n in a.order if n in _NOTIFY_OPTIONS and getattr(a, n) is not None]
    names += [n for n in _NOTIFY_OPTIONS if n not in names and getattr(a, n) is not None]
    out = []
    for n in dict.fromkeys(names):
        if n == "except_":
            if a.except_ not in ("assignee", "actor"):
                raise ValueError(f"`notify … except` takes assignee or actor, got {a.except_!r}")
            out.append(f"except {a.except_}")
        else:
            out.append(f"{n} {quote(getattr(a, n))}")
    return out


# ---------------------------------------------------------------- where comments stood

class _Where(NamedTuple):
    """A comment's place in the source: line, column, and whether code precedes it on its line."""

    line: int
    column: int
    after_code: bool

    @property
    def pos(self):
        return (self.line, self.column)


def _scan_comments(source: str) -> list:
    """[(text, _Where)] of every ``#`` comment. The grammar uses `"` and `/` only to open
    strings and regexes, so skipping those is all the lexing a comment needs."""
    out, i, n = [], 0, len(source)
    line, line_start, code = 1, 0, False
    while i < n:
        ch = source[i]
        if ch == "\n":
            line, line_start, code, i = line + 1, i + 1, False, i + 1
        elif ch == "#":
            j = source.find("\n", i)
            j = n if j < 0 else j
            out.append((source[i:j].rstrip(), _Where(line, i - line_start + 1, code)))
            i = j
        elif ch in "\"/":
            j = i + 1
            while j < n and source[j] not in (ch, "\n"):
                j += 2 if source[j] == "\\" and j + 1 < n and source[j + 1] != "\n" else 1
            i, code = (j + 1 if j < n and source[j] == ch else j), True
        else:
            code = code or ch not in " \t\f\r\ufeff"
            i += 1
    return out


class _Places:
    """Where each attached comment stood, keyed by (node, slot). Empty when unknown."""

    def __init__(self, rf: ast.RuleFile, nodes):
        self.where = {}
        if rf.form != "rules" or not rf.source:
            return
        slots = []  # (key, comments) in the order dsl/comments.py attached them: source order
        for node in nodes:
            slots.append(((id(node), "lead"), node.comments))
            if isinstance(node, ast.Rule):
                by_clause = dict(node.clause_comments)
                for clause, _ in node.clause_spans:
                    slots.append(((id(node), clause), by_clause.get(clause, ())))
                    if clause == "then":
                        for a in node.actions:
                            slots.append(((id(a), "lead"), a.comments))
                            slots.append(((id(a), "trailing"), (a.trailing,) if a.trailing else ()))
                slots.append(((id(node), "end"), node.end_comments))
            elif isinstance(node, (ast.Schedule, ast.Routing)):
                for sl in node.lines:
                    slots.append(((id(sl), "lead"), sl.comments))
                slots.append(((id(node), "end"), node.end_comments))
            elif isinstance(node, ast.Sla):
                by_clause, lines = dict(node.clause_comments), iter(node.lines)
                for clause, _ in node.clause_spans:
                    if clause == "line":
                        line = next(lines)
                        slots.append(((id(line), "lead"), line.comments))
                    else:
                        slots.append(((id(node), clause), by_clause.get(clause, ())))
                slots.append(((id(node), "end"), node.end_comments))
        slots.append(((id(rf), "end"), rf.end_comments))
        scanned = _scan_comments(rf.source)
        if [c for _, cs in slots for c in cs] != [text for text, _ in scanned]:
            return  # the tree was changed after parsing: lay comments out without their places
        found = iter(w for _, w in scanned)
        self.where = {key: tuple(next(found) for _ in cs) for key, cs in slots}

    def of(self, node, slot, comments) -> tuple:
        """(comment, _Where | None) pairs for one slot."""
        where = self.where.get((id(node), slot))
        if where is None or len(where) != len(comments):
            return tuple((c, None) for c in comments)
        return tuple(zip(comments, where))


def _start(span):
    return (span.line, span.column)


def _end(span):
    return (span.end_line, span.end_column)


def _trailing_owner(w, anchors):
    """The anchor a comment written after code belongs to: the last one that ends before
    it on its line, unless another one starts in between (the comment then sits inside
    that one, e.g. in a condition written over several lines). ``anchors`` holds
    (key, start, end) triples."""
    if w is None or not w.after_code:
        return None
    ends = [(end, key) for key, _, end in anchors if end[0] == w.line and end <= w.pos]
    if not ends:
        return None
    end, key = max(ends, key=lambda e: e[0])
    if any(end < start < w.pos for _, start, _ in anchors):
        return None
    return key


# ---------------------------------------------------------------- the whole file

def format_rules(rf: ast.RuleFile) -> str:
    """Canonical .rules text of a whole file; "" for a file with nothing in it.

    Top-level items in source order (schedules put back among them by their spans, or
    after them when the tree has no spans), one blank line apart; the output ends with
    exactly one newline.
    """
    nodes = _in_source_order(rf)
    places = _Places(rf, nodes)
    blocks = []  # each a list of lines
    carried = ()
    for k, node in enumerate(nodes):
        lead, carried = carried + places.of(node, "lead", node.comments), ()
        if isinstance(node, ast.Disable):
            trailing = None
            w = lead[-1][1] if lead else None
            if w is not None and w.after_code and w.line == node.span.end_line:
                if k + 1 < len(nodes) and _start(nodes[k + 1].span) < w.pos:
                    # dsl/comments.py gave it the disable, but it follows the next item
                    # on that line: it goes before that item.
                    carried, lead = lead[-1:], lead[:-1]
                else:
                    trailing, lead = lead[-1][0], lead[:-1]
            body = [f"disable {_name(node.id)}" + (f"  {trailing}" if trailing else "")]
        elif isinstance(node, ast.Schedule):
            body = _schedule_lines(node, places)
        elif isinstance(node, ast.Routing):
            body = _routing_lines(node, places)
        elif isinstance(node, ast.Sla):
            body = _sla_lines(node, places)
        else:
            body = _rule_lines(node, places)
        lead = _after_previous(blocks, nodes, node, lead)
        blocks.append(_comment_groups(lead, node.span.line) + body)
    end = _after_previous(blocks, nodes, None, places.of(rf, "end", rf.end_comments))
    if end:
        blocks.append(_comment_groups(end, None))
    return "\n\n".join("\n".join(b) for b in blocks) + "\n" if blocks else ""


def format_source(text: str, path: str = "<string>") -> str:
    """Parse .rules text and return its canonical layout; raises the parser's ParseError."""
    return format_rules(parse(text, path))


def _in_source_order(rf: ast.RuleFile) -> list:
    items, schedules = list(rf.items), list(rf.slas) + list(rf.schedules)
    if not schedules or any(n.span == NO_SPAN for n in items + schedules):
        return items + list(rf.slas) + list(rf.schedules)
    out = []
    # merge: items keep their order, each schedule and policy goes where it stood
    for s in sorted(schedules, key=lambda n: (n.span.line, n.span.column)):
        where = (s.span.line, s.span.column)
        while items and (items[0].span.line, items[0].span.column) < where:
            out.append(items.pop(0))
        out.append(s)
    return out + items


def _after_previous(blocks, nodes, node, lead) -> tuple:
    """Put a leading comment that was written after the previous item's last token back
    at the end of that item's last line; return the rest."""
    if not lead or not blocks or lead[0][1] is None or not lead[0][1].after_code:
        return lead
    prev = nodes[len(blocks) - 1]
    if lead[0][1].line != prev.span.end_line or node is not None and _start(node.span) < lead[0][1].pos:
        return lead
    blocks[-1][-1] += f"  {lead[0][0]}"
    return lead[1:]


def _comment_groups(comments, item_line) -> list:
    """Top-level comment lines, keeping one blank line where the source had blank lines
    between them (or between the last one and the item)."""
    out = []
    for i, (text, w) in enumerate(comments):
        if i and w is not None and comments[i - 1][1] is not None and w.line - comments[i - 1][1].line > 1:
            out.append("")
        out.append(text)
    if comments and item_line is not None and comments[-1][1] is not None and item_line - comments[-1][1].line > 1:
        out.append("")
    return out


# ---------------------------------------------------------------- rules

def _rule_lines(rule: ast.Rule, places: _Places) -> list:
    # Anchors: what a comment written after code on a line can belong to, with where each
    # starts and ends in the source.
    anchors = [("header", _start(rule.span), _end(rule.id_span)), ("rule_close", _end(rule.span), _end(rule.span))]
    anchors += [(("action", i), _start(a.span), _end(a.span)) for i, a in enumerate(rule.actions)]
    block = None  # (after the last action, the block's end) when `then` was written as a block
    for clause, span in rule.clause_spans:
        if clause != "then":
            anchors.append((clause, _start(span), _end(span)))
            continue
        anchors.append(("then_open", _start(span), _start(span)))
        last = _end(rule.actions[-1].span) if rule.actions else _start(span)
        if not rule.actions or last != _end(span):  # it ends with its own `}`
            anchors.append(("then_close", _start(span), _end(span)))
            block = (last, _end(span))

    trailing = {}  # anchor -> the comment printed at the end of its line
    inside_then = []  # comments after the last action, inside the then block
    kept = {}  # slot -> comments that stand on their own lines there

    def sort(slot, pairs):
        kept[slot] = []
        for text, w in pairs:
            owner = _trailing_owner(w, anchors)
            if owner is not None and owner not in trailing:
                trailing[owner] = text
            elif w is not None and not w.after_code and block and block[0] <= w.pos < block[1]:
                inside_then.append(text)
            elif isinstance(slot, tuple) and slot[0] == "trailing":  # place unknown: keep it on its action
                trailing.setdefault(("action", slot[1]), text)
            else:
                kept[slot].append(text)

    by_clause = dict(rule.clause_comments)
    for clause in ("priority", "on", "when", "then"):
        sort(clause, places.of(rule, clause, by_clause.get(clause, ())))
    for i, a in enumerate(rule.actions):
        sort(("lead", i), places.of(a, "lead", a.comments))
        # dsl/comments.py gives an action any comment later on its line, even one that
        # follows the next action or clause there: the anchors put it after the right one.
        sort(("trailing", i), places.of(a, "trailing", (a.trailing,) if a.trailing else ()))
    sort("end", places.of(rule, "end", rule.end_comments))

    def tail(line, anchor):
        return line + (f"  {trailing[anchor]}" if anchor in trailing else "")

    head = ("override rule " if rule.override else "rule ") + _name(rule.id)
    if rule.title is not None:
        head += " " + quote(rule.title)
    lines = [tail(head + " {", "header")]

    def clause(name, text_lines):
        lines.extend(INDENT + c for c in kept[name])
        text_lines[-1] = tail(text_lines[-1], name)
        lines.extend(text_lines)

    if rule.priority is not None:
        clause("priority", [f"{INDENT}priority {_int(rule.priority)}"])
    if rule.on is not None:
        clause("on", [f"{INDENT}on {_name(rule.on)}"])
    if rule.when is not None:
        clause("when", _when_lines(rule.when))
    lines.extend(INDENT + c for c in kept["then"])
    actions = [(kept[("lead", i)], format_action(a), trailing.get(("action", i))) for i, a in enumerate(rule.actions)]
    lines.extend(_then_lines(actions, inside_then, trailing.get("then_open"), trailing.get("then_close")))
    lines.extend(INDENT + c for c in kept["end"])
    lines.append(tail("}", "rule_close"))
    return lines


def _when_lines(expr) -> list:
    one = f"{INDENT}when {format_expr(expr)}"
    if len(one) <= MAX_LINE or not isinstance(expr, (ast.And, ast.Or)):
        return [one]
    # Too long: break before each top-level `and`/`or`, continuation indented 4 more.
    word, inner = ("or", _AND) if isinstance(expr, ast.Or) else ("and", _NOT)
    first, *rest = (_expr(i, inner) for i in expr.items)
    return [f"{INDENT}when {first}"] + [f"{INDENT}    {word} {p}" for p in rest]


def _then_lines(actions, inside, open_note, close_note) -> list:
    """``then ACTION`` for one action without comments, else a block. ``actions`` holds
    (comment lines before it, its text, its trailing comment or None) for each action."""
    if len(actions) == 1 and not (actions[0][0] or actions[0][2] or inside or open_note or close_note):
        return [f"{INDENT}then {actions[0][1]}"]
    if not actions and not inside and not (open_note and close_note):
        note = open_note or close_note
        return [f"{INDENT}then {{}}" + (f"  {note}" if note else "")]
    lines = [f"{INDENT}then {{" + (f"  {open_note}" if open_note else "")]
    for lead, text, note in actions:
        lines.extend(INDENT * 2 + c for c in lead)
        lines.append(INDENT * 2 + text + (f"  {note}" if note else ""))
    lines.extend(INDENT * 2 + c for c in inside)
    lines.append(f"{INDENT}}}" + (f"  {close_note}" if close_note else ""))
    return lines


# ---------------------------------------------------------------- blocks of lines

def _block_lines(head, anchors, parts, end) -> list:
    """``HEAD {``, one or more lines a part, ``}``: a schedule, the routing block or a policy.

    ``anchors`` holds (key, start, end) triples of what a comment written after code can
    belong to ("header" for ``HEAD {``); ``parts`` holds (anchor key, the (comment, _Where)
    pairs that stood before the part, its lines) in written order; ``end`` the pairs before
    the closing ``}``. A comment written after an anchor goes back to the end of that
    anchor's line; every other one stands on its own line before its part.
    """
    trailing = {}  # anchor -> the comment printed at the end of its line

    def own_lines(pairs):
        kept = []
        for text, w in pairs:
            owner = _trailing_owner(w, anchors)
            if owner is not None and owner not in trailing:
                trailing[owner] = text
            else:
                kept.append(INDENT + text)
        return kept

    # Every comment is placed before any line is printed: a part's comment may end a line
    # printed earlier (the header's, the previous part's).
    kept = [own_lines(pairs) for _, pairs, _ in parts]
    kept_end = own_lines(end)

    def tail(line, anchor):
        return line + (f"  {trailing[anchor]}" if anchor in trailing else "")

    lines = [tail(head + " {", "header")]
    for (anchor, _, text), before in zip(parts, kept):
        lines.extend(before)
        lines.extend(text[:-1])
        lines.append(tail(text[-1], anchor))
    return lines + kept_end + ["}"]


# ---------------------------------------------------------------- schedules

def _schedule_lines(s: ast.Schedule, places: _Places) -> list:
    anchors = [("header", _start(s.span), _end(s.id_span))]
    if s.timezone_span != s.id_span:  # the parser points an unwritten timezone at the id
        anchors.append(("timezone", _start(s.timezone_span), _end(s.timezone_span)))
    anchors += [(("line", i), _start(sl.span), _end(sl.span)) for i, sl in enumerate(s.lines)]
    parts = [("timezone", (), [f"{INDENT}timezone {quote(s.timezone)}"])]
    parts += [(("line", i), places.of(sl, "lead", sl.comments), [INDENT + format_schedule_line(sl)])
              for i, sl in enumerate(s.lines)]
    head = f"schedule {_name(s.id)}" + (f" {quote(s.title)}" if s.title is not None else "")
    return _block_lines(head, anchors, parts, places.of(s, "end", s.end_comments))


# ---------------------------------------------------------------- routing

def _routing_lines(r: ast.Routing, places: _Places) -> list:
    anchors = [("header", _start(r.span), (r.span.line, r.span.column + len("routing {")))]
    anchors += [(("line", i), _start(rl.span), _end(rl.span)) for i, rl in enumerate(r.lines)]
    parts = [(("line", i), places.of(rl, "lead", rl.comments), [INDENT + format_routing_line(rl)])
             for i, rl in enumerate(r.lines)]
    return _block_lines("routing", anchors, parts, places.of(r, "end", r.end_comments))


def format_routing_line(rl: ast.RoutingLine) -> str:
    """``backlog [skip idle over D]``, ``at most N per D`` or ``capacity CHANNEL N``."""
    if rl.kind == "backlog":
        return "backlog" + (f" skip idle over {rl.idle.text}" if rl.idle is not None else "")
    if rl.kind == "limit":
        return f"at most {_int(rl.count)} per {rl.per.text}"
    if rl.kind == "capacity":
        return f"capacity {_name(rl.channel)} {_int(rl.count)}"
    raise ValueError(f"unknown routing line {rl.kind!r}")


# ---------------------------------------------------------------- SLA policies

def _sla_lines(p: ast.Sla, places: _Places) -> list:
    """A policy in its clauses' written order (``when``, ``within``, then the targets when
    the tree has no order, as from YAML)."""
    order = [c for c, _ in p.clause_spans]
    if not order or order.count("line") != len(p.lines) or ("when" in order) != (p.when is not None) \
            or ("within" in order) != (p.within is not None):
        order = (["when"] if p.when is not None else []) + (["within"] if p.within is not None else []) + \
            ["line"] * len(p.lines)
    anchors = [("header", _start(p.span), _end(p.id_span))]
    spans = dict((c, sp) for c, sp in p.clause_spans if c != "line")
    for clause in ("when", "within"):
        if clause in spans:
            anchors.append((clause, _start(spans[clause]), _end(spans[clause])))
    anchors += [(("line", i), _start(line.span), _end(line.span)) for i, line in enumerate(p.lines)]
    by_clause, lines, parts = dict(p.clause_comments), iter(enumerate(p.lines)), []
    for clause in order:
        if clause == "line":
            i, line = next(lines)
            parts.append((("line", i), places.of(line, "lead", line.comments), [f"{INDENT}{format_sla_line(line)}"]))
        else:
            text = _when_lines(p.when) if clause == "when" else [f"{INDENT}within {quote(p.within)}"]
            parts.append((clause, places.of(p, clause, by_clause.get(clause, ())), text))
    head = f"sla {_name(p.id)}" + (f" {quote(p.title)}" if p.title is not None else "")
    return _block_lines(head, anchors, parts, places.of(p, "end", p.end_comments))


def format_sla_line(line: ast.SlaTarget) -> str:
    """``first_response 1h``: a target (or ``due_soon``) and its duration."""
    if line.name not in ast.SLA_TARGETS + ("due_soon",):
        raise ValueError(f"unknown SLA line `{line.name}`")
    return f"{line.name} {_duration(line.duration)}"


def format_schedule_line(sl: ast.ScheduleLine) -> str:
    """``mon-fri 09:00-18:00``; a single day prints alone, 1440 minutes as ``24:00``."""
    for day in (sl.first_day, sl.last_day):
        if not isinstance(day, int) or not 0 <= day < len(ast.DAYS):
            raise ValueError(f"bad day {day!r}; days are 0 (mon) to 6 (sun)")
    days = ast.DAYS[sl.first_day] if sl.first_day == sl.last_day else f"{ast.DAYS[sl.first_day]}-{ast.DAYS[sl.last_day]}"
    return f"{days} {_clock(sl.start, 24 * 60 - 1)}-{_clock(sl.end, 24 * 60)}"


def _clock(minutes, latest) -> str:
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 0 <= minutes <= latest:
        raise ValueError(f"bad time {minutes!r}; times are minutes since midnight, 0 to {latest}")
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
