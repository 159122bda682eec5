"""The YAML form of rule files: same AST as .rules, located errors, canonical dump."""
from __future__ import annotations

import copy
import dataclasses
import random
import time
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml.nodes import MappingNode, ScalarNode

from dsl import ast, vocabulary, yaml_form
from dsl.errors import ParseError, Span
from dsl.formatter import format_expr, format_rules
from dsl.parser import MAX_SOURCE_BYTES, parse, parse_expression, parse_file
from dsl.yaml_form import dump_yaml, load_yaml, load_yaml_file, schema

ROOT = Path(__file__).resolve().parent.parent
ROUTING_RULES = ROOT / "rules" / "examples" / "routing.rules"
ROUTING_YAML = ROOT / "rules" / "examples" / "routing.yaml"
DEFAULT_RULES = ROOT / "rules" / "default.rules"

SPEC_SNIPPET = """\
rules:
  - id: route_pricing
    title: Chats started on the pricing page go to Alice
    on: chat.created
    when: 'chat.page_url contains "/pricing"'
    then:
      - assign: {agent: alice}
      - tag: pricing
"""

# Every action, option order, literal and comment place the .rules form has.
ALL_FORMS = r'''# header comment
rule all_actions "Every action" {
  # before on
  on message.created
  priority 3
  when (chat.priority >= 2 or chat.tags contains "vip") and not chat.idle for 1h30m
       and message.text matches /(?i)re\/fund/ and chat.fields.plan in ["gold", "silver",]
       and customer.email is not none and hour(now, "Europe/Berlin") < 9
  then {
    assign agent "alice"  # trailing on assign
    assign department "night"
    assign department "night" by least_busy
    unassign
    subscribe operators
    subscribe agent "bob"
    subscribe department "sales"
    unsubscribe agent "bob"
    # before notify
    notify subscribers except assignee template "t" message "m"
    notify agent "x" message "hi \"there\"\nnext" except actor
    notify department "d"
    notify mentioned template "mention"
    email customer template "unread_replies"
    email agent "alice" template "chat_summary"
    email department "sales" template "chat_summary"
    email address "boss@example.com" template "t"
    email transcript to customer, address "a@b.co", agent "bob", department "d"
    webhook "crm-eu.v2"
    reply "it's {{ customer.name }}: yes"
    reply article "refund-policy"
    note "@alice look"
    tag "123"
    untag "yes"
    set priority 4
    set field plan = "gold"
    set field level = 3
    set field vip = true
    set field gone = none
    set field mail = customer.email
    set field wait = 5m
    set field list = ["a", "b"]
    set field due = now + 1d
    set field back = chat.created_at - 2h30m
    close
    reopen
    lock
    unlock
    stop
  }
  # end of rule
}

override rule default.escalate_unread {
  when chat.unread_by_assignee for 5m
  then notify subscribers template "unread_messages"
}

disable default.notify_subscribers  # not wanted

rule empty_then { then {} }

schedule night "Nights" {
  # first line
  mon-fri 22:00-24:00
  sat-sun 00:00-24:00
}
schedule plain { sun 10:00-11:00 }
# file end
'''


def same_rules(a: ast.RuleFile, b: ast.RuleFile) -> bool:
    """Equal rules and schedules (RuleFile equality also compares the path)."""
    return a.items == b.items and a.schedules == b.schedules


def error_of(text, path="f.yaml"):
    with pytest.raises(ParseError) as info:
        load_yaml(text, path)
    return info.value.diagnostics[0]


# ---------------------------------------------------------------- same AST as .rules

def test_routing_yaml_loads_to_the_routing_rules():
    from_yaml = load_yaml_file(ROUTING_YAML)
    from_rules = parse_file(ROUTING_RULES)
    assert from_yaml.form == "yaml"
    assert [r.id for r in from_yaml.items] == ["route_pricing", "unattended_2m", "auto_close", "night_shift"]
    assert [s.id for s in from_yaml.schedules] == ["support_hours"]
    assert same_rules(from_yaml, from_rules)


def test_routing_yaml_is_canonical_and_names_the_schema():
    text = ROUTING_YAML.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# yaml-language-server: $schema=../../schemas/rules.schema.json"
    assert (ROUTING_YAML.parent / "../../schemas/rules.schema.json").resolve() == ROOT / "schemas" / "rules.schema.json"
    assert dump_yaml(load_yaml(text, str(ROUTING_YAML))) == text


