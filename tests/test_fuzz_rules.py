"""Whatever text arrives, the rule pipeline answers with a result or a located error.

``parse`` + ``compile_files`` + ``lint`` are fed arbitrary text, arbitrary bytes (through
``decode_source``), token soup and mutations of the shipped rule files. Each must give a
rule set or :class:`dsl.errors.SourceError` diagnostics whose spans point inside the
source — never any other exception. Then a few pathological inputs (deep nesting, huge
files, binary data, very long lines) must end the same way.

Example counts are bounded so the file runs in a few seconds; set CHATFLOW_FUZZ_EXAMPLES
(e.g. 5000) for a longer hunt.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl.compiler import DEFAULT_RULES, compile_files
from dsl.errors import SourceError
from dsl.lint import lint
from dsl.loader import load_rule_set
from dsl.parser import MAX_SOURCE_BYTES, decode_source, parse

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {
    "default": DEFAULT_RULES.read_text(encoding="utf-8"),
    "routing": (ROOT / "rules" / "examples" / "routing.rules").read_text(encoding="utf-8"),
}
PATH = "fuzz.rules"

FUZZ = settings(deadline=None, max_examples=int(os.environ.get("CHATFLOW_FUZZ_EXAMPLES", "150")), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Words and marks of the language (and a few near misses) for token soup and insertions.
TOKENS = [
    "rule", "override", "disable", "schedule", "on", "when", "then", "priority", "{", "}", "(", ")",
    "[", "]", ",", "=", "-", "and", "or", "not", "in", "not in", "notin", "contains", "starts with",
    "ends with", "matches", "is", "none", "is not none", "for", "true", "false", "==", "!=", "<", "<=",
    ">", ">=", "assign", "agent", "department", "by", "least_busy", "round_robin", "unassign",
    "subscribe", "unsubscribe", "operators", "notify", "subscribers", "assignee", "mentioned",
    "except", "actor", "template", "message", "email", "customer", "reply", "article", "note", "tag",
    "untag", "set", "field", "close", "reopen", "lock", "unlock", "stop", "timezone", "mon", "fri",
    "mon-fri", "09:00-18:00", "22:00-02:00", "24:00", "chat.created", "message.created",
    "chat.idle", "chat.priority", "chat.page_url", "chat.fields.plan", "customer.name", "now",
    "default.escalate_unread", "default.nope", "in_schedule", "hour", "weekday", "lower", "len",
    '"x"', '"Europe/Berlin"', '"{{ customer.name }}"', '"{{ x }}"', '"{% if %}"', '"\\t"', '"',
    "/a/", "/(/", "/", "\\/", "0", "1", "99999999999999999999", "5m", "0s", "1h30", "10d1s", "1m1h",
    "#", "# chatflow: ignore=all", "\n", "\t", "\f", "\r", "\x00", "\ufeff", "é", "\u2028", "'",
]

TOKEN_RE = re.compile(r'"(?:\\.|[^"\\\n])*"|/(?:\\.|[^\\/\n])*/|[A-Za-z_][A-Za-z0-9_.]*|\d+[dhms]?|\S')


def check_span(d, source: str) -> None:
    """A finding names the file and a line and column inside its text (lines counted by
    \\n, as Lark counts them)."""
    span = d.span
    assert span.path == PATH or span.path == str(DEFAULT_RULES), span
    if span.path != PATH:
        return
    lines = source.split("\n")
    if d.message == "unexpected end of file" and span.line > len(lines):
        # Known bug, pinned by test_error_text.py::test_end_of_file_after_a_form_feed_is_on_the_last_line:
        # an end-of-file error is placed with str.splitlines(), which also breaks lines at
        # \f \r \x85 \u2028 …; tolerated here so the fuzzers keep looking for other bugs.
        # Drop this branch with the fix.
        lines = source.splitlines() or [""]
    assert 1 <= span.line <= len(lines), (span, len(lines))
    assert 1 <= span.column <= len(lines[span.line - 1]) + 1, (span, lines[span.line - 1][:80])
    assert (span.end_line, span.end_column) >= (span.line, span.column), span


def run_pipeline(source: str, with_defaults: bool = False):
    """parse → compile → lint. Returns (RuleSet or None, findings), having checked that every
    finding's span points inside its source and that it renders."""
    files = [parse(SHIPPED["default"], str(DEFAULT_RULES))] if with_defaults else []
    try:
        files.append(parse(source, PATH))
    except SourceError as e:
        assert e.diagnostics and e.span == e.diagnostics[0].span
        findings = list(e.diagnostics)
        ruleset = None
    else:
        result = compile_files(files)
        findings = list(result.diagnostics)
        ruleset = result.ruleset
        if ruleset is not None:
            findings += lint(ruleset)
        else:
            assert result.errors
    for d in findings:
        text = source if d.span.path == PATH else SHIPPED["default"]
        check_span(d, text)
        d.render(text)
    return ruleset, findings


