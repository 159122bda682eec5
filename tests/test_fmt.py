"""`chatflow fmt`'s printer (dsl/formatter.py): stable, meaning-preserving, comment-keeping."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl import ast
from dsl.errors import ParseError
from dsl.formatter import format_expr, format_rules, format_source
from dsl.parser import duration_seconds, parse, parse_expression

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "rules" / "default.rules", ROOT / "rules" / "examples" / "routing.rules"]

COMMENTS_EVERYWHERE = '''\
# file header

# about the first rule
rule first "First" {  # after the header
  # before then
  then {  # after then {
    # before close
    close  # after close
    # commented out: stop
  }  # after the block
  # before on
  on chat.created  # after on
  when chat.priority >= 2 and  # inside the condition
    chat.idle for 5m  # after when
  # before priority
  priority 3  # after priority
  # before the closing brace
}  # after the rule

# about disable
disable default.escalate_unread  # why it is off

schedule hours "Hours" {  # after the schedule header
  # before mon
  mon-fri 09:00-18:00  # weekdays
  timezone "Europe/Berlin"  # after timezone
  # before the last line
  sat 22:00-24:00
  # before the schedule's brace
}
# at the end

# and after a blank line
'''

SNIPPETS = {
    "comments everywhere": COMMENTS_EVERYWHERE,
    "nested logic": '''
rule logic { when not (a or b) and (c or not d) or not (e and f) or (g)  then stop }
rule deep { when ((not ((x)))) then stop }
rule no_op_not { when not not chat.open then stop }
''',
    "for binds to the atom": '''
rule f { when not chat.idle for 5m and (chat.awaiting_agent for 1h30m or chat.locked) then stop }
rule g { when (not chat.idle) for 10d1s then stop }
''',
    "paren and precedence": 'rule p { when (a or b) and c then stop }',
    "strings": r'''
rule s "Title with \"quotes\", a \\ backslash and a\nnewline" {
  when message.text == "say \"hi\"\n\\o/" or customer.name starts with "\\"
  then {
    reply "line one\nline two \"quoted\" # not a comment"
    note "C:\\path\\"
  }
}
''',
    "regexes": r'''
rule r { when message.text matches /https?:\/\/example\.com\/(?i)refund\// and message.text matches /"#"/ then stop }
rule r2 { when not message.text matches /\d+\\/ then stop }
''',
    "lists and calls": '''
rule l {
  when chat.department in ["sales", "support",] and lower(customer.name,) not in [] and len(chat.tags) > 0
    and hour(now, "Europe/Berlin") <= 17 and weekday(now, "UTC") in ["sat", "sun"] and f()
  then stop
}
''',
    "every comparison": '''
rule c {
  when a == 1 or b != none or c < 2 or d <= 3 or e > true or f >= false or g in [1] or h not in [2]
    or i contains "x" or j starts with "y" or k ends with "z" or l matches /w/ or m is none or n is not none
  then stop
}
''',
    "every action": '''
rule every "Every action kind" {
  on chat.created
  then {
    assign agent "alice"
    assign department "sales"
    assign department "night" by least_busy
    assign department "day" by round_robin
    unassign
    subscribe operators
    subscribe agent "bob"
    subscribe department "vip"
    unsubscribe agent "bob"
    notify subscribers
    notify assignee template "t"
    notify operators except assignee
    notify mentioned message "m" except actor template "t2"
    notify agent "carol" template "t3" message "hi \\"there\\""
    notify department "sales" except actor
    email customer template "unread_replies"
    webhook "crm"
    reply "Hello {{ customer.name }}"
    reply article "how-to-refund"
    note "internal"
    tag "vip"
    untag "new"
    set priority 4
    set field plan = "gold"
    set field copied = customer.fields.plan
    set field flag = true
    close
    reopen
    lock
    unlock
    stop
  }
}
''',
    "single action forms": '''
override rule default.notify_assigned "Quieter" { priority 100 on chat.assigned then notify assignee }
override rule default.notify_mentioned { then { } }
rule set_expr { then set field x = a or b and not c }
''',
    "schedules": '''
schedule night "Night desk" { timezone "Europe/Berlin" mon-fri 22:00-06:00 sat 00:00-24:00 sun 23:30-00:30 }
rule between { when in_schedule("night") then stop }
schedule utc { fri-mon 18:00-24:00 }
''',
    "long condition": '''
rule long "A condition longer than one line" {
  when chat.page_url contains "/pricing" and customer.language == "de" and chat.priority >= 2 and not chat.locked for 5m
  then stop
}
rule long_or {
  when chat.page_url contains "/pricing/enterprise/contact" or (customer.language == "de" and chat.priority >= 2) or chat.idle for 1h
  then stop
}
''',
    "things sharing a line": '''
rule a { when a and  # inside
  b then { tag "a" tag "b" } priority 3  # after priority
}  # after a
disable x disable y  # after y
rule b { then {} }  # after b
schedule s { mon 01:00-02:00 tue 03:00-04:00  # after tue
}
''',
    "empty": "",
    "only comments": "# nothing here yet\n\n# really\n",
    "routing": '''
# how chats are picked
routing {   # after the brace
  # before the backlog
  backlog skip idle over 4h  # after the backlog
  at most 5 per 10m
  capacity widget 3 capacity email 10
  # at the end
}
rule r { on chat.created then set department "sales" }
''',
    "SLA policies and business time": '''
# targets
sla vip "VIP"{# after the head
  # before when
  when chat.priority>=3   # after when
  first_response 5m  # after a target
  within "h" resolution 1d
  due_soon 1m
  # at the end
}
rule r { when chat.awaiting_agent for 2h within "h" and chat.sla_breached("resolution") then stop }
sla rest { first_response 1h }  # after rest
schedule h { mon-fri 09:00-18:00 }
''',
}

CASES = [pytest.param(p.read_text(), id=p.name) for p in SHIPPED] + [
    pytest.param(text, id=name) for name, text in SNIPPETS.items()
]


@pytest.mark.parametrize("source", CASES)
def test_formatting_twice_changes_nothing(source):
    once = format_source(source)
    assert format_source(once) == once


@pytest.mark.parametrize("source", CASES)
def test_formatting_keeps_the_meaning(source):
    assert parse(format_source(source)) == parse(source)


@pytest.mark.parametrize("source", CASES)
def test_output_ends_with_one_newline(source):
    out = format_source(source)
    assert out == "" or (out.endswith("\n") and not out.endswith("\n\n"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_rules_are_already_canonical(path):
    assert format_source(path.read_text()) == path.read_text()


def test_empty_file_formats_to_nothing():
    assert format_source("") == ""
    assert format_source("  \n\n") == ""


def _comment_lines(source: str) -> list:
    # The snippets keep `#` out of their strings, so every `#` starts a comment.
    return [line[line.index("#"):].rstrip() for line in source.splitlines() if "#" in line]


def test_every_comment_is_kept():
    out = format_source(COMMENTS_EVERYWHERE)
    for comment in _comment_lines(COMMENTS_EVERYWHERE):
        assert out.count(comment) == 1, comment


def test_comments_stay_where_they_were_written():
    assert format_source(COMMENTS_EVERYWHERE) == '''\
# file header

# about the first rule
rule first "First" {  # after the header
  # inside the condition
  # before priority
  priority 3  # after priority
  # before on
  on chat.created  # after on
  when chat.priority >= 2 and chat.idle for 5m  # after when
  # before then
  then {  # after then {
    # before close
    close  # after close
    # commented out: stop
  }  # after the block
  # before the closing brace
}  # after the rule

# about disable
disable default.escalate_unread  # why it is off

schedule hours "Hours" {  # after the schedule header
  timezone "Europe/Berlin"  # after timezone
  # before mon
  mon-fri 09:00-18:00  # weekdays
  # before the last line
  sat 22:00-24:00
  # before the schedule's brace
}

# at the end

# and after a blank line
'''


def test_a_comment_after_several_things_on_a_line_follows_the_last_of_them():
    assert format_source(SNIPPETS["things sharing a line"]) == '''\
rule a {
  priority 3  # after priority
  when a and b
  # inside
  then {
    tag "a"
    tag "b"
  }
}  # after a

disable x

disable y  # after y

rule b {
  then {}
}  # after b

schedule s {
  timezone "UTC"
  mon 01:00-02:00
  tue 03:00-04:00  # after tue
}
'''


def test_an_ignore_marker_stays_on_the_line_it_silences():
    source = 'rule r {\n  on chat.created\n  when chat.priority >= 0  # chatflow: ignore=always_true\n  then stop\n}\n'
    assert format_source(source) == source
    rf = parse(format_source(source))
    assert rf.ignores == ((3, frozenset({"always_true"})),)


MESSY = (
    'rule   messy "Messy"{when not(chat.priority>=2 or chat.tags contains "vip")and chat.idle for 5m '
    'then{tag "x" notify agent "bob" message "hi" except actor template "t"}priority 5 on chat.created}'
    'disable default.escalate_unread schedule hours{sat 10:00-14:00 timezone "UTC" fri-mon 22:00-02:00}'
    'rule one{then close}\n\n\n'
)


def test_messy_input_gets_the_canonical_layout():
    assert format_source(MESSY) == '''\
rule messy "Messy" {
  priority 5
  on chat.created
  when not (chat.priority >= 2 or chat.tags contains "vip") and chat.idle for 5m
  then {
    tag "x"
    notify agent "bob" message "hi" except actor template "t"
  }
}

disable default.escalate_unread

schedule hours {
  timezone "UTC"
  sat 10:00-14:00
  fri-mon 22:00-02:00
}

rule one {
  then close
}
'''


def test_a_long_condition_breaks_before_its_top_level_operator():
    out = format_source(SNIPPETS["long condition"])
    assert '''\
rule long "A condition longer than one line" {
  when chat.page_url contains "/pricing"
      and customer.language == "de"
      and chat.priority >= 2
      and not chat.locked for 5m
  then stop
}''' in out
    assert '''\
  when chat.page_url contains "/pricing/enterprise/contact"
      or (customer.language == "de" and chat.priority >= 2)
      or chat.idle for 1h
''' in out
    assert max(len(line) for line in format_source("rule x { when a and b then stop }").splitlines()) < 100


def test_schedules_stay_among_the_rules_where_they_were_written():
    out = format_source(SNIPPETS["schedules"])
    assert [line.split()[1] for line in out.splitlines() if line and not line[0].isspace() and line != "}"] == [
        "night", "between", "utc"]
    assert "  sun 23:30-00:30\n" in out and "  sat 00:00-24:00\n" in out
    assert 'schedule utc {\n  timezone "UTC"\n  fri-mon 18:00-24:00\n}\n' in out


def test_a_tree_without_spans_puts_schedules_last():
    rule = ast.Rule("r", None, "chat.created", None, (ast.Action("close"),))
    hours = ast.Schedule("hours", "Hours", "UTC", (ast.ScheduleLine(0, 4, 9 * 60, 24 * 60),))
    rf = ast.RuleFile("hand.rules", (rule, ast.Disable("default.x")), (hours,))
    assert format_rules(rf) == '''\
rule r {
  on chat.created
  then close
}

disable default.x

schedule hours "Hours" {
  timezone "UTC"
  mon-fri 09:00-24:00
}
'''
    assert parse(format_rules(rf), "hand.rules") == rf


def test_hand_built_comments_stand_before_their_nodes():
    action = ast.Action("tag", tag="x", comments=("# why",), trailing="# trailing")
    rule = ast.Rule("r", None, None, ast.Ref("chat.open"), (action,), priority=1,
                    comments=("# lead",), clause_comments=(("when", ("# cond",)),), end_comments=("# end",))
    rf = ast.RuleFile("h.rules", (rule,), (), end_comments=("# bye",))
    assert format_rules(rf) == '''\
# lead
rule r {
  priority 1
  # cond
  when chat.open
  then {
    # why
    tag "x"  # trailing
  }
  # end
}

# bye
'''


def test_bad_input_raises_the_parsers_error():
    with pytest.raises(ParseError):
        format_source("rule r { then }", "bad.rules")


# ---------------------------------------------------------------- expressions

@pytest.mark.parametrize("text", [
    "changed(chat.tags)",
    'not chat.status changed from "open" to "closed" or chat.priority changed to 4',
    "(chat.priority changed to 4) == true",
    "changed(chat.fields.plan) for 5m",
    "not chat.idle for 5m",
    "(a or b) and c",
    "a or b and c",
    "not (a and b)",
    "(not a) for 5m",
    "a == (b == c)",
    "(a is none) == true",
    "f((a or b), [c and d, ], )",
    r'x == "a\"b\\c\nd"',
    r"x matches /a\/b/",
])
def test_expression_text_round_trips(text):
    e = parse_expression(text)
    assert parse_expression(format_expr(e)) == e
    assert format_expr(parse_expression(format_expr(e))) == format_expr(e)


@pytest.mark.parametrize("text", [
    "now + 1d",
    "chat.created_at - 2h30m",
    "(now) + 90m",
    "chat.fields.ordered_at + 14d",
    "now + (1d)",
])
def test_set_field_value_round_trips(text):
    source = f"rule r {{ then set field due = {text} }}"
    rf = parse(source, "v.rules")
    assert isinstance(rf.items[0].actions[0].value, ast.Shift)
    assert format_source(source, "v.rules") == format_source(format_source(source, "v.rules"), "v.rules")
    assert parse(format_source(source, "v.rules"), "v.rules") == rf
    assert f"set field due = {text}" in format_source(source, "v.rules")


@pytest.mark.parametrize("tree, text", [
    (ast.Not(ast.For(ast.Ref("chat.idle"), ast.Duration(300, "5m"))), "not chat.idle for 5m"),
    (ast.For(ast.Not(ast.Ref("chat.idle")), ast.Duration(300, "5m")), "(not chat.idle) for 5m"),
    (ast.And((ast.Or((ast.Ref("a"), ast.Ref("b"))), ast.Ref("c"))), "(a or b) and c"),
    (ast.Or((ast.And((ast.Ref("a"), ast.Ref("b"))), ast.Ref("c"))), "a and b or c"),
    (ast.And((ast.And((ast.Ref("a"), ast.Ref("b"))), ast.Ref("c"))), "(a and b) and c"),
    (ast.Not(ast.And((ast.Ref("a"), ast.Ref("b")))), "not (a and b)"),
    (ast.Compare("==", ast.Compare("<", ast.Ref("a"), ast.Ref("b")), ast.Literal(True, "bool")), "(a < b) == true"),
    (ast.IsNone(ast.Not(ast.Ref("a")), True), "(not a) is not none"),
    (ast.For(ast.For(ast.Ref("a"), ast.Duration(1, "1s")), ast.Duration(60, "1m")), "(a for 1s) for 1m"),
    (ast.Compare("not in", ast.Ref("x"), ast.ListLit((ast.Literal("a", "str"), ast.Literal(None, "none")))),
     'x not in ["a", none]'),
    (ast.Call("hour", (ast.Ref("now"), ast.Literal("Europe/Berlin", "str"))), 'hour(now, "Europe/Berlin")'),
    (ast.Changed(ast.Ref("chat.tags")), "changed(chat.tags)"),
    (ast.Not(ast.Changed(ast.Ref("chat.priority"), None, ast.Literal(4, "int"))), "not chat.priority changed to 4"),
    (ast.Changed(ast.Compare("==", ast.Ref("a"), ast.Ref("b")), ast.Ref("c"), ast.Changed(ast.Ref("d"))),
     "(a == b) changed from c to changed(d)"),
    (ast.Changed(ast.Ref("a"), None, ast.Changed(ast.Ref("b"), None, ast.Ref("c"))), "a changed to (b changed to c)"),
])
def test_parentheses_are_added_where_precedence_needs_them(tree, text):
    assert format_expr(tree) == text
    assert _without_parens(parse_expression(text)) == _without_parens(tree)


def test_a_duration_built_without_its_text_is_spelled_from_its_seconds():
    assert format_expr(ast.Duration(5430, "")) == "1h30m30s"
    assert format_expr(ast.Duration(86400 + 1, "")) == "1d1s"


@pytest.mark.parametrize("tree", [
    ast.And((ast.Ref("a"),)),
    ast.Or(()),
    ast.Regex("x"),
    ast.Compare("matches", ast.Ref("a"), ast.Literal("x", "str")),
    ast.Compare("matches", ast.Ref("a"), ast.Regex("a/b")),
    ast.Compare("=~", ast.Ref("a"), ast.Ref("b")),
    ast.Literal(-1, "int"),
    ast.Ref("true"),
    ast.Ref("chat..x"),
    ast.Ref("changed"),
    ast.Changed(ast.Literal(1, "int")),
    ast.Changed(ast.Ref("a"), ast.Ref("b"), None),
])
def test_trees_no_text_can_express_are_refused(tree):
    with pytest.raises(ValueError):
        format_expr(tree)


# ---------------------------------------------------------------- property: random expressions

def _binding(e) -> int:
    """How tightly a node binds in the grammar (SPEC §3.7), loosest first."""
    if isinstance(e, ast.Changed):
        return 6 if e.new is None else 4  # changed(F) is an atom, F changed to V a comparison
    kinds = [(ast.Or,), (ast.And,), (ast.Not,), (ast.Compare, ast.IsNone), (ast.For,)]
    return next((i for i, k in enumerate(kinds, 1) if isinstance(e, k)), 6)


def _without_parens(e):
    if isinstance(e, ast.Paren):
        return _without_parens(e.expr)
    if isinstance(e, (ast.And, ast.Or, ast.ListLit)):
        return type(e)(tuple(_without_parens(i) for i in e.items))
    if isinstance(e, ast.Call):
        return ast.Call(e.name, tuple(_without_parens(a) for a in e.args))
    if isinstance(e, ast.Not):
        return ast.Not(_without_parens(e.operand))
    if isinstance(e, ast.IsNone):
        return ast.IsNone(_without_parens(e.operand), e.negated)
    if isinstance(e, ast.For):
        return ast.For(_without_parens(e.operand), e.duration)
    if isinstance(e, ast.Compare):
        return ast.Compare(e.op, _without_parens(e.left), _without_parens(e.right))
    if isinstance(e, ast.Changed):
        return ast.Changed(*(None if x is None else _without_parens(x) for x in (e.fact, e.old, e.new)))
    return e


NAMES = ["chat.priority", "chat.idle", "chat.tags", "chat.fields.plan", "customer.name", "message.text", "now",
         "chat.awaiting_agent"]
FUNCTIONS = ["in_schedule", "hour", "weekday", "lower", "len"]
OPS = ["==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "starts with", "ends with"]

_texts = st.text(st.one_of(st.characters(categories=("L", "N", "P", "S")),
                           st.sampled_from(['"', "\\", "\n", " ", "#", "/", "{"])), max_size=8)
_literals = st.one_of(
    _texts.map(lambda s: ast.Literal(s, "str")),
    st.integers(0, 10**9).map(lambda n: ast.Literal(n, "int")),
    st.booleans().map(lambda b: ast.Literal(b, "bool")),
    st.just(ast.Literal(None, "none")),
)


@st.composite
def _durations(draw):
    parts = draw(st.lists(st.sampled_from("dhms"), min_size=1, max_size=4, unique=True))
    text = "".join(f"{draw(st.integers(1, 99))}{u}" for u in "dhms" if u in parts)
    return ast.Duration(duration_seconds(text), text)


_regexes = st.lists(st.sampled_from(["a", "Z", ".", "*", r"\/", r"\d", "(?i)", "[x]", "^", "$", " ", "#", '"',
                                     r"\\"]), min_size=1, max_size=6).map(lambda xs: ast.Regex("".join(xs)))
CHANGEABLE = ["chat.status", "chat.priority", "chat.tags", "chat.fields.plan"]
_atoms = st.one_of(st.sampled_from(NAMES).map(ast.Ref), _literals, _durations(),
                   st.sampled_from(CHANGEABLE).map(lambda n: ast.Changed(ast.Ref(n))))


def _expressions(wrap):
    """Random trees; ``wrap(child, binding)`` decides what a child looks like where the
    grammar needs something binding at least that tight."""
    def extend(child):
        return st.one_of(
            st.lists(child, min_size=2, max_size=3).map(lambda xs: ast.Or(tuple(wrap(x, 2) for x in xs))),
            st.lists(child, min_size=2, max_size=3).map(lambda xs: ast.And(tuple(wrap(x, 3) for x in xs))),
            child.map(lambda x: ast.Not(wrap(x, 3))),
            st.tuples(st.sampled_from(OPS), child, child).map(
                lambda t: ast.Compare(t[0], wrap(t[1], 5), wrap(t[2], 5))),
            st.tuples(child, _regexes).map(lambda t: ast.Compare("matches", wrap(t[0], 5), t[1])),
            st.tuples(child, st.booleans()).map(lambda t: ast.IsNone(wrap(t[0], 5), t[1])),
            st.tuples(child, child).map(lambda t: ast.Changed(wrap(t[0], 5), None, wrap(t[1], 5))),
            st.tuples(child, child, child).map(
                lambda t: ast.Changed(wrap(t[0], 5), wrap(t[1], 5), wrap(t[2], 5))),
            st.tuples(st.one_of(st.sampled_from(NAMES).map(ast.Ref), child), _durations()).map(
                lambda t: ast.For(wrap(t[0], 6), t[1])),
            st.tuples(st.sampled_from(FUNCTIONS), st.lists(child, max_size=3)).map(
                lambda t: ast.Call(t[0], tuple(t[1]))),
            st.lists(child, max_size=3).map(lambda xs: ast.ListLit(tuple(xs))),
            child.map(ast.Paren),
        )
    return st.recursive(_atoms, extend, max_leaves=12)


def _parens_where_needed(e, binding):
    return ast.Paren(e) if _binding(e) < binding else e


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions(_parens_where_needed))
def test_any_expression_round_trips_exactly(e):
    text = format_expr(e)
    assert parse_expression(text) == e, text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions(lambda e, binding: e))
def test_expressions_without_written_parens_keep_their_meaning(e):
    # Paren nodes take part in equality, so a tree built without them (by hand, or by a
    # pass that dropped them) comes back with the ones precedence needs, and nothing else.
    text = format_expr(e)
    back = parse_expression(text)
    assert _without_parens(back) == _without_parens(e), text
    assert format_expr(back) == text


# ---------------------------------------------------------------- property: comments anywhere

FUZZ_BASE = '''\
rule a "A" {
  priority 2
  on message.created
  when not chat.idle for 5m and (chat.priority >= 2 or message.text matches /x\\/y/) and chat.tags contains "vip"
  then {
    notify agent "bob" except actor template "t"
    set field plan = "gold"
    close
  }
}
disable default.escalate_unread
schedule s "S" {
  timezone "Europe/Berlin"
  mon-fri 22:00-24:00
  sat 10:00-14:00
}
override rule default.notify_assigned {
  then stop
}
'''
FUZZ_BASES = {"base": FUZZ_BASE, **{k: SNIPPETS[k] for k in (
    "comments everywhere", "every action", "schedules", "things sharing a line", "long condition")}}
_TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|/(?:\\.|[^/\\\n])*/|#[^\n]*|\s+')


def _gaps(text: str) -> list:
    """Runs of whitespace between tokens, leaving out the line break that ends a comment."""
    tokens = list(_TOKEN.finditer(text))
    return [m for i, m in enumerate(tokens) if m.group()[0].isspace()
            and not (i and tokens[i - 1].group().startswith("#") and tokens[i - 1].end() == m.start())]


_EDITS = st.sampled_from(["inline", "own line", "blank", "join"])


@pytest.mark.parametrize("name", FUZZ_BASES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_comments_anywhere_are_kept_and_settle(name, data):
    # Each chosen gap gets a comment (after code, on its own line, between blank lines),
    # or becomes one space so that more things share a line.
    base = FUZZ_BASES[name]
    gaps = _gaps(base)
    edits = data.draw(st.dictionaries(st.sampled_from(range(len(gaps))), _EDITS))
    pieces, last, n = [], 0, 0
    for i, m in enumerate(gaps):
        pieces.append(base[last:m.start()])
        if edits.get(i, "join") == "join":
            pieces.append(" " if i in edits else m.group())
        else:
            n += 1
            pieces.append({"inline": f"  # z{n}\n", "own line": f"\n# z{n}\n", "blank": f"\n\n# z{n}\n\n"}[edits[i]])
        last = m.end()
    source = "".join(pieces) + base[last:]
    once = format_source(source)
    assert parse(once) == parse(source)
    assert format_source(once) == once
    for k in range(1, n + 1):
        assert len(re.findall(rf"# z{k}$", once, re.M)) == 1, (k, once)


def test_keywords_stay_usable_where_the_grammar_reads_a_name():
    source = 'rule true {\n  on none\n  then set field not = "x"\n}\n'
    assert format_source(source) == source


def test_change_conditions_print_canonically():
    messy = ('rule r {on chat.updated when changed ( chat.tags )or chat.priority   changed\n'
             '  from 2 to 4 or(chat.status changed to "closed") then stop}\n')
    once = format_source(messy, "c.rules")
    assert once == ('rule r {\n  on chat.updated\n'
                    '  when changed(chat.tags) or chat.priority changed from 2 to 4 or (chat.status changed to "closed")\n'
                    '  then stop\n}\n')
    assert format_source(once, "c.rules") == once
    assert parse(once, "c.rules") == parse(messy, "c.rules")


def test_a_routing_block_gets_its_canonical_layout_with_its_comments():
    assert format_source(SNIPPETS["routing"]) == '''\
# how chats are picked
routing {  # after the brace
  # before the backlog
  backlog skip idle over 4h  # after the backlog
  at most 5 per 10m
  capacity widget 3
  capacity email 10
  # at the end
}

rule r {
  on chat.created
  then set department "sales"
}
'''


def test_sla_policies_print_canonically():
    text = format_source('sla p "P" { due_soon 2m resolution 1d within "h" when chat.priority > 2 first_response 1h }')
    assert text == (
        'sla p "P" {\n'
        '  due_soon 2m\n'
        '  resolution 1d\n'
        '  within "h"\n'
        '  when chat.priority > 2\n'
        '  first_response 1h\n'
        '}\n'
    )
    assert format_source('rule r { when chat.idle for 90m within "h" then stop }') == (
        'rule r {\n  when chat.idle for 90m within "h"\n  then stop\n}\n')
