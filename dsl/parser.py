"""Parse .rules text into the AST (dsl.ast).

The grammar (``grammar.lark``) owns the syntax; the Transformer below has one method per
grammar rule and only builds nodes. Lark's own errors are turned into located
:class:`ParseError` with a readable list of what was expected.
"""
from __future__ import annotations

import contextvars
import functools
import re
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast
from .errors import Diagnostic, ParseError, Span, fail

GRAMMAR_PATH = Path(__file__).with_name("grammar.lark")
MAX_SOURCE_BYTES = 1024 * 1024  # 4× a file of 1,000 rules; parsing it stays within seconds
MAX_LIST_ITEMS = 10_000
MAX_DEPTH = 64

# `default.NAME` is the one dotted rule id: the shipped rules' (the compiler keeps the
# prefix to rules/default.rules).
DEFAULT_ID_RE = re.compile(r"^default\.[A-Za-z_][A-Za-z0-9_]*$")


# Comments are dropped by the grammar but kept for fmt: the lexer hands each one to the
# list of the parse under way (a context variable, so threads never mix them up).
_COMMENTS: contextvars.ContextVar[list] = contextvars.ContextVar("chatflow_comments")


def _keep_comment(token: Token) -> None:
    sink = _COMMENTS.get(None)
    if sink is not None:
        sink.append(token)


# Keywords are whole words (SPEC §3.7). Lark's contextual lexer only tries the terminals
# a parser state accepts, so where no name may stand it would read `andy` as `and` + `y`;
# each keyword token is checked against the character after it instead.
_SOURCE: contextvars.ContextVar[str] = contextvars.ContextVar("chatflow_source")
_WORD_CHAR = re.compile(r"[A-Za-z0-9_]")


class _SplitWord(Exception):
    def __init__(self, token: Token):
        self.token = token


_KEYWORD_NAMES: contextvars.ContextVar[list] = contextvars.ContextVar("chatflow_keyword_names")
# the grammar's keywords: its quoted lowercase literals
_KEYWORDS = frozenset(re.findall(r'"([a-z_]+)"', GRAMMAR_PATH.read_text(encoding="utf-8")))


def _note_name(token: Token) -> Token:
    """A name that is also a keyword (`then` where a condition may start) is legal only
    where no keyword fits; remember it so a syntax error right after it names it."""
    if token.value in _KEYWORDS:
        sink = _KEYWORD_NAMES.get(None)
        if sink is not None:
            sink.append(token)
    return token


def _whole_word(token: Token) -> Token:
    src = _SOURCE.get(None)
    if src is not None and token.end_pos < len(src) and _WORD_CHAR.match(src, token.end_pos):
        raise _SplitWord(token)
    return token


def _options(callbacks: dict) -> dict:
    return dict(parser="lalr", start=["start", "expr", "set_value"], propagate_positions=True, maybe_placeholders=False,
                cache=True, lexer_callbacks=callbacks)


def keyword_terminals() -> set:
    """Terminal names of the grammar's keywords: Lark names an anonymous ``"and"`` AND."""
    return {w.upper() for w in _KEYWORDS}


@functools.lru_cache(maxsize=1)
def grammar() -> Lark:
    """The LALR parser, built once per process (and cached on disk by Lark)."""
    callbacks = {"COMMENT": _keep_comment, **{name: _whole_word for name in keyword_terminals()}}
    # DOTTED must come last: Lark chains a user callback after its keyword ("unless")
    # callback with a lambda that reads the loop variable late, so the chain only fires
    # for the terminal named last in this dict.
    callbacks["DOTTED"] = _note_name
    return Lark.open(str(GRAMMAR_PATH), **_options(callbacks))