# ---------------------------------------------------------------- generated inputs


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text(source):
    run_pipeline(source)


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data):
    try:
        source = decode_source(PATH, data)
    except SourceError as e:
        assert e.code == "bad_encoding"
        d = e.diagnostics[0]
        assert d.span.path == PATH and d.span.line >= 1 and d.span.column >= 1
        return
    run_pipeline(source)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60), st.sampled_from([" ", "", "\n"]))
def test_token_soup(tokens, sep):
    run_pipeline(sep.join(tokens), with_defaults=True)


ATOMS = ["chat.open", "chat.idle", "chat.priority", "chat.page_url", "chat.tags", "chat.channel",
         "chat.assignee", "chat.fields.plan", "customer.offline", "message.text", "agent.status",
         "event.actor", "now", "chat.nope", '"open"', '"x"', "0", "4", "7", "true", "none", "5m",
         '["email", "api"]', "[]", 'in_schedule("hours")', 'in_schedule("nope")',
         'hour(now, "Europe/Berlin")', 'weekday(now, "Mars/Base")', "lower(customer.name)",
         "len(chat.tags)", "len()", "nope(1)"]
COMPARISONS = ["==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "starts with", "ends with"]

conditions = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(COMPARISONS), inner).map(" ".join),
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join),
        inner.map(lambda e: f"not {e}"),
        inner.map(lambda e: f"({e})"),
        inner.map(lambda e: f"{e} is not none"),
        inner.map(lambda e: f"{e} matches /a+(b|c)/"),
        st.sampled_from(["chat.idle", "customer.offline", "chat.status", "chat.priority"]).map(
            lambda e: f"{e} for 10m"),
    ),
    max_leaves=12,
)
ACTIONS = ['assign agent "a"', 'assign agent "b"', 'assign department "d" by least_busy', "unassign",
           "stop", "close", "reopen", 'tag "t"', "notify assignee", "notify mentioned",
           "notify assignee except assignee", 'notify subscribers template "nope"',
           'reply "Hi {{ customer.name }} {{ message.text }}"', 'note "{{ chat.nope }}"',
           "set priority 9", "set field x = chat.page_url", 'email customer template "x"', 'webhook "x"']
EVENTS = [None, "chat.created", "message.created", "chat.assigned", "chat.unassigned", "chat.tagged",
          "chat.closed", "chat.creatd"]


@st.composite
def rule_sets(draw):
    """Well-formed rules with random conditions and actions: they reach the compiler and linter."""
    rules = []
    for i in range(draw(st.integers(1, 5))):
        on = draw(st.sampled_from(EVENTS))
        when = draw(st.none() | conditions)
        actions = draw(st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=3))
        body = [f"on {on}" if on else "", f"when {when}" if when else "",
                "then { " + " ".join(actions) + " }", draw(st.sampled_from(["", "priority 2"]))]
        rules.append(f"rule r{i} {{\n  " + "\n  ".join(b for b in body if b) + "\n}")
    rules.append("schedule hours { mon-fri 09:00-18:00 }")
    return "\n".join(rules)


@FUZZ
@given(rule_sets())
def test_generated_rule_sets(source):
    run_pipeline(source, with_defaults=True)


@st.composite
def mutated_shipped_file(draw):
    source = SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))]
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "insert_token", "swap_tokens", "drop_token",
                                   "duplicate_line"]))
        if op == "delete" and source:
            at = draw(st.integers(0, len(source) - 1))
            source = source[:at] + source[at + draw(st.integers(1, 8)):]
        elif op == "insert":
            at = draw(st.integers(0, len(source)))
            source = source[:at] + draw(st.text(min_size=1, max_size=3)) + source[at:]
        elif op == "insert_token":
            at = draw(st.integers(0, len(source)))
            source = source[:at] + draw(st.sampled_from(TOKENS)) + source[at:]
        elif op in ("swap_tokens", "drop_token"):
            tokens = list(TOKEN_RE.finditer(source))
            if len(tokens) < 2:
                continue
            i = draw(st.integers(0, len(tokens) - 1))
            a = tokens[i]
            if op == "drop_token":
                source = source[:a.start()] + source[a.end():]
                continue
            j = draw(st.integers(0, len(tokens) - 1))
            a, b = sorted((a, tokens[j]), key=lambda m: m.start())
            if a.start() == b.start():
                continue
            source = (source[:a.start()] + b.group() + source[a.end():b.start()] + a.group()
                      + source[b.end():])
        elif op == "duplicate_line":
            lines = source.split("\n")
            k = draw(st.integers(0, len(lines) - 1))
            lines.insert(k, lines[k])
            source = "\n".join(lines)
    return source


@FUZZ
@given(mutated_shipped_file())
def test_mutated_shipped_files(source):
    run_pipeline(source, with_defaults=False)


@FUZZ
@given(mutated_shipped_file())
def test_mutated_shipped_files_after_the_defaults(source):
    # overrides and disables of the defaults, reserved names and duplicates get exercised
    run_pipeline(source, with_defaults=True)


def test_the_shipped_files_are_clean():
    ruleset, findings = run_pipeline(SHIPPED["routing"], with_defaults=True)
    assert ruleset is not None
    assert [d.code for d in findings if d.span.path == PATH] == ["conflicting_assign"]