def test_spec_snippet_is_route_pricing():
    rule = load_yaml(SPEC_SNIPPET, "snippet.yaml").items[0]
    expected = parse_file(ROUTING_RULES).items[0]
    assert rule == expected
    assert rule.on == "chat.created"
    assert rule.actions == (ast.Action("assign_agent", agent="alice"), ast.Action("tag", tag="pricing"))
    # the snippet is exactly what dump_yaml writes for that rule
    assert dump_yaml(ast.RuleFile("x", (rule,), ())) == SPEC_SNIPPET


def test_default_rules_load_the_same_from_yaml():
    rf = parse_file(DEFAULT_RULES)
    text = dump_yaml(rf)
    assert "  - id: default.escalate_unread\n" in text
    assert "    when: chat.unread_by_assignee for 10m\n" in text
    assert "      - email: {to: customer, template: unread_replies}\n" in text
    back = load_yaml(text, rf.path)
    assert back == rf
    assert len(back.items) == 7 and all(r.priority == 100 for r in back.items)


@pytest.mark.parametrize("path", [ROUTING_RULES, DEFAULT_RULES], ids=["routing", "default"])
def test_round_trip_and_idempotence(path):
    rf = parse_file(path)
    once = dump_yaml(rf)
    back = load_yaml(once, rf.path)
    assert back == rf
    assert dump_yaml(back) == once
    # the header comment of the file stays above `rules:`
    assert once.startswith(rf.items[0].comments[0] + "\n")


def test_every_action_and_literal_round_trips():
    rf = parse(ALL_FORMS, "all.rules")
    text = dump_yaml(rf)
    back = load_yaml(text, "all.rules")
    assert back == rf
    assert dump_yaml(back) == text
    for line in (
        "      - notify: {to: subscribers, except: assignee, template: t, message: m}",
        '      - notify: {to: {agent: x}, message: "hi \\"there\\"\\nnext", except: actor}',
        "      - assign: {department: night, by: least_busy}",
        "      - subscribe: {department: sales}",
        "      - reply: {article: refund-policy}",
        "      - set: {field: plan, value: '\"gold\"'}",
        "      - set: {field: gone, value: null}",
        "      - set: {field: mail, value: customer.email}",
        '      - tag: "123"',
        '      - untag: "yes"',
        "      - stop",
        "    then: []",
        "  - override: default.escalate_unread",
        "  - disable: default.notify_subscribers",
        "      - mon-fri 22:00-24:00",
        "    timezone: UTC",
    ):
        assert line + "\n" in text, line
    notify = back.items[0].actions[9]
    assert (notify.text, notify.message, notify.except_, notify.order) == (None, 'hi "there"\nnext', "actor",
                                                                           ("message", "except_"))


def test_comments_are_kept_where_they_stand():
    back = load_yaml(dump_yaml(parse(ALL_FORMS, "all.rules")), "all.rules")
    rule = back.items[0]
    assert rule.comments == ("# header comment",)
    assert dict(rule.clause_comments) == {"on": ("# before on",)}
    assert rule.actions[0].trailing == "# trailing on assign"
    assert rule.actions[8].comments == ("# before notify",)
    assert rule.end_comments == ("# end of rule",)
    assert back.items[2].comments == ("# not wanted",)
    assert back.schedules[0].lines[0].comments == ("# first line",)
    assert back.end_comments == ("# file end",)


def test_comments_and_ignore_markers_in_yaml():
    text = (
        "# yaml-language-server: $schema=rules.schema.json\n"   # 1
        "rules:\n"                                               # 2
        "  # about a\n"                                          # 3
        "  # chatflow: ignore=always_true\n"                     # 4
        "  - id: a\n"                                            # 5
        "    when: chat.x == 1  # chatflow: ignore=dead_rule\n"  # 6
        "    then:\n"                                            # 7
        "      - close  # why\n"                                 # 8
        "    # still a\n"                                        # 9
        "  # before b\n"                                         # 10
        "  - id: b\n"                                            # 11
        "    then: []\n"                                         # 12
        "# the end\n"                                            # 13
    )
    rf = load_yaml(text, "c.yaml")
    a, b = rf.items
    assert a.comments == ("# yaml-language-server: $schema=rules.schema.json", "# about a",
                          "# chatflow: ignore=always_true")
    assert dict(a.clause_comments) == {"then": ("# chatflow: ignore=dead_rule",)}
    assert a.actions[0].trailing == "# why"
    assert a.end_comments == ("# still a",)
    assert b.comments == ("# before b",)
    assert rf.end_comments == ("# the end",)
    assert rf.ignores == ((5, frozenset({"always_true"})), (6, frozenset({"dead_rule"})))
    once = dump_yaml(rf)
    assert once.startswith("# yaml-language-server: $schema=rules.schema.json\n# about a\nrules:\n"
                           "  # chatflow: ignore=always_true\n  - id: a\n")
    assert dump_yaml(load_yaml(once, "c.yaml")) == once
    assert load_yaml(once, "c.yaml").ignores[0] == (5, frozenset({"always_true"}))  # still `- id: a`