def _split_word_error(path: str, source: str, token: Token) -> ParseError:
    m = re.compile(r"[A-Za-z0-9_.]+").match(source, token.start_pos)
    word = m.group(0) if m else token.value
    from .errors import did_you_mean

    keywords = sorted(_KEYWORDS)
    hint = did_you_mean(word, keywords) if word not in keywords else f"`{word}` is a keyword; something is missing before it"
    span = Span(path, token.line, token.column, token.line, token.column + len(word))
    return ParseError([Diagnostic(span, "syntax_error", f"unexpected `{word}`", hint=hint)])


def _span(path: str, node) -> Span:
    if isinstance(node, Token):
        return Span(path, node.line, node.column, node.end_line, node.end_column)
    meta = node.meta if isinstance(node, Tree) else node
    if getattr(meta, "empty", False):
        return Span.point(path, 1, 1)
    return Span(path, meta.line, meta.column, meta.end_line, meta.end_column)


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}


def unquote(path: str, token: Token) -> str:
    """The value of a STRING token; only \\" \\\\ and \\n are escapes."""
    body = token.value[1:-1]
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                col = token.column + 1 + i
                fail(Span(path, token.line, col, token.line, col + 2), "bad_string",
                     f"unknown escape `\\{nxt}` in string", 'the escapes are \\" \\\\ and \\n', kind=ParseError)
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def duration_seconds(text: str) -> int | None:
    """Seconds in a duration such as ``1h30m``, or None if it is not well-formed."""
    m = _DURATION_RE.match(text)
    if not m or not text:
        return None
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


MAX_INT_DIGITS = 18


def parse_int(path: str, token: Token) -> int:
    """An integer literal; more than 9 digits is a located error, not a huge number."""
    if len(token.value) > MAX_INT_DIGITS:
        fail(_span(path, token), "bad_value", f"integer `{token.value[:12]}…` is too large",
             f"integers have at most {MAX_INT_DIGITS} digits", kind=ParseError)
    return int(token.value)


def parse_duration(path: str, token: Token) -> ast.Duration:
    seconds = duration_seconds(token.value) if len(token.value) <= 24 else None
    if seconds is None:
        fail(_span(path, token), "bad_duration",
             f"bad duration `{token.value}`", "units go d, h, m, s in that order, each at most once (`1h30m`)",
             kind=ParseError)
    if seconds <= 0:
        fail(_span(path, token), "bad_duration", f"duration `{token.value}` must be above zero", kind=ParseError)
    return ast.Duration(seconds, token.value, _span(path, token))


