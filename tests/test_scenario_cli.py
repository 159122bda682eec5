"""`chatflow test --coverage/--threshold/--run` and dry-run's text timeline."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from chatflow.cli import main

SCENARIOS = Path(__file__).resolve().parent / "scenarios"

RULES = textwrap.dedent("""\
    rule vip "VIP customers get priority" {
      on chat.created
      when customer.email ends with "@vip.example" or chat.page_url contains "/enterprise"
      then set priority 3
    }
    rule never "Nobody writes from this channel in these tests" {
      on chat.created
      when chat.channel == "whatsapp"
      then tag "whatsapp"
    }
""")

SCENARIO = textwrap.dedent("""\
    rules: [cov.rules]
    defaults: false
    agents: [{id: alice}]
    tests:
      - name: a vip by email
        steps:
          - {at: 0s, start_chat: {chat: c1, customer: {id: u1, email: ann@vip.example}, text: "Hi"}}
        expect:
          - {at: 0s, fired: [vip], chat: {c1: {priority: 3}}}
      - name: an ordinary customer
        steps:
          - {at: 0s, start_chat: {chat: c2, customer: {id: u2, email: bob@example.com}, text: "Hi"}}
        expect:
          - {at: 0s, not_fired: [vip, never]}
""")


def _files(tmp_path):
    (tmp_path / "cov.rules").write_text(RULES)
    path = tmp_path / "cov.yaml"
    path.write_text(SCENARIO)
    return path


def test_coverage_names_the_rule_and_the_branch_never_exercised(tmp_path, capsys):
    path = _files(tmp_path)
    assert main(["test", str(path), "--coverage"]) == 0
    out = capsys.readouterr().out
    assert "rule never never fired" in out
    assert '`chat.page_url contains "/enterprise"` never true' in out
    assert '`customer.email ends with "@vip.example"` never' not in out  # seen true and false
    assert "coverage: " in out and "2 passed, 0 failed" in out


def test_threshold_fails_a_run_below_it(tmp_path, capsys):
    path = _files(tmp_path)
    assert main(["test", str(path), "--coverage", "--threshold", "99"]) == 1
    assert "below the threshold 99%" in capsys.readouterr().out
    assert main(["test", str(path), "--coverage", "--threshold", "10"]) == 0


def test_run_selects_tests_by_name(tmp_path, capsys):
    path = _files(tmp_path)
    assert main(["test", str(path), "--run", "vip", "-v"]) == 0
    out = capsys.readouterr().out
    assert "a vip by email PASSED" in out and "ordinary" not in out and "1 passed, 0 failed" in out


def test_dry_run_text_shows_why_a_rule_did_not_fire(tmp_path, capsys):
    path = _files(tmp_path)
    assert main(["dry-run", str(path), "--test", "an ordinary customer"]) == 0
    out = capsys.readouterr().out
    assert "· not fired vip [event rule]" in out
    assert 'customer.email ends with "@vip.example" = false' in out
    assert 'customer.email = "bob@example.com"' in out
    assert "nothing is sent" in out


def test_dry_run_unknown_test_is_a_usage_error(tmp_path, capsys):
    path = _files(tmp_path)
    assert main(["dry-run", str(path), "--test", "nope"]) == 2
    assert "no test named 'nope'" in capsys.readouterr().err


def test_an_unknown_key_in_a_test_is_an_error_not_a_test_that_checks_nothing(tmp_path, capsys):
    _files(tmp_path)
    typo = SCENARIO.replace("    expect:\n      - {at: 0s, fired", "    expects:\n      - {at: 0s, fired", 1)
    assert typo != SCENARIO
    (tmp_path / "cov.yaml").write_text(typo)
    assert main(["test", str(tmp_path / "cov.yaml")]) == 1
    err = capsys.readouterr()
    out = err.out + err.err
    assert "unknown test key `expects`" in out and "expect" in out


def _dry_run(capsys, scenario, test, *options) -> str:
    """What `chatflow dry-run tests/scenarios/SCENARIO --test TEST OPTIONS…` prints; it must pass."""
    assert main(["dry-run", str(SCENARIOS / scenario), "--test", test, *options]) == 0
    return capsys.readouterr().out


def test_dry_run_shows_what_a_chat_updated_changed(capsys):
    name = "a priority set by a rule fires the rules on its change, once"
    out = _dry_run(capsys, "semantics_changes.yaml", name)
    assert "+1m      event   chat.updated c1 actor=rule (rule urgent_words) changes: priority 0 → 4\n" in out
    assert "          ✓ fired     escalate_priority [event rule]\n" in out
    assert "                chat.priority changed to 4 = true\n                  changes = priority 0 → 4\n" in out
    doc = json.loads(_dry_run(capsys, "semantics_changes.yaml", name, "--format", "json"))
    entries = doc["timeline"] if isinstance(doc, dict) and "timeline" in doc else doc
    updated = [e for e in _walk(entries) if e.get("kind") == "event" and e.get("event") == "chat.updated"]
    assert updated[0]["detail"]["changes"] == {"priority": [0, 4]}


def _walk(doc):
    """Every mapping inside a JSON document, depth first."""
    if isinstance(doc, dict):
        yield doc
        for v in doc.values():
            yield from _walk(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _walk(v)


def test_dry_run_shows_the_backlog_and_what_it_gave(capsys):
    out = _dry_run(capsys, "semantics_routing.yaml",
                   "a chat that closes frees capacity and its assignee takes the next waiting chat")
    assert "+3m      backlog s1 may take waiting chats after agent.status_changed: c1, c2\n" in out
    assert "+20m     backlog s1 may take waiting chats after chat.updated: c3\n" in out
    assert "+20m     event   chat.updated c3 actor=system changes: assignee none → \"s1\"\n" in out


def test_dry_run_shows_sla_clocks_and_business_time(capsys):
    name = "nobody answers; due soon at 10m, breached at exactly 15m"
    out = _dry_run(capsys, "semantics_sla.yaml", name)
    assert ("                chat.sla_due_soon(\"first_response\") = false\n"
            "                  sla = policy standard: first_response running since +0s, due +15m (due soon from +10m)\n"
            ) in out
    assert "+0s      timer   armed first_response_breached for c1, due +15m\n" in out
    assert ("          ✓ fired     first_response_breached [state rule]\n"
            "                chat.sla_breached(\"first_response\") = true\n"
            "                  sla = policy standard: first_response breached since +0s, due +15m (due soon from +10m)\n"
            ) in out
    assert ("                chat.awaiting_agent for 2h within \"support_hours\" = false\n"
            "                  chat.awaiting_agent has held 900s of 2h within support_hours = true\n") in out
    doc = json.loads(_dry_run(capsys, "semantics_sla.yaml", name, "--format", "json"))
    slas = [w for e in _walk(doc) if isinstance(e.get("why"), list) for w in e["why"]
            if isinstance(w, dict) and w.get("condition") == "sla"]
    breached = [w["value"] for w in slas if w["value"].get("state") == "breached"]
    assert breached and {"policy": "standard", "target": "first_response", "state": "breached",
                         "due": 1767604500.0}.items() <= breached[0].items()
