"""The exact text of representative errors, as `chatflow check` prints them (STYLE rule 8).

Each golden is the whole rendering of one finding: ``path:line:col: CODE message``, the
source line, the caret under the spot and the ``= help:`` line. A change to any of them
is a change users see, so it has to be made here on purpose.
"""
from __future__ import annotations

import pytest

from dsl.lint import lint
from dsl.loader import load_rule_set

PATH = "support.rules"


def rendered(source: str, defaults: bool = False, warnings: bool = False) -> str:
    """Every finding for ``source`` (loaded as support.rules), rendered and joined."""
    loaded = load_rule_set([], defaults=defaults, texts={PATH: source})
    found = list(loaded.diagnostics)
    if warnings and loaded.ruleset is not None:
        found += lint(loaded.ruleset)
    assert found, "expected at least one finding"
    return "\n".join(d.render(loaded.sources.get(d.span.path)) for d in found)


GOLDEN = {
    "syntax error with what was expected": (
        'rule greet "Say hello"\n'
        '  then reply "Hello!"\n'
        "}\n",
        "support.rules:2:3: syntax_error unexpected `then`\n"
        '    then reply "Hello!"\n'
        "    ^^^^\n"
        "  = help: expected `{`",
    ),
    "syntax error listing the notify targets": (
        "rule r {\n"
        "  on chat.created\n"
        "  then notify\n"
        "}\n",
        "support.rules:4:1: syntax_error unexpected `}`\n"
        "  }\n"
        "  ^\n"
        "  = help: expected `agent`, `assignee`, `department`, `mentioned`, `operators`, `subscribers`",
    ),
    "unterminated string": (
        "rule r {\n"
        '  when chat.page_url == "/pricing\n'
        "  then stop\n"
        "}\n",
        "support.rules:2:25: bad_string unterminated string\n"
        '    when chat.page_url == "/pricing\n'
        "                          ^\n"
        '  = help: a string ends with `"` on the same line',
    ),
    "unknown escape in a string": (
        "rule r {\n"
        '  then reply "C:\\temp"\n'
        "}\n",
        "support.rules:2:17: bad_string unknown escape `\\t` in string\n"
        '    then reply "C:\\temp"\n'
        "                  ^^\n"
        '  = help: the escapes are \\" \\\\ and \\n',
    ),
    "unknown fact with did-you-mean": (
        "rule r {\n"
        "  on chat.created\n"
        '  when chat.pageurl contains "/pricing"\n'
        "  then stop\n"
        "}\n",
        "support.rules:3:8: unknown_fact unknown fact `chat.pageurl`\n"
        '    when chat.pageurl contains "/pricing"\n'
        "         ^^^^^^^^^^^^\n"
        "  = help: did you mean `chat.page_url`?",
    ),
    "type mismatch (SPEC's chat.priority == \"high\")": (
        "rule r {\n"
        '  when chat.priority == "high"\n'
        "  then stop\n"
        "}\n",
        "support.rules:2:8: type_mismatch cannot compare a number with a text\n"
        '    when chat.priority == "high"\n'
        "         ^^^^^^^^^^^^^^^^^^^^^^^\n"
        "  = help: numbers are written without quotes",
    ),
    "unknown event": (
        "rule r {\n"
        "  on chat.create\n"
        "  then stop\n"
        "}\n",
        "support.rules:2:6: unknown_event unknown event `chat.create`\n"
        "    on chat.create\n"
        "       ^^^^^^^^^^^\n"
        "  = help: did you mean `chat.created`?",
    ),
    "bad duration": (
        "rule r {\n"
        "  when chat.idle for 1m30h\n"
        "  then close\n"
        "}\n",
        "support.rules:2:22: bad_duration bad duration `1m30h`\n"
        "    when chat.idle for 1m30h\n"
        "                       ^^^^^\n"
        "  = help: units go d, h, m, s in that order, each at most once (`1h30m`)",
    ),
    "unknown template variable": (
        "rule r {\n"
        '  then reply "Hi {{ customer.nmae }}"\n'
        "}\n",
        "support.rules:2:8: unknown_variable unknown template variable `customer.nmae`\n"
        '    then reply "Hi {{ customer.nmae }}"\n'
        "         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "  = help: did you mean `customer.name`?",
    ),
    "tabs are shown as one space so the caret lines up": (
        "rule r {\n"
        '\twhen\tchat.pageurl == "x"\n'
        "\tthen stop\n"
        "}\n",
        "support.rules:2:7: unknown_fact unknown fact `chat.pageurl`\n"
        '   when chat.pageurl == "x"\n'
        "        ^^^^^^^^^^^^\n"
        "  = help: did you mean `chat.page_url`?",
    ),
    "a very long line is shown around the spot": (
        'rule r { then reply "' + "x" * 300 + '" when chat.pageurl == "y" }\n',
        "support.rules:1:329: unknown_fact unknown fact `chat.pageurl`\n"
        "  " + "x" * 72 + '" when chat.pageurl == "y" }\n'
        "  " + " " * 79 + "^" * 12 + "\n"
        "  = help: did you mean `chat.page_url`?",
    ),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_error_text(name):
    source, expected = GOLDEN[name]
    assert rendered(source) == expected


def test_unknown_rule_text_with_the_defaults():
    assert rendered("disable default.escalate_unred\n", defaults=True) == (
        "support.rules:1:1: unknown_rule cannot disable `default.escalate_unred`: no such rule\n"
        "  disable default.escalate_unred\n"
        "  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "  = help: did you mean `default.escalate_unread`?"
    )


def test_rule_cycle_warning_text():
    source = (
        "rule a { on chat.assigned then unassign }\n"
        'rule b { on chat.unassigned then assign agent "bob" }\n'
    )
    assert rendered(source, warnings=True) == (
        "support.rules:1:6: rule_cycle rules trigger each other in a loop: "
        "a → chat.unassigned → b → chat.assigned → a\n"
        "  rule a { on chat.assigned then unassign }\n"
        "       ^\n"
        '  = help: guard a rule\'s condition (e.g. `event.actor != "rule"`) to break it'
    )


def test_rendering_without_the_source_is_the_header_and_hint():
    loaded = load_rule_set([], defaults=False, texts={PATH: "rule r { on chat.create then stop }"})
    (d,) = loaded.diagnostics
    assert d.render() == (
        "support.rules:1:13: unknown_event unknown event `chat.create`\n"
        "  = help: did you mean `chat.created`?"
    )


def test_a_form_feed_does_not_shift_the_shown_line():
    # A form feed is whitespace in the grammar; lines are counted by \n as Lark counts them.
    source = (
        "# part one\f\n"
        "rule r {\n"
        '  when chat.pageurl == "x"\n'
        "  then stop\n"
        "}\n"
    )
    assert rendered(source) == (
        "support.rules:3:8: unknown_fact unknown fact `chat.pageurl`\n"
        '    when chat.pageurl == "x"\n'
        "         ^^^^^^^^^^^^\n"
        "  = help: did you mean `chat.page_url`?"
    )


def test_end_of_file_error_text():
    assert rendered('rule r {\n  then assign agent "alice"') == (
        "support.rules:2:28: syntax_error unexpected end of file\n"
        '    then assign agent "alice"\n'
        "                             ^\n"
        "  = help: expected `assign`, `close`, `email`, `lock`, `note`, `notify`, `on`, "
        "`priority`, `reopen`, `reply`, `set`, `snooze`, …"
    )


def test_end_of_file_after_a_form_feed_is_on_the_last_line():
    assert rendered('# part one\f\nrule r { then assign agent "alice"') == (
        "support.rules:2:35: syntax_error unexpected end of file\n"
        '  rule r { then assign agent "alice"\n'
        "                                    ^\n"
        "  = help: expected `assign`, `close`, `email`, `lock`, `note`, `notify`, `on`, "
        "`priority`, `reopen`, `reply`, `set`, `snooze`, …"
    )