class _Build:
    """One method per grammar rule, ``(meta, children) -> node``; each builds the AST node
    for it. ``transform`` walks the tree bottom-up without recursion (Lark's own
    Transformer wraps every method call, which cost a third of parsing)."""

    def __init__(self, path: str):
        self.path = path

    def transform(self, tree: Tree):
        results: dict = {}
        for sub in tree.iter_subtrees():  # children come before their parents
            children = [results[id(c)] if isinstance(c, Tree) else c for c in sub.children]
            results[id(sub)] = getattr(self, sub.data)(sub.meta, children)
        return results[id(tree)]

    def sp(self, meta) -> Span:
        return _span(self.path, meta)

    def tsp(self, token) -> Span:
        return _span(self.path, token)

    def s(self, token) -> str:
        return unquote(self.path, token)

    # -- top level

    def start(self, meta, items):
        return list(items)

    def title(self, meta, children):
        return ("title", self.s(children[0]))

    def _rule(self, meta, children, override):
        id_tok = children[0]
        rest = children[1:]
        title = None
        if rest and isinstance(rest[0], tuple) and rest[0][0] == "title":
            title = rest[0][1]
            rest = rest[1:]
        if not override and "." in id_tok.value and not DEFAULT_ID_RE.match(id_tok.value):
            fail(self.tsp(id_tok), "bad_name", f"rule id `{id_tok.value}` may not contain `.`",
                 "dots are for the `default.` ids of shipped rules; use `_`", kind=ParseError)
        fields = {"on": None, "when": None, "then": None, "priority": None}
        spans = {}
        on_span = priority_span = _span(self.path, meta)
        for clause, value, span in rest:
            if fields[clause] is not None:
                fail(span, "duplicate_clause", f"a rule has at most one `{clause}`",
                     kind=ParseError)
            fields[clause] = value
            spans[clause] = span
            if clause == "on":
                on_span = value[1]
            if clause == "priority":
                priority_span = span
        if fields["then"] is None:
            fail(self.tsp(id_tok), "missing_then", f"rule `{id_tok.value}` has no `then`",
                 "every rule needs exactly one `then` with its actions", kind=ParseError)
        clause_spans = tuple(sorted(spans.items(), key=lambda kv: (kv[1].line, kv[1].column)))
        return ast.Rule(
            id=id_tok.value,
            title=title,
            on=fields["on"][0] if fields["on"] else None,
            when=fields["when"],
            actions=tuple(fields["then"]),
            priority=fields["priority"],
            override=override,
            span=self.sp(meta),
            id_span=self.tsp(id_tok),
            on_span=on_span,
            priority_span=priority_span,
            clause_spans=clause_spans,
        )

    def rule(self, meta, children):
        return self._rule(meta, children, override=False)

    def override(self, meta, children):
        return self._rule(meta, children, override=True)

    def disable(self, meta, children):
        return ast.Disable(children[0].value, self.sp(meta))

    def on_clause(self, meta, children):
        tok = children[0]
        return ("on", (tok.value, self.tsp(tok)), self.sp(meta))

    def when_clause(self, meta, children):
        return ("when", children[0], self.sp(meta))

    def then_clause(self, meta, children):
        child = children[0]
        actions = child if isinstance(child, list) else [child]
        return ("then", actions, self.sp(meta))

    def action_block(self, meta, children):
        return list(children)

    def priority_clause(self, meta, children):
        return ("priority", parse_int(self.path, children[0]), self.sp(meta))

    # -- expressions

    def or_(self, meta, children):
        return children[0] if len(children) == 1 else ast.Or(tuple(children), self.sp(meta))

    def and_(self, meta, children):
        return children[0] if len(children) == 1 else ast.And(tuple(children), self.sp(meta))

    def not_(self, meta, children):
        return ast.Not(children[0], self.sp(meta))

    def compare(self, meta, children):
        left, op, right = children
        return ast.Compare(op.value, left, right, self.sp(meta))

    def _binary(op):
        def build(self, meta, children):
            return ast.Compare(op, children[0], children[1], self.sp(meta))
        return build

    in_ = _binary("in")
    not_in = _binary("not in")
    contains = _binary("contains")
    starts_with = _binary("starts with")
    ends_with = _binary("ends with")
    del _binary

    def matches(self, meta, children):
        left, tok = children
        return ast.Compare("matches", left, ast.Regex(tok.value[1:-1], self.tsp(tok)), self.sp(meta))

    def is_none(self, meta, children):
        return ast.IsNone(children[0], False, self.sp(meta))

    def is_not_none(self, meta, children):
        return ast.IsNone(children[0], True, self.sp(meta))

    def changed(self, meta, children):
        return ast.Changed(ast.Ref(children[0].value, self.tsp(children[0])), span=self.sp(meta))

    def changed_to(self, meta, children):
        return ast.Changed(children[0], None, children[1], self.sp(meta))

    def changed_from_to(self, meta, children):
        return ast.Changed(children[0], children[1], children[2], self.sp(meta))

    def for_(self, meta, children):
        return ast.For(children[0], parse_duration(self.path, children[1]), self.sp(meta))

    def for_within(self, meta, children):
        operand, dur, name = children
        return ast.For(operand, parse_duration(self.path, dur), self.sp(meta), self.s(name), self.tsp(name))

    def ref(self, meta, children):
        return ast.Ref(children[0].value, self.sp(meta))

    def call(self, meta, children):
        name = children[0]
        return ast.Call(name.value, tuple(children[1:]), self.sp(meta))

    def paren(self, meta, children):
        return ast.Paren(children[0], self.sp(meta))

    def string(self, meta, children):
        return ast.Literal(self.s(children[0]), "str", self.sp(meta))

    def int_(self, meta, children):
        return ast.Literal(parse_int(self.path, children[0]), "int", self.sp(meta))

    def duration(self, meta, children):
        return parse_duration(self.path, children[0])

    def true(self, meta, children):
        return ast.Literal(True, "bool", self.sp(meta))

    def false(self, meta, children):
        return ast.Literal(False, "bool", self.sp(meta))

    def none(self, meta, children):
        return ast.Literal(None, "none", self.sp(meta))

    def list_(self, meta, children):
        if len(children) > MAX_LIST_ITEMS:  # each evaluation and every lint pass walks it
            fail(self.sp(meta), "list_too_long", f"a list of {len(children):,} values; at most "
                 f"{MAX_LIST_ITEMS:,} are allowed", "keep long lists out of rules (a custom field, a tag)",
                 kind=ParseError)
        return ast.ListLit(tuple(children), self.sp(meta))

    # -- actions

    def assign_agent(self, meta, c):
        return ast.Action("assign_agent", self.sp(meta), agent=self.s(c[0]))

    def assign_department(self, meta, c):
        strategy = c[1].value if len(c) > 1 else None
        return ast.Action("assign_department", self.sp(meta), department=self.s(c[0]), strategy=strategy)

    def unassign(self, meta, c):
        return ast.Action("unassign", self.sp(meta))

    def subscribe(self, meta, c):
        return ast.Action("subscribe", self.sp(meta), target=c[0])

    def unsubscribe(self, meta, c):
        return ast.Action("unsubscribe", self.sp(meta), target=ast.Target("agent", self.s(c[0]), self.tsp(c[0])))

    def notify(self, meta, c):
        target, options = c[0], c[1:]
        kw, order = {}, []
        for name, value, span in options:
            if name in kw:
                fail(span, "duplicate_option", f"`notify` takes `{name.rstrip('_')}` once", kind=ParseError)
            kw[name] = value
            order.append(name)
        return ast.Action("notify", self.sp(meta), target=target, order=tuple(order), **kw)

    def email(self, meta, c):
        return ast.Action("email", self.sp(meta), target=c[0], template=self.s(c[1]))

    def email_transcript(self, meta, c):
        return ast.Action("email_transcript", self.sp(meta), targets=tuple(c))

    def target_customer(self, meta, c):
        return ast.Target("customer", None, self.sp(meta))

    def target_address(self, meta, c):
        return ast.Target("address", self.s(c[0]), self.sp(meta))

    def webhook(self, meta, c):
        return ast.Action("webhook", self.sp(meta), webhook=self.s(c[0]))

    def reply(self, meta, c):
        return ast.Action("reply", self.sp(meta), text=self.s(c[0]))

    def reply_article(self, meta, c):
        return ast.Action("reply_article", self.sp(meta), article=self.s(c[0]))

    def note(self, meta, c):
        return ast.Action("note", self.sp(meta), text=self.s(c[0]))

    def tag(self, meta, c):
        return ast.Action("tag", self.sp(meta), tag=self.s(c[0]))

    def untag(self, meta, c):
        return ast.Action("untag", self.sp(meta), tag=self.s(c[0]))

    def set_priority(self, meta, c):
        return ast.Action("set_priority", self.sp(meta), priority=parse_int(self.path, c[0]))

    def snooze_for(self, meta, c):
        return ast.Action("snooze", self.sp(meta), duration=parse_duration(self.path, c[0]))

    def snooze_until(self, meta, c):
        return ast.Action("snooze", self.sp(meta), schedule=self.s(c[0]))

    def set_status(self, meta, c):
        return ast.Action("set_status", self.sp(meta), status=c[0].value)
    def shift_add(self, meta, c):
        return ast.Shift(c[0], "+", c[1], self.sp(meta))

    def shift_sub(self, meta, c):
        return ast.Shift(c[0], "-", c[1], self.sp(meta))

    def set_field(self, meta, c):
        return ast.Action("set_field", self.sp(meta), field_name=c[0].value, value=c[1])

    def set_department(self, meta, c):
        return ast.Action("set_department", self.sp(meta), department=self.s(c[0]))

    def _bare(kind):
        def build(self, meta, c):
            return ast.Action(kind, self.sp(meta))
        return build

    close = _bare("close")
    reopen = _bare("reopen")
    lock = _bare("lock")
    unlock = _bare("unlock")
    stop = _bare("stop")
    del _bare

    def target_subscribers(self, meta, c):
        return ast.Target("subscribers", None, self.sp(meta))

    def target_assignee(self, meta, c):
        return ast.Target("assignee", None, self.sp(meta))

    def target_operators(self, meta, c):
        return ast.Target("operators", None, self.sp(meta))

    def target_mentioned(self, meta, c):
        return ast.Target("mentioned", None, self.sp(meta))

    def target_agent(self, meta, c):
        return ast.Target("agent", self.s(c[0]), self.sp(meta))

    def target_department(self, meta, c):
        return ast.Target("department", self.s(c[0]), self.sp(meta))

    def opt_except(self, meta, c):
        return ("except_", c[0], self.sp(meta))

    def who_assignee(self, meta, c):
        return "assignee"

    def who_actor(self, meta, c):
        return "actor"

    def opt_template(self, meta, c):
        return ("template", self.s(c[0]), self.sp(meta))

    def opt_message(self, meta, c):
        return ("message", self.s(c[0]), self.sp(meta))

    # -- routing

    def routing(self, meta, children):
        seen = {}
        for line in children:
            key = (line.kind, line.channel)
            if key in seen:
                what = {"backlog": "one `backlog` line", "limit": "one `at most N per D` line",
                        "capacity": f"one `capacity {line.channel}` line"}[line.kind]
                fail(line.span, "duplicate_clause", f"a routing block has {what}",
                     f"the first is at line {seen[key].line}", kind=ParseError)
            seen[key] = line.span
        return ast.Routing(tuple(children), self.sp(meta))

    def routing_backlog(self, meta, c):
        idle = parse_duration(self.path, c[0]) if c else None
        return ast.RoutingLine("backlog", idle=idle, span=self.sp(meta))

    def routing_limit(self, meta, c):
        return ast.RoutingLine("limit", count=parse_int(self.path, c[0]), per=parse_duration(self.path, c[1]),
                               span=self.sp(meta))

    def routing_capacity(self, meta, c):
        return ast.RoutingLine("capacity", count=parse_int(self.path, c[1]), channel=c[0].value,
                               span=self.sp(meta), channel_span=self.tsp(c[0]))

    # -- schedules

    def schedule(self, meta, children):
        id_tok, rest = children[0], children[1:]
        title = None
        if rest and isinstance(rest[0], tuple) and rest[0][0] == "title":
            title, rest = rest[0][1], rest[1:]
        timezone, tz_span, lines = None, self.tsp(id_tok), []
        for item in rest:
            if isinstance(item, ast.ScheduleLine):
                lines.append(item)
            else:
                if timezone is not None:
                    fail(item[2], "duplicate_clause", "a schedule has one `timezone`", kind=ParseError)
                _, timezone, tz_span = item
        if not lines:
            fail(self.tsp(id_tok), "bad_schedule", f"schedule `{id_tok.value}` has no hours",
                 "add a line such as `mon-fri 09:00-18:00`", kind=ParseError)
        return ast.Schedule(id_tok.value, title, timezone or "UTC", tuple(lines), self.sp(meta),
                            self.tsp(id_tok), tz_span)

    def timezone(self, meta, c):
        return ("timezone", self.s(c[0]), self.tsp(c[0]))

    def schedule_line(self, meta, c):
        days = [t for t in c if t.type == "DOTTED"]
        times = [t for t in c if t.type == "TIME"]
        idx = []
        for tok in days:
            if tok.value not in ast.DAYS:
                from .errors import did_you_mean
                fail(self.tsp(tok), "bad_schedule", f"unknown day `{tok.value}`",
                     did_you_mean(tok.value, ast.DAYS) or "days are mon tue wed thu fri sat sun", kind=ParseError)
            idx.append(ast.DAYS.index(tok.value))
        minutes = []
        for tok in times:
            hh, mm = int(tok.value[:2]), int(tok.value[3:])
            if mm > 59 or hh > 24 or (hh == 24 and mm):
                fail(self.tsp(tok), "bad_schedule", f"bad time `{tok.value}`", "times go 00:00 to 24:00",
                     kind=ParseError)
            minutes.append(hh * 60 + mm)
        if minutes[1] == minutes[0]:
            fail(self.tsp(times[1]), "bad_schedule", "a time range must not be empty", kind=ParseError)
        if minutes[0] == 24 * 60:
            fail(self.tsp(times[0]), "bad_schedule", "a range cannot start at 24:00", kind=ParseError)
        return ast.ScheduleLine(idx[0], idx[-1], minutes[0], minutes[1], self.sp(meta))


    # -- SLA policies

    def sla(self, meta, children):
        id_tok, rest = children[0], children[1:]
        title = None
        if rest and isinstance(rest[0], tuple) and rest[0][0] == "title":
            title, rest = rest[0][1], rest[1:]
        when = within = None
        when_span = within_span = self.tsp(id_tok)
        lines, seen, clause_spans = [], {}, []
        for kind, value, span in rest:
            clause_spans.append((kind, span))
            if kind == "when":
                if when is not None:
                    fail(span, "duplicate_clause", "a policy has at most one `when`", kind=ParseError)
                when, when_span = value, span
            elif kind == "within":
                if within is not None:
                    fail(span, "duplicate_clause", "a policy has at most one `within`", kind=ParseError)
                within, within_span = value
            else:
                if value.name in seen:
                    fail(span, "duplicate_clause", f"a policy sets `{value.name}` once", kind=ParseError)
                seen[value.name] = span
                lines.append(value)
        if not any(line.name in ast.SLA_TARGETS for line in lines):
            fail(self.tsp(id_tok), "bad_sla", f"policy `{id_tok.value}` sets no target",
                 "add a line such as `first_response 1h` (" + ", ".join(ast.SLA_TARGETS) + ")", kind=ParseError)
        return ast.Sla(id_tok.value, title, when, tuple(lines), within, self.sp(meta), self.tsp(id_tok),
                       when_span, within_span, tuple(clause_spans))

    def sla_when(self, meta, c):
        return ("when", c[0], self.sp(meta))

    def sla_within(self, meta, c):
        return ("within", (self.s(c[0]), self.tsp(c[0])), self.sp(meta))

    def _sla_line(name):
        def build(self, meta, c):
            return ("line", ast.SlaTarget(name, parse_duration(self.path, c[0]), self.sp(meta)), self.sp(meta))
        return build

    sla_first_response = _sla_line("first_response")
    sla_next_response = _sla_line("next_response")
    sla_resolution = _sla_line("resolution")
    sla_due_soon = _sla_line("due_soon")
    del _sla_line