def test_accepted_spellings_give_the_same_actions():
    bare = load_yaml("rules:\n  - id: a\n    then: [close, unassign, stop]\n")
    flagged = load_yaml("rules:\n  - id: a\n    then:\n      - close: true\n      - unassign:\n      - stop: true\n")
    assert bare.items == flagged.items
    assert [x.kind for x in bare.items[0].actions] == ["close", "unassign", "stop"]


def test_plain_scalars_follow_yaml_1_2():
    rf = load_yaml("rules:\n  - id: a\n    on: chat.tagged\n    then:\n      - tag: yes\n      - untag: off\n")
    rule = rf.items[0]
    assert rule.on == "chat.tagged"
    assert [x.tag for x in rule.actions] == ["yes", "off"]


def test_set_field_values():
    rf = load_yaml(
        "rules:\n  - id: a\n    then:\n"
        "      - set: {field: plan, value: '\"gold\"'}\n"
        "      - set: {field: mail, value: customer.email}\n"
        "      - set: {field: n, value: 3}\n"
        "      - set: {field: b, value: false}\n"
        "      - set: {field: z, value: null}\n"
        "      - set: {priority: 2}\n"
    )
    values = [x.value for x in rf.items[0].actions[:5]]
    assert values == [ast.Literal("gold", "str"), ast.Ref("customer.email"), ast.Literal(3, "int"),
                      ast.Literal(False, "bool"), ast.Literal(None, "none")]
    assert rf.items[0].actions[5] == ast.Action("set_priority", priority=2)
    # the expression's span points into the YAML line: `customer.email` starts at column 35
    assert (values[1].span.line, values[1].span.column) == (5, 35)


def test_spans_point_into_the_yaml_file():
    rf = load_yaml(SPEC_SNIPPET, "s.yaml")
    rule = rf.items[0]
    assert (rule.span.line, rule.span.column, rule.span.end_line) == (2, 5, 8)
    assert (rule.id_span.line, rule.id_span.column, rule.id_span.end_column) == (2, 9, 22)
    assert (rule.on_span.line, rule.on_span.column) == (4, 9)
    when = rule.when  # 'chat.page_url contains "/pricing"' starts after the quote, column 12
    assert (when.span.line, when.span.column) == (5, 12)
    assert (when.left.span.column, when.left.span.end_column) == (12, 25)
    assert (when.right.span.column, when.right.span.end_column) == (35, 45)
    assert [(a.span.line, a.span.column) for a in rule.actions] == [(7, 9), (8, 9)]
    assert [c for c, _ in rule.clause_spans] == ["on", "when", "then"]


def test_quoted_and_block_conditions_are_located_exactly():
    # '' in a single-quoted scalar and \" in a double-quoted one shift the columns after them
    rf = load_yaml("rules:\n  - id: a\n    when: 'message.text == \"it''s\" and chat.open'\n    then: []\n")
    assert rf.items[0].when.items[1].span.column == 40
    rf = load_yaml('rules:\n  - id: a\n    when: "message.text == \\"x\\" and chat.open"\n    then: []\n')
    assert rf.items[0].when.items[1].span.column == 38
    rf = load_yaml("rules:\n  - id: a\n    when: |\n      chat.closed\n        and chat.open\n    then: []\n")
    second = rf.items[0].when.items[1]
    assert (second.span.line, second.span.column) == (5, 13)


def test_empty_file_and_comment_only_file():
    empty = load_yaml("", "e.yaml")
    assert (empty.items, empty.schedules, empty.form) == ((), (), "yaml")
    only = load_yaml("# nothing yet\nrules:\n", "e.yaml")
    assert (only.items, only.end_comments) == ((), ("# nothing yet",))
    assert dump_yaml(empty) == ""


def test_bytes_are_decoded_like_rules_files():
    rf = load_yaml("\ufeff".encode() + SPEC_SNIPPET.encode(), "b.yaml")
    assert rf.items[0].id == "route_pricing"
    assert rf.items[0].id_span.line == 2