# ---------------------------------------------------------------- pathological inputs


def located_error(source: str):
    """The first error for ``source`` (spans already checked by run_pipeline)."""
    ruleset, findings = run_pipeline(source)
    errors = [d for d in findings if d.severity == "error"]
    assert ruleset is None and errors
    return errors[0]


def test_ten_thousand_nested_parentheses():
    err = located_error("rule r { when " + "(" * 10_000 + "chat.open" + ")" * 10_000 + " then stop }")
    assert err.code == "too_deep"


def test_ten_thousand_unclosed_parentheses():
    err = located_error("rule r { when " + "(" * 10_000 + "chat.open then stop }")
    assert err.code == "syntax_error"


def test_five_thousand_nots():
    err = located_error("rule r { when " + "not " * 5_000 + "chat.open then stop }")
    assert err.code == "too_deep"


def test_deeply_nested_lists_and_calls():
    assert located_error("rule r { when chat.channel in " + "[" * 5_000 + "]" * 5_000
                         + " then stop }").code == "too_deep"
    assert located_error("rule r { when " + "lower(" * 3_000 + "chat.id" + ")" * 3_000
                         + ' == "x" then stop }').code == "too_deep"


def test_a_long_and_chain_is_flat_not_deep():
    source = "rule r { when " + " and ".join(["chat.open"] * 5_000) + " then stop }"
    assert run_pipeline(source)[0] is not None


def test_a_line_of_100k_characters():
    long_text = 'rule r { then reply "' + "a" * 100_000 + '" }'
    assert run_pipeline(long_text)[0] is not None
    long_name = "rule r { when chat." + "x" * 100_000 + " then stop }"
    assert located_error(long_name).code == "unknown_fact"
    garbage = "rule r { when " + "%" * 100_000 + " }"
    err = located_error(garbage)
    assert (err.span.line, err.span.column) == (1, 15)
    # the caret line of a very long line is cut to the part around the spot
    assert max(len(x) for x in err.render(garbage).split("\n")) < 300


def test_a_3_megabyte_file_is_refused_before_parsing(tmp_path):
    rule = 'rule r{n} {{ on chat.created when chat.priority > 1 then tag "x" }}\n'
    data = "".join(rule.format(n=i) for i in range(50_000)).encode()
    assert len(data) > 3_000_000 > MAX_SOURCE_BYTES
    big = tmp_path / "big.rules"
    big.write_bytes(data)
    loaded = load_rule_set([big], defaults=False)
    (d,) = loaded.diagnostics
    assert (d.code, d.span.path, d.span.line, d.span.column) == ("file_too_large", str(big), 1, 1)
    assert loaded.ruleset is None


def test_a_file_of_many_rules_compiles():
    rule = 'rule r{n} {{ on chat.created when chat.priority > {p} then tag "t{n}" }}\n'
    source = "".join(rule.format(n=i, p=i % 4) for i in range(400))
    ruleset, _ = run_pipeline(source)
    assert ruleset is not None and len(ruleset.rules) == 400


def test_binary_garbage(tmp_path):
    garbage = bytes(range(256)) * 64
    path = tmp_path / "garbage.rules"
    path.write_bytes(garbage)
    (d,) = load_rule_set([path], defaults=False).diagnostics
    assert d.code == "bad_encoding" and d.span.path == str(path)
    # bytes 0x00-0x7f are valid UTF-8 (0x0a ends line 1); 0x80 is the first bad byte.
    # (A NUL in otherwise valid text is refused too: test_a_nul_byte_is_located.)
    assert (d.span.line, d.span.column) == (2, 0x80 - 0x0b + 1)


def test_invalid_utf8_is_located_at_the_bad_byte():
    data = 'rule r {\n  then reply "caf'.encode() + b"\xe9" + b'"\n}\n'
    with pytest.raises(SourceError) as info:
        decode_source(PATH, data)
    assert info.value.code == "bad_encoding"
    assert (info.value.span.line, info.value.span.column) == (2, 18)


def test_a_nul_byte_is_located():
    with pytest.raises(SourceError) as info:
        decode_source(PATH, b"rule r {\n  then\x00 stop\n}\n")
    assert info.value.code == "bad_encoding"
    assert (info.value.span.line, info.value.span.column) == (2, 7)


@pytest.mark.parametrize("placeholder", [
    "{{ " + "(" * 1_000 + "customer.name" + ")" * 1_000 + " }}",
    "{{ customer.name" + "|lower" * 1_000 + " }}",
    "{% if x %}" * 1_000 + "{% endif %}" * 1_000,
], ids=["parentheses", "filters", "blocks"])
def test_deeply_nested_template_is_a_located_error(placeholder):
    located_error(f'rule r {{ then reply "{placeholder}" }}')


def test_deeply_nested_regex_is_a_located_error():
    err = located_error("rule r { when chat.id matches /" + "(" * 1_000 + ")" * 1_000 + "/ then stop }")
    assert err.code == "bad_regex"
