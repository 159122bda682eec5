"""Every scenario test of tests/scenarios/*.yaml as a pytest test, plus the `chatflow test`
and `chatflow dry-run` command lines (exit codes, failure output, JUnit, JSON).

tests/scenarios/rules/ holds the small rule files the scenarios load (`rules:`).
"""
from __future__ import annotations

import functools
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from chatflow.cli import main
from engine.scenario import load_scenario, prepare, run_test

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
FILES = sorted(SCENARIOS.glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _prepared(path: str):
    return prepare(load_scenario(path))


def _cases(files):
    """(path, test name) for every test; a file that cannot be loaded gives one case
    (path, None) that fails with its error instead of breaking collection."""
    out = []
    for path in files:
        try:
            names = [t.name for t in load_scenario(path).tests]
        except Exception:  # reported by the test itself
            names = [None]
        for name in names:
            out.append(pytest.param(str(path), name, id=f"{path.name}::{name or '(load)'}"))
    return out


def _run(path: str, name: str):
    """Run one test keeping its whole record (tracing keeps effects and trace entries
    that the runner otherwise forgets once no expectation needs them)."""
    scenario = _prepared(path)
    test = next(t for t in scenario.tests if t.name == name)
    return run_test(scenario, test, tracing=True)


def _report(result) -> str:
    lines = [f"{result.file}::{result.name}: {len(result.failures)} failed expectation(s)"]
    for f in result.failures:
        lines.append(f"  line {f.line}: {f.where}")
        lines.append(f"    expected: {json.dumps(f.expected, default=str)}")
        lines.append(f"    got:      {json.dumps(f.got, default=str)}")
    return "\n".join(lines)


@pytest.mark.parametrize(("path", "name"), _cases(FILES))
def test_scenario(path, name):
    if name is None:
        _prepared(path)  # raises the located load/compile error
        pytest.fail(f"{path}: no tests")
    result = _run(path, name)
    if not result.passed:
        pytest.fail(_report(result), pytrace=False)


def test_there_are_scenarios_for_every_default_line():
    names = {p.name for p in FILES}
    for line_file in ("default_visibility", "default_new_chat", "default_reply_permissions",
                      "default_join_takeover", "default_message_routing", "default_escalation",
                      "default_unsubscribe", "default_email", "default_mentions", "default_assigned",
                      "default_private_notes", "default_lock", "default_edit_delete", "default_reading"):
        assert f"{line_file}.yaml" in names


def test_every_default_rule_fires_somewhere():
    fired = set()
    for path in FILES:
        scenario = _prepared(str(path))
        for test in scenario.tests:
            fired |= run_test(scenario, test).fired_rules
    rules = {r.id for r in _prepared(str(FILES[0])).loaded.ruleset.rules if r.id.startswith("default.")}
    assert len(rules) == 7
    assert rules <= fired, sorted(rules - fired)


# ---------------------------------------------------------------- what scenarios cannot see

def test_private_notes_are_not_listed_in_the_unread_replies_email():
    """SPEC §2 line 11: the email lists the unread replies, never a note."""
    path = str(SCENARIOS / "default_private_notes.yaml")
    result = _run(path, "the unread-replies email is sent once when a note stands among the replies")
    assert result.passed, _report(result)
    emails = [e for e in result.engine.effects if e.kind == "email"]
    assert len(emails) == 1
    texts = [r["text"] for r in emails[0].data["replies"]]
    assert texts == ["Let me check", "Found it"]
    assert not any("SECRET" in t for t in texts)


def test_cascade_limit_is_recorded_in_the_trace():
    """SPEC §3.4.3: the cut is recorded in the trace as cascade_limit."""
    path = str(SCENARIOS / "semantics_cascade.yaml")
    result = _run(path, "a rule loop through caused events is cut after 10 events")
    assert result.passed, _report(result)
    cuts = [e for e in result.engine.trace if e.kind == "cascade_limit"]
    assert len(cuts) == 1 and cuts[0].event == "message.created"


# ---------------------------------------------------------------- the command line

FAILING = """\
agents: [{id: alice}, {id: bob}]
tests:
  - name: passes
    steps:
      - {at: 0s, start_chat: {chat: c1, customer: {id: u1}, text: "Hi"}}
    expect:
      - at: 0s
        notified: {alice: [new_chat], bob: [new_chat]}
  - name: also passes
    steps:
      - {at: 0s, start_chat: {chat: c1, customer: {id: u1}, text: "Hi"}}
      - {at: 1m, reply: {chat: c1, agent: bob, text: "Hello"}, error: not_joined}
    expect:
      - at: 1m
        chat: {c1: {assignee: null}}
  - name: deliberately wrong
    steps:
      - {at: 0s, start_chat: {chat: c1, customer: {id: u1}, text: "Hi"}}
    expect:
      - at: 0s
        notified: {alice: [new_chat]}
        chat: {c1: {assignee: bob}}
"""


def test_cli_test_passes_on_the_scenarios(capsys):
    assert main(["test", str(SCENARIOS)]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out
    assert f"{len(_cases(FILES))} passed, 0 failed" in out


def test_cli_test_fails_with_expected_and_got(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(FAILING, encoding="utf-8")
    assert main(["test", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"FAILED {bad}::deliberately wrong" in out
    assert "at 0s: notified" in out
    assert 'expected: {"alice": ["new_chat"]}' in out
    assert 'got:      {"alice": ["new_chat"], "bob": ["new_chat"]}' in out
    assert "at 0s: chat c1.assignee" in out
    assert 'expected: "bob"' in out and "got:      null" in out
    assert "2 passed, 1 failed" in out


def test_cli_junit_report(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(FAILING, encoding="utf-8")
    good = SCENARIOS / "default_mentions.yaml"
    report = tmp_path / "junit.xml"
    assert main(["test", str(good), str(bad), "--junit", str(report)]) == 1
    capsys.readouterr()
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {str(good), str(bad)}
    n_good = len(load_scenario(good).tests)
    assert (suites[str(good)].get("tests"), suites[str(good)].get("failures")) == (str(n_good), "0")
    assert (suites[str(bad)].get("tests"), suites[str(bad)].get("failures")) == ("3", "1")
    cases = {c.get("name"): c for c in suites[str(bad)].findall("testcase")}
    assert set(cases) == {"passes", "also passes", "deliberately wrong"}
    failure = cases["deliberately wrong"].find("failure")
    assert failure is not None and "notified" in failure.get("message")
    assert cases["passes"].find("failure") is None


def test_cli_dry_run_json(capsys):
    path = SCENARIOS / "default_new_chat.yaml"
    name = "every operator who sees the new chat is subscribed and notified"
    assert main(["dry-run", str(path), "--test", name, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["test"] == name and doc["failures"] == []
    timeline = doc["timeline"]
    assert any(e["kind"] == "fired" and e.get("rule") == "default.subscribe_operators" for e in timeline)
    assert any(e["kind"] == "rule" and e.get("rule") == "default.subscribe_operators" and e.get("fired")
               for e in timeline)
    assert any(e["kind"] == "effect" and e["detail"]["to"] == "olga" for e in timeline)


# ---------------------------------------------------------------- webhooks: expectations that fail

WEBHOOK_SCENARIO = """\
rules: [{rules}]
defaults: false
tests:
  - name: t
    steps:
      - {{at: 0s, start_chat: {{chat: c1, customer: {{id: u1}}, text: "Hi"}}}}
      - {{at: 1m, customer_message: {{chat: c1, text: "urgent!"}}}}
    expect:
      - at: 1m
        webhooks: {want}
"""


@pytest.mark.parametrize(("want", "passes"), [
    ("[pager, audit]", True),
    ("[audit, pager]", True),  # order does not matter
    ("[{name: pager, event: message.created, chat: c1, rule: pager_on_urgent}, audit]", True),
    ("[pager]", False),  # exactly: audit was posted too
    ("[pager, audit, crm]", False),
    ("[{name: pager, event: chat.closed}, audit]", False),
    ("[{name: pager, chat: c2}, audit]", False),
    ("[]", False),
])
def test_webhooks_expectations_are_exact(tmp_path, want, passes):
    path = tmp_path / "s.yaml"
    path.write_text(WEBHOOK_SCENARIO.format(rules=SCENARIOS / "rules" / "webhooks.rules", want=want), encoding="utf-8")
    scenario = prepare(load_scenario(path))
    result = run_test(scenario, scenario.tests[0])
    assert result.passed is passes, _report(result)
    if not passes:
        assert [f.where for f in result.failures] == ["at 1m: webhooks"]


@pytest.mark.parametrize("want", ["pager", "[{name: pager, to: x}]", "[{event: chat.closed}]", "[[pager]]"])
def test_a_malformed_webhooks_expectation_is_a_located_error(tmp_path, want):
    from dsl.errors import SourceError

    path = tmp_path / "s.yaml"
    path.write_text(WEBHOOK_SCENARIO.format(rules=SCENARIOS / "rules" / "webhooks.rules", want=want), encoding="utf-8")
    with pytest.raises(SourceError) as e:
        load_scenario(path)
    d = e.value.diagnostics[0]
    assert d.code == "scenario_error" and "webhooks" in d.message and d.span.line >= 9


@pytest.mark.parametrize("rules", ["{a: 1}", "[rules/x.rules, {a: 1}]", "[3]", "['']", "7"])
def test_rules_that_are_no_paths_are_a_located_error(tmp_path, rules):
    """A mapping or a number under `rules:` crashed the loader's path arithmetic (atheris)."""
    from engine.scenario import ScenarioError

    path = tmp_path / "s.yaml"
    path.write_text(f"rules: {rules}\ntests:\n  - name: t\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    d = err.value.diagnostics[0]
    assert (d.code, d.span.line) == ("scenario_error", 1) and "rule file's path" in d.message


@pytest.mark.parametrize("where,key", [("expect", "true"), ("expect", "1"), ("test", "false"), ("test", "2.5")])
def test_a_key_that_is_no_text_is_a_located_error(tmp_path, where, key):
    """A YAML key read as a boolean or a number made the misspelling hint crash (atheris,
    `TypeError: 'bool' object is not iterable` in difflib)."""
    from engine.scenario import ScenarioError

    path = tmp_path / "s.yaml"
    if where == "expect":
        body = f"tests:\n  - name: t\n    expect:\n      - {key}: 1\n"
    else:
        body = f"tests:\n  - name: t\n    {key}: 1\n"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    d = err.value.diagnostics[0]
    assert d.code == "scenario_error" and d.span.line >= 2 and "unknown" in d.message