def test_loader_compiles_yaml_files():
    from dsl.loader import load_rule_set

    loaded = load_rule_set([ROUTING_YAML])
    assert loaded.diagnostics == []
    assert "night_shift" in [r.id for r in loaded.ruleset.rules]


# ---------------------------------------------------------------- located errors

ERRORS = [
    # name, text, code, line, column, message
    ("unknown top key", "rules: []\nrulez: []\n", "schema_error", 2, 1,
     "unknown key `rulez` in the file; did you mean `rules`?"),
    ("unknown action key", "rules:\n  - id: a\n    then:\n      - tga: vip\n", "schema_error", 4, 9,
     "unknown key `tga` in action; did you mean `tag`?"),
    ("unknown rule key", "rules:\n  - id: a\n    thne: [close]\n", "schema_error", 3, 5,
     "unknown key `thne` in rule; did you mean `then`?"),
    ("bad when", "rules:\n  - id: a\n    when: chat.x == == 3\n    then: [close]\n", "syntax_error", 3, 21,
     "unexpected `==` (comparisons do not chain; use `and`)"),
    ("bad when quoted", "rules:\n  - id: a\n    when: 'chat.x == \"it''s\" and =='\n    then: []\n",
     "syntax_error", 3, 34, "unexpected `==`"),
    ("bad when block", "rules:\n  - id: a\n    when: |\n      chat.x == 1\n        and == 2\n    then: []\n",
     "syntax_error", 5, 13, "unexpected `==`"),
    ("bad when folded", "rules:\n  - id: a\n    when: >\n      chat.x == 1\n      and == 2\n    then: []\n",
     "syntax_error", 5, 11, "unexpected `==`"),
    ("when ends early", "rules:\n  - id: a\n    when: chat.x ==\n    then: []\n", "syntax_error", 3, 20,
     "unexpected end of the condition"),
    ("bad duration", "rules:\n  - id: a\n    when: chat.idle for 0m\n    then: []\n", "bad_duration", 3, 25,
     "duration `0m` must be above zero"),
    ("empty when", "rules:\n  - id: a\n    when: ''\n    then: []\n", "schema_error", 3, 11, "`when` is empty"),
    ("tab", "rules:\n\t- id: a\n", "yaml_error", 2, 1, "a tab in YAML indentation"),
    ("duplicate key", "rules:\n  - id: a\n    id: b\n    then: []\n", "schema_error", 3, 5, "duplicate key `id`"),
    ("list at top", "- a\n- b\n", "schema_error", 1, 1, "a rule file is a mapping with `rules:`, `schedules:`, `slas:` and `routing:`"),
    ("text at top", "hello\n", "schema_error", 1, 1, "a rule file is a mapping with `rules:`, `schedules:`, `slas:` and `routing:`"),
    ("missing then", "rules:\n  - id: a\n", "schema_error", 2, 5, "rule needs `then`"),
    ("bad rule id", "rules:\n  - id: my-rule\n    then: []\n", "schema_error", 2, 9,
     "`my-rule`: a rule id is a name of letters, digits and `_` that does not start with a digit"),
    ("rule id with newline", 'rules:\n  - id: "abc\\n"\n    then: []\n', "schema_error", 2, 9,
     "`abc\\n` is not a valid rule id"),
    ("unknown bare action", "rules:\n  - id: a\n    then: [clsoe]\n", "schema_error", 3, 12,
     "unknown action `clsoe`; did you mean `close`?"),
    ("keyed action without value", "rules:\n  - id: a\n    then: [tag]\n", "schema_error", 3, 12,
     "`tag` needs a value, such as `- tag: ...`"),
    ("two keys in an action", "rules:\n  - id: a\n    then:\n      - {tag: a, untag: b}\n", "schema_error", 4, 9,
     "an action is one key"),
    ("assign both", "rules:\n  - id: a\n    then:\n      - assign: {agent: a, department: b}\n", "schema_error",
     4, 40, "`assign` takes `agent` or `department`, not both"),
    ("number as tag", "rules:\n  - id: a\n    then:\n      - tag: 123\n", "schema_error", 4, 14,
     "`tag` must be text, not the number 123"),
    ("notify target", "rules:\n  - id: a\n    then:\n      - notify: {to: subscriber}\n", "schema_error", 4, 22,
     "`to` must be one of `subscribers`, `assignee`, `operators`, `mentioned`, not the text `subscriber`"),
    ("negative priority", "rules:\n  - id: a\n    priority: -1\n    then: []\n", "schema_error", 3, 15,
     "`priority` must be 0 or more, not -1"),
    ("unknown day", "schedules:\n  - id: s\n    hours: [mon-fir 09:00-10:00]\n", "bad_schedule", 3, 17,
     "unknown day `fir`"),
    ("bad time", "schedules:\n  - id: s\n    hours:\n      - mon-fri 09:00-25:00\n", "bad_schedule", 4, 23,
     "bad time `25:00`"),
    ("no hours", "schedules:\n  - id: s\n    hours: []\n", "schema_error", 3, 12,
     "`hours` needs at least one line such as `mon-fri 09:00-18:00`"),
    ("two documents", "rules: []\n---\nrules: []\n", "yaml_error", 2, 1, "but found another document"),
    ("complex key", "rules:\n  - ? [a]\n    : b\n", "schema_error", 2, 7, "a key must be plain text"),
    ("yaml tag", "rules: !!set {a}\n", "schema_error", 1, 8, "YAML tag `!!set` is not used in rule files"),
    ("control character", "rules:\n  - id: a\x01\n", "yaml_error", 2, 10, "character '\\x01' (U+0001) is not allowed"),
    ("deep nesting", "rules: " + "[" * 100 + "]" * 100 + "\n", "yaml_error", 1, 71, "YAML nested deeper than 64 levels"),
]