# Names users read for the grammar's terminals, in a syntax error's "expected" list.
TOKEN_NAMES = {
    "DOTTED": "a name", "STRING": "a string", "INT": "an integer", "DURATION": "a duration",
    "REGEX": "a /regex/", "TIME": "a time HH:MM", "COMPARE": "a comparison", "LBRACE": "`{`",
    "RBRACE": "`}`", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "COMMA": "`,`",
    "EQUAL": "`=`", "MINUS": "`-`", "PLUS": "`+`", "$END": "end of file",
}


def _expected_text(expected) -> str:
    names = []
    for term in sorted(expected):
        if term in TOKEN_NAMES:
            names.append(TOKEN_NAMES[term])
        else:
            try:
                pattern = grammar().get_terminal(term).pattern
                names.append(f"`{pattern.value}`" if pattern.type == "str" else term.lower())
            except KeyError:
                names.append(term.lower())
    names = sorted(set(names), key=lambda n: (not n.startswith("`"), n))
    if len(names) > 12:
        names = names[:12] + ["…"]
    return ", ".join(names)


def _token_text(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    value = token.value if len(token.value) <= 30 else token.value[:27] + "..."
    return f"`{value}`"


def _syntax_error(path: str, source: str, err: UnexpectedInput) -> ParseError:
    line, col = max(err.line, 1), max(err.column, 1)
    if isinstance(err, UnexpectedCharacters):
        ch = source[err.pos_in_stream] if err.pos_in_stream < len(source) else ""
        span = Span.point(path, line, col)
        if ch == '"':
            return ParseError([Diagnostic(span, "bad_string", "unterminated string",
                                          hint="a string ends with `\"` on the same line")])
        if ch == "/":
            return ParseError([Diagnostic(span, "bad_regex", "unterminated regex", hint="a regex ends with an unescaped `/` on the same line")])
        if ch == "'":
            return ParseError([Diagnostic(span, "syntax_error", "unexpected `'`", hint="strings use double quotes")])
        shown = repr(ch)[1:-1] if ch else "end of file"
        return ParseError([Diagnostic(span, "syntax_error", f"unexpected character `{shown}`", hint=f"expected {_expected_text(err.allowed)}" if err.allowed else None)])
    if isinstance(err, UnexpectedEOF):
        lines = source.split("\n")  # as Lark counts lines
        span = Span.point(path, len(lines), len(lines[-1]) + 1)
        return ParseError([Diagnostic(span, "syntax_error", "unexpected end of file", hint=f"expected {_expected_text(err.expected)}")])
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    if tok.type == "$END":
        lines = source.split("\n")  # as Lark counts lines
        span = Span.point(path, len(lines), len(lines[-1]) + 1)
    else:
        span = _span(path, tok)
    hint = f"expected {_expected_text(err.expected)}"
    message = f"unexpected {_token_text(tok)}"
    if tok.type == "COMPARE" or tok.value in ("contains", "in", "matches", "starts", "ends", "is"):
        if err.expected and "COMPARE" not in err.expected:
            message += " (comparisons do not chain; use `and`)"
    return ParseError([Diagnostic(span, "syntax_error", message, hint=hint)])


_NESTING = frozenset({"paren", "not_", "list_", "call", "for_", "for_within"})


def _check_depth(path: str, tree: Tree) -> None:
    """Refuse nesting deeper than MAX_DEPTH levels of what the author wrote (parentheses,
    lists, calls, `not`, `and`/`or` of several parts), so later recursive passes stay
    bounded. Lark's own tree has more levels than that (one per grammar rule)."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in _NESTING or (node.data in ("and_", "or_") and len(node.children) > 1):
            depth += 1
            if depth > MAX_DEPTH:
                fail(_span(path, node), "too_deep", f"expression nested deeper than {MAX_DEPTH} levels",
                     kind=ParseError)
        for child in node.children:
            if isinstance(child, Tree):
                stack.append((child, depth))


def decode_source(path: str, data: bytes) -> str:
    """Bytes of a rule file as text, or a located error for a file that is not UTF-8 text."""
    if len(data) > MAX_SOURCE_BYTES:
        fail(Span.point(path, 1, 1), "file_too_large",
             f"file is {len(data)} bytes; rule files are limited to {MAX_SOURCE_BYTES} bytes", kind=ParseError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[: e.start].decode("utf-8", "replace")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        fail(Span.point(path, line, col), "bad_encoding", f"not UTF-8 text (byte 0x{data[e.start]:02x})",
             kind=ParseError)
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        col = nul - (text.rfind("\n", 0, nul) + 1) + 1
        fail(Span.point(path, line, col), "bad_encoding", "binary data (NUL byte) in a rule file", kind=ParseError)
    return text.lstrip("\ufeff") if text.startswith("\ufeff") else text


def parse(source: str, path: str = "<string>") -> ast.RuleFile:
    """Parse .rules text into a RuleFile; raise ParseError located in ``path``."""
    if len(source) > MAX_SOURCE_BYTES or len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        # text that did not come from a file (the admin API, tests) is held to the same size
        fail(Span.point(path, 1, 1), "file_too_large",
             f"rule text is over {MAX_SOURCE_BYTES} bytes, the limit for rule files", kind=ParseError)
    comments: list[Token] = []
    try:
        tree = _parse_tree(source, comments)
    except UnexpectedInput as e:
        raise _syntax_error(path, source, e) from None
    except _SplitWord as e:
        raise _split_word_error(path, source, e.token) from None
    _check_depth(path, tree)
    items = _Build(path).transform(tree)
    from .comments import attach_comments, ignore_markers

    rule_items = [i for i in items if not isinstance(i, (ast.Schedule, ast.Sla))]
    schedules = [i for i in items if isinstance(i, ast.Schedule)]
    slas = [i for i in items if isinstance(i, ast.Sla)]
    rf = ast.RuleFile(path, tuple(rule_items), tuple(schedules), source=source,
                      ignores=ignore_markers(source, comments), form="rules", slas=tuple(slas))
    return attach_comments(rf, items, comments)


def _parse_tree(source: str, comments: list, start: str = "start") -> Tree:
    token = _COMMENTS.set(comments)
    src_token = _SOURCE.set(source)
    names = _KEYWORD_NAMES.set([])
    try:
        return grammar().parse(source, start=start)
    except UnexpectedToken as e:
        seen = _KEYWORD_NAMES.get()
        if seen and e.token.type != "$END" and _only_space_between(source, seen[-1], e.token):
            raise _SplitWord(seen[-1]) from None  # reported as "unexpected `then`" at the keyword
        if seen and e.token.type == "$END" and not source[seen[-1].end_pos:].strip():
            raise _SplitWord(seen[-1]) from None
        raise
    finally:
        _KEYWORD_NAMES.reset(names)
        _SOURCE.reset(src_token)
        _COMMENTS.reset(token)


def _only_space_between(source: str, before: Token, after: Token) -> bool:
    gap = source[before.end_pos:after.start_pos]
    return not re.sub(r"#[^\n]*", "", gap).strip()


def parse_expression(text: str, path: str = "<string>", line: int = 1, column: int = 1,
                     start: str = "expr"):
    """Parse one condition (as a YAML rule's ``when`` holds it) into an Expr; with
    ``start="set_value"``, a value as a ``set field`` takes it (``now + 1d`` too).

    ``line`` and ``column`` say where the text starts in its file, so spans and errors
    point into that file. The text must stand on one line from there.
    """
    # Pad so Lark's own line/column count lands where the text stands in its file.
    padded = "\n" * (line - 1) + " " * (column - 1) + text
    try:
        tree = _parse_tree(padded, [], start=start)
    except UnexpectedInput as e:
        raise _syntax_error(path, padded, e) from None
    except _SplitWord as e:
        raise _split_word_error(path, padded, e.token) from None
    _check_depth(path, tree)
    return _Build(path).transform(tree)


def parse_file(path: str | Path) -> ast.RuleFile:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        fail(Span.point(str(path), 1, 1), "file_error", f"cannot read file: {e.strerror}", kind=ParseError)
    return parse(decode_source(str(path), data), str(path))