@pytest.mark.parametrize("name,text,code,line,column,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_located_errors(name, text, code, line, column, message):
    d = error_of(text)
    assert (d.code, d.span.path, d.span.line, d.span.column) == (code, "f.yaml", line, column)
    assert d.message.startswith(message), d.message


def test_error_text_users_see():
    text = "rules:\n  - id: a\n    then:\n      - tga: vip\n"
    assert error_of(text).render(text) == (
        "f.yaml:4:9: schema_error unknown key `tga` in action; did you mean `tag`?\n"
        "        - tga: vip\n"
        "          ^^^"
    )
    text = "rules:\n  - id: a\n    when: 'chat.status == \"open\" and'\n    then: []\n"
    assert error_of(text).render(text) == (
        "f.yaml:3:37: syntax_error unexpected end of the condition\n"
        "      when: 'chat.status == \"open\" and'\n"
        "                                      ^\n"
        "  = help: expected `(`, `[`, `changed`, `false`, `none`, `not`, `true`, a duration, a name, a string, an integer"
    )


def test_all_schema_findings_are_reported_in_file_order():
    text = "rules:\n  - id: a\n    thne: []\n  - id: b\n    then:\n      - tga: x\n"
    with pytest.raises(ParseError) as info:
        load_yaml(text, "f.yaml")
    found = [(d.span.line, d.message) for d in info.value.diagnostics]
    assert found == [(3, "unknown key `thne` in rule; did you mean `then`?"), (2, "rule needs `then`"),
                     (6, "unknown key `tga` in action; did you mean `tag`?")]


def test_alias_bomb_is_refused_fast():
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    bomb = "\n".join(lines) + "\n"
    start = time.monotonic()
    d = error_of(bomb)
    assert time.monotonic() - start < 1.0
    assert (d.code, d.span.line, d.span.column) == ("yaml_error", 2, 10)
    assert d.message == "aliases (`*a0`) are not allowed in rule files"


def test_binary_garbage_is_a_located_error():
    d = error_of(b"rules:\n  \xff\xfe\x00garbage")
    assert (d.code, d.span.line, d.span.column) == ("bad_encoding", 2, 3)
    d = error_of(b"\x00\x01\x02binary")
    assert (d.code, d.span.line, d.span.column) == ("bad_encoding", 1, 1)


def test_too_large_file_is_refused():
    d = error_of("#" * (MAX_SOURCE_BYTES + 1))
    assert (d.code, d.span.line, d.span.column) == ("file_too_large", 1, 1)


def test_unreadable_file(tmp_path):
    with pytest.raises(ParseError) as info:
        load_yaml_file(tmp_path / "missing.yaml")
    assert info.value.code == "file_error"


# ---------------------------------------------------------------- the schema

def test_schema_is_valid_2020_12_and_documented():
    s = schema()
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"].endswith("/rules.schema.json")
    assert s["$defs"]["rule"]["description"] and s["$defs"]["action"]["title"] == "Action"


def test_schema_follows_the_vocabulary():
    defs = schema()["$defs"]
    assert defs["event"]["examples"] == list(vocabulary.EVENTS)
    assert defs["action"]["else"]["properties"]["assign"]["properties"]["by"]["examples"] == list(vocabulary.STRATEGIES)
    assert set(defs["action"]["else"]["properties"]) == set(vocabulary.ACTIONS)
    assert set(defs["action"]["then"]["enum"]) == {"unassign", "close", "reopen", "lock", "unlock", "stop"}
    notify_to = defs["action"]["else"]["properties"]["notify"]["properties"]["to"]
    assert set(notify_to["then"]["enum"]) | set(defs["agentOrDepartment"]["properties"]) == set(vocabulary.NOTIFY_TARGETS)


def test_schema_accepts_the_example_and_refuses_a_typo():
    import yaml

    class Yaml12(yaml.SafeLoader):
        """PyYAML reads YAML 1.1, where the key `on:` is true; editors read 1.2."""

    Yaml12.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    validator = jsonschema.Draft202012Validator(schema())
    assert list(validator.iter_errors(yaml.load(ROUTING_YAML.read_text(), Yaml12))) == []
    bad = yaml.load("rules:\n  - id: a\n    then:\n      - tga: vip\n", Yaml12)
    assert [e.validator for e in validator.iter_errors(bad)] == ["additionalProperties"]


# ---------------------------------------------------------------- properties

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=TEXT, tag=TEXT, agent=TEXT, message=TEXT)
def test_any_text_round_trips_through_yaml(title, tag, agent, message):
    rule = ast.Rule("r", title, None, None, (
        ast.Action("tag", tag=tag),
        ast.Action("assign_agent", agent=agent),
        ast.Action("notify", target=ast.Target("agent", agent), message=message, order=("message",)),
        ast.Action("reply", text=message),
    ))
    rf = ast.RuleFile("p.yaml", (rule,), ())
    text = dump_yaml(rf)
    back = load_yaml(text, "p.yaml")
    assert back == rf
    assert dump_yaml(back) == text


YAMLISH = st.text(st.sampled_from(list("rules:schedules then id - []{},#&*!|>'\"%@`?\n\t abc01")), max_size=80)


@settings(max_examples=400, deadline=None)
@given(YAMLISH)
def test_loader_only_ever_raises_located_parse_errors(text):
    try:
        load_yaml(text, "fuzz.yaml")
    except ParseError as e:
        assert e.diagnostics and all(d.span.path == "fuzz.yaml" and d.span.line >= 1 for d in e.diagnostics)


def test_unicode_and_odd_characters_are_quoted_safely():
    tricky = ["yes", "on", "null", "~", "123", "0x1f", "1.5", "- a", "a: b", "a #b", "#x", "", " lead", "trail ",
              "@x", "`x`", "{{ x }}", "it's", 'say "hi"', "tab\there", "line\nbreak", "\x85nel", "\u2028",
              "Müller", "日本", "😀", "\ufeffbom", "\x7f", "back\\slash", "*star", "&amp", "!bang", "%pct", "a,b"]
    rule = ast.Rule("r", None, None, None, tuple(ast.Action("tag", tag=t) for t in tricky))
    rf = ast.RuleFile("q.yaml", (rule,), ())
    assert load_yaml(dump_yaml(rf), "q.yaml") == rf
    text = dump_yaml(rf)
    assert "      - tag: Müller\n" in text and "      - tag: \"yes\"\n" in text and "      - tag: 'say \"hi\"'\n" in text


def test_hand_built_tree_without_spans_dumps():
    rf = ast.RuleFile("h.yaml", (ast.Disable("default.notify_subscribers"),),
                      (ast.Schedule("s", None, "UTC", (ast.ScheduleLine(5, 6, 22 * 60, 2 * 60),)),))
    text = dump_yaml(rf)
    assert text == ("rules:\n  - disable: default.notify_subscribers\nschedules:\n  - id: s\n"
                    "    timezone: UTC\n    hours:\n      - sat-sun 22:00-02:00\n")
    assert load_yaml(text, "h.yaml") == rf



# ---------------------------------------------------------------- the libyaml path reads as PyYAML does

def _tree(node):
    """Every tag, mark, style and value of a composed node tree."""
    if node is None:
        return None
    marks = tuple((m.index, m.line, m.column) for m in (node.start_mark, node.end_mark))
    head = (type(node).__name__, node.tag, marks, getattr(node, "style", None), getattr(node, "flow_style", None))
    if isinstance(node, ScalarNode):
        return head + (node.value,)
    if isinstance(node, MappingNode):
        return head + tuple((_tree(k), _tree(v)) for k, v in node.value)
    return head + tuple(_tree(v) for v in node.value)


def _pure_compose(text):
    loader = yaml_form._Loader(text, "f.yaml")
    try:
        return loader.get_single_node(), loader.comments
    finally:
        loader.dispose()


SAME_BOTH_WAYS = [
    SPEC_SNIPPET,
    "rules:\n- id: a\n  then:\n  - close\n",  # indentless sequences
    "rules:\n  - id: a\n    then: [close]",  # no line break at the end
    "rules:\r\n  - id: a  # c\r\n    then: []\r\n",
    "# head\nrules: # after the key\n  - id: 'a'#c\n    title: \"x # y\" # z\n    when: |  # dropped\n"
    "      a # text\n    then: [close, {tag: x}] # t\n# end",
    "rules:\n  - id: a\n    then:\n      - unassign:\n      - set: {field: f, value: 3}\n",
    "",
    "# only a comment\n",
]


needs_libyaml = pytest.mark.skipif(yaml_form._CParser is None, reason="PyYAML built without libyaml")


@needs_libyaml
@pytest.mark.parametrize("text", SAME_BOTH_WAYS)
def test_libyaml_path_composes_what_pyyaml_composes(text):
    fast = yaml_form._compose_fast(text, yaml_form._Lines(text))
    assert fast is not None, "this text should take the libyaml path"
    root, comments = _pure_compose(text)
    assert _tree(fast[0]) == _tree(root)
    assert fast[1] == comments


LEFT_TO_PYYAML = [
    # where libyaml reads a file otherwise than PyYAML, PyYAML's reading stands
    ("rules: |#x\n", "yaml_error", 1, 9, "expected chomping or indentation indicators, but found '#'"),
    ("rules: [a?b]\n", "yaml_error", 1, 10, "expected ',' or ']', but got '?'"),
    ("rules:\n  - id: a\n    title:\tx\n    then: []\n", "yaml_error", 3, 11, "a tab in YAML indentation"),
    ("rules: [{tag: }]\n", "schema_error", 1, 10, "unknown key `tag` in rule"),
]


@pytest.mark.parametrize("text,code,line,column,message", LEFT_TO_PYYAML)
def test_files_libyaml_reads_otherwise_get_pyyamls_reading(text, code, line, column, message):
    assert yaml_form._compose_fast(text, yaml_form._Lines(text)) is None
    d = error_of(text)
    assert (d.code, d.span.line, d.span.column) == (code, line, column)
    assert d.message.startswith(message)


def test_directives_tags_and_anchors_are_read_by_pyyaml():
    for text in ("%YAML 1.2\n---\nrules: []\n", "rules:\n  - id: !!str a\n    then: []\n",
                 "rules:\n  - &x id: a\n    then: []\n"):
        assert yaml_form._compose_fast(text, yaml_form._Lines(text)) is None
    assert load_yaml("rules:\n  - id: !!str a\n    then: []\n").items[0].id == "a"


def _spans(node):
    """Every span in an expression tree (spans take no part in equality)."""
    out = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        for v in value if isinstance(value, tuple) and not isinstance(value, Span) else (value,):
            if isinstance(v, Span):
                out.append(tuple(v))
            elif dataclasses.is_dataclass(v):
                out += _spans(v)
    return out


def test_a_repeated_condition_is_located_where_each_one_stands():
    text = ("rules:\n  - id: a\n    when: chat.x == [1]\n    then:\n      - set: {field: f, value: chat.page_url}\n"
            "  - id: b\n    when: 'chat.x == [1]'\n    then:\n      - set: {field: g, value: chat.page_url}\n"
            "      - set: {field: h,  value: \"chat.page_url\"}\n")
    rule_a, rule_b = load_yaml(text, "r.yaml").items
    exprs = [rule_a.when, rule_a.actions[0].value, rule_b.when, rule_b.actions[0].value, rule_b.actions[1].value]
    lines = text.split("\n")
    for expr, (line, needle) in zip(exprs, [(3, "chat.x"), (5, "chat.page_url"), (7, "chat.x"), (9, "chat.page_url"),
                                           (10, "chat.page_url")]):
        column = lines[line - 1].index(needle) + 1
        fresh = parse_expression(format_expr(expr), "r.yaml", line, column)
        assert expr == fresh and _spans(expr) == _spans(fresh)
        assert (expr.span.line, expr.span.column) == (line, column)


def test_quick_schema_check_agrees_with_jsonschema():
    check = yaml_form._quick_check()
    assert check is not None  # the schema uses only keywords it knows: valid files skip jsonschema
    validator = jsonschema.Draft202012Validator(schema())
    base = yaml_form._to_data("all.yaml", _pure_compose(dump_yaml(parse(ALL_FORMS, "all.rules")))[0])
    assert check(base) and validator.is_valid(base)
    values = [None, True, False, 0, 1, -1, 2.0, 2.5, "", "x", "close", "operators", "customer", "actor", "default.a",
              "1a", "mon-fri 09:00-18:00", [], {}, ["x"], {"agent": "a"}, {"a": 1}]
    keys = ["id", "then", "when", "on", "priority", "title", "override", "disable", "tag", "set", "assign", "notify",
            "subscribe", "reply", "agent", "department", "by", "to", "except", "template", "field", "value", "article",
            "hours", "timezone", "rules", "schedules", "x"]
    rng = random.Random(7)
    valid = 0
    for _ in range(600):
        doc = copy.deepcopy(base)
        for _ in range(rng.randint(1, 2)):
            holders = []
            stack = [doc]
            while stack:
                x = stack.pop()
                if isinstance(x, (dict, list)):
                    holders.append(x)
                    stack += x.values() if isinstance(x, dict) else x
            h = rng.choice(holders)
            if isinstance(h, dict) and h and rng.random() < 0.5:
                h[rng.choice(list(h))] = copy.deepcopy(rng.choice(values))
            elif isinstance(h, dict):
                h[rng.choice(keys)] = copy.deepcopy(rng.choice(values))
            elif h:
                h[rng.randrange(len(h))] = copy.deepcopy(rng.choice(values + [{k: rng.choice(values)} for k in keys]))
        assert check(doc) == validator.is_valid(doc), doc
        valid += check(doc)
    assert valid > 20  # some mutations keep the file valid: both answers are exercised


def test_change_conditions_round_trip_through_yaml():
    src = ('rule r "Priority up" {\n  on chat.updated\n'
           '  when chat.priority changed from 2 to 4 or (changed(chat.tags) and chat.status changed to "open")\n'
           '  then untag "low"\n}\n')
    rf = parse(src, "c.rules")
    text = dump_yaml(rf)
    assert ("    when: 'chat.priority changed from 2 to 4 or (changed(chat.tags) and chat.status changed to"
            " \"open\")'\n") in text
    back = load_yaml(text, "c.rules")
    assert back == rf and dump_yaml(back) == text
    assert format_rules(back) == src


def test_routing_and_set_department_round_trip_through_yaml():
    rf = parse("""rule r { on chat.created then set department "sales" }
routing {
  backlog skip idle over 4h
  at most 5 per 10m
  capacity widget 3
  capacity email 10
}
""", "r.rules")
    text = dump_yaml(rf)
    assert text.endswith("""      - set: {department: sales}
routing:
  backlog: {skip_idle_over: 4h}
  at_most: {chats: 5, per: 10m}
  capacity:
    widget: 3
    email: 10
""")
    back = load_yaml(text, "r.rules")
    assert back == rf
    assert dump_yaml(back) == text
    assert load_yaml("routing: {backlog: true}\n", "b.yaml").items[0].lines[0].idle is None


def test_sla_policies_round_trip_and_load_the_same():
    path = Path(__file__).resolve().parent / "scenarios" / "rules" / "sla.rules"
    rf = parse_file(path)
    assert rf.slas and any(line.name == "due_soon" for p in rf.slas for line in p.lines)
    once = dump_yaml(rf)
    assert "slas:\n  - id: vip\n    title: Priority 3 and up, around the clock\n    when: chat.priority >= 3\n" in once
    assert "    within: support_hours\n    first_response: 2h\n" in once
    back = load_yaml(once, rf.path)
    assert back == rf
    assert dump_yaml(back) == once


def test_sla_policy_errors_are_located_in_yaml():
    for text, code, line, column in (
        ("slas:\n  - id: p\n    when: chat.priority > 1\n", "bad_sla", 2, 9),
        ("slas:\n  - id: p\n    first_response: 0s\n", "bad_duration", 3, 21),
        ("slas:\n  - id: p\n    first_response: 1m1h\n", "schema_error", 3, 21),
        ("slas:\n  - id: p\n    resolutoin: 1h\n", "schema_error", 3, 5),
        ("slas:\n  - id: p\n    first_response: 1h\n    when: 'chat.priority >'\n", "syntax_error", 4, 27),
    ):
        d = error_of(text)
        assert (d.code, d.span.line, d.span.column) == (code, line, column), (text, d)
