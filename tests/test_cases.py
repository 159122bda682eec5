"""The rule language's behaviour as data: every ``tests/cases/**/*.yaml`` case, one test each.

A case file is a YAML list of cases. A case is a mapping:

``name``
    what the case shows (test id: ``<topic>/<file>.yaml::<name>``).
``source`` | ``files``
    the rule text (loaded as ``case.rules``), or a mapping of file name to text, loaded
    in the order written (for ordering across files).
``paths`` (optional)
    repository-relative rule files loaded before the texts (e.g. the shipped examples).
``defaults`` (optional, default false)
    load ``rules/default.rules`` first, as ``chatflow check`` does without ``--no-defaults``.

and what is expected, any of:

``expect``
    the set compiles: ``rules`` is the list of rule ids in evaluation order; ``summary``
    maps a rule id to fields of the compiled rule: ``when`` (the condition's shape, see
    :func:`shape`), ``on``, ``priority``, ``title``, ``temporals`` (``[[state, seconds]]``),
    ``durations`` (``[[condition, seconds]]``),
    ``schedules``, ``clock``, ``actions`` (each action's shape), ``overrides``, ``is_default``;
    ``routing`` the compiled routing block (``backlog``, ``max_idle`` and ``window`` in
    seconds, ``limit``, ``capacity``); ``sla_states`` (``[[state, target]]``).
``error``
    one error ``{code, line, column}`` (optionally ``path``, ``message`` and ``hint`` as
    substrings), or a list of them: exactly the errors ``chatflow check`` reports, in
    the order it prints them (path, line, column).
``lint``
    a list ``[{code, line}]`` (optionally ``column``, ``path``, ``message``): exactly the
    warnings ``chatflow lint`` reports for the case's own files; ``[]`` means lint-clean.
    Implies no errors.
``xfail`` (optional)
    a reason: the case states what SPEC.md says and the code does not do yet (a known
    bug). Strict: the day the code is fixed the case fails until the marker goes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dsl import ast
from dsl.compiler import is_default_file
from dsl.lint import apply_ignores, lint
from dsl.loader import load_rule_set

ROOT = Path(__file__).resolve().parents[1]
CASES = Path(__file__).resolve().parent / "cases"

CASE_KEYS = {"name", "source", "files", "paths", "defaults", "expect", "error", "lint", "xfail"}
EXPECT_KEYS = {"rules", "summary", "routing"}
DIAG_KEYS = {"code", "line", "column", "path", "message", "hint"}
SUMMARY_FIELDS = {"when", "on", "priority", "title", "temporals", "durations", "schedules", "clock", "actions",
                  "sla_states", "overrides", "is_default"}


class CaseLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false, so a summary's ``on:`` key stays the word "on"."""


CaseLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    CaseLoader.yaml_implicit_resolvers.setdefault(_first, []).append(
        ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")))


# ---------------------------------------------------------------- shapes


def shape(node) -> str:
    """A condition as a compact, layout-free string: ``Or(a, And(b, Not(For(c, 300s))))``.

    Comparisons (and ``changed to`` / ``changed from … to``) print infix in parentheses
    (``(chat.status == "open")``), strings as JSON, durations in seconds, and parentheses
    the author wrote as ``Paren(…)``.
    """
    if node is None:
        return "none"
    if isinstance(node, ast.Ref):
        return node.name
    if isinstance(node, ast.Literal):
        if node.kind == "str":
            return json.dumps(node.value, ensure_ascii=False)
        if node.kind == "bool":
            return "true" if node.value else "false"
        if node.kind == "none":
            return "none"
        return str(node.value)
    if isinstance(node, ast.Duration):
        return f"{node.seconds}s"
    if isinstance(node, ast.Regex):
        return f"/{node.pattern}/"
    if isinstance(node, ast.ListLit):
        return "[" + ", ".join(shape(i) for i in node.items) + "]"
    if isinstance(node, ast.Call):
        return f"{node.name}(" + ", ".join(shape(a) for a in node.args) + ")"
    if isinstance(node, ast.Compare):
        return f"({shape(node.left)} {node.op} {shape(node.right)})"
    if isinstance(node, ast.IsNone):
        return f"({shape(node.operand)} is {'not ' if node.negated else ''}none)"
    if isinstance(node, ast.Changed):
        if node.new is None:
            return f"changed({shape(node.fact)})"
        if node.old is None:
            return f"({shape(node.fact)} changed to {shape(node.new)})"
        return f"({shape(node.fact)} changed from {shape(node.old)} to {shape(node.new)})"
    if isinstance(node, ast.For):
        within = f" within {json.dumps(node.within)}" if node.within is not None else ""
        return f"For({shape(node.operand)}, {node.duration.seconds}s{within})"
    if isinstance(node, ast.Not):
        return f"Not({shape(node.operand)})"
    if isinstance(node, ast.And):
        return "And(" + ", ".join(shape(i) for i in node.items) + ")"
    if isinstance(node, ast.Or):
        return "Or(" + ", ".join(shape(i) for i in node.items) + ")"
    if isinstance(node, ast.Paren):
        return f"Paren({shape(node.expr)})"
    if isinstance(node, ast.Shift):
        return f"({shape(node.base)} {node.op} {shape(node.amount)})"
    raise TypeError(f"no shape for {node!r}")


_ACTION_FIELDS = ("agent", "department", "strategy", "target", "except_", "template", "message", "webhook",
                  "text", "article", "tag", "priority", "field_name", "value", "duration", "schedule", "status", "targets")


def action_shape(action: ast.Action) -> str:
    """``notify(target=subscribers, except=actor, template="new_message")``; bare kinds alone."""
    parts = []
    for name in _ACTION_FIELDS:
        value = getattr(action, name)
        if value is None:
            continue
        if name == "target":
            if action.kind == "email" and value.kind == "customer":
                continue  # the customer, as before other recipients existed
            shown = value.kind if value.id is None else f'{value.kind} {json.dumps(value.id)}'
        elif name == "targets":
            shown = "[" + ", ".join(t.kind if t.id is None else f"{t.kind} {json.dumps(t.id)}" for t in value) + "]"
        elif name in ("value", "duration"):
            shown = shape(value)
        elif name == "except_":
            shown, name = value, "except"
        elif name == "strategy":
            shown = value
        elif isinstance(value, str):
            shown = json.dumps(value, ensure_ascii=False)
        else:
            shown = str(value)
        parts.append(f"{name}={shown}")
    return f"{action.kind}({', '.join(parts)})" if parts else action.kind


def rule_summary(rule) -> dict:
    return {
        "when": shape(rule.when),
        "on": rule.on,
        "priority": rule.priority,
        "title": rule.title,
        # sorted: the order they were found in carries no meaning
        "temporals": sorted(list(t) for t in rule.temporals),
        "durations": sorted(list(d) for d in rule.durations),
        "schedules": sorted(rule.schedules),
        "clock": rule.clock,
        "sla_states": sorted(list(t) for t in rule.sla_states),
        "actions": [action_shape(a) for a in rule.actions],
        "overrides": rule.overrides,
        "is_default": rule.is_default,
    }


# ---------------------------------------------------------------- loading cases


def _load_cases():
    params = []
    for path in sorted(CASES.rglob("*.yaml")):
        rel = path.relative_to(CASES).as_posix()
        cases = yaml.load(path.read_text(encoding="utf-8"), Loader=CaseLoader)
        assert isinstance(cases, list), f"{rel}: a case file is a list of cases"
        seen = set()
        for case in cases:
            assert isinstance(case, dict) and "name" in case, f"{rel}: a case needs a name: {case!r}"
            name = case["name"]
            assert name not in seen, f"{rel}: two cases named {name!r}"
            seen.add(name)
            marks = []
            if case.get("xfail"):
                marks.append(pytest.mark.xfail(reason=case["xfail"], strict=True))
            params.append(pytest.param(rel, case, id=f"{rel}::{name}", marks=marks))
    return params


def _check_case_shape(case: dict) -> None:
    unknown = set(case) - CASE_KEYS
    assert not unknown, f"unknown case keys {sorted(unknown)}"
    assert {"source", "files", "paths"} & set(case), "a case has `source`, `files` or `paths`"
    assert not ("source" in case and "files" in case), "`source` and `files` exclude each other"
    assert {"expect", "error", "lint"} & set(case), "a case says what to expect: expect, error or lint"
    assert not ("error" in case and ({"expect", "lint"} & set(case))), "`error` excludes `expect`/`lint`"
    if "expect" in case:
        unknown = set(case["expect"] or {}) - EXPECT_KEYS
        assert not unknown, f"unknown expect keys {sorted(unknown)}"
        for rid, fields in (case["expect"].get("summary") or {}).items():
            unknown = set(fields) - SUMMARY_FIELDS
            assert not unknown, f"unknown summary fields for {rid}: {sorted(unknown)}"


def _expected_diags(value) -> list:
    items = value if isinstance(value, list) else [value]
    for item in items:
        unknown = set(item) - DIAG_KEYS
        assert not unknown, f"unknown diagnostic keys {sorted(unknown)}"
        assert "code" in item and "line" in item, f"a diagnostic needs code and line: {item!r}"
    return items


def _sort_key(d):
    return (d.span.path, d.span.line, d.span.column, d.code)


def _shown_path(path: str) -> str:
    """Repository files as repository-relative paths; in-memory names as they are."""
    p = Path(path)
    if p.is_absolute() and p.is_relative_to(ROOT):
        return p.relative_to(ROOT).as_posix()
    return path


def _matches(actual, expected: dict) -> bool:
    if actual.code != expected["code"] or actual.span.line != expected["line"]:
        return False
    if "column" in expected and actual.span.column != expected["column"]:
        return False
    if "path" in expected and _shown_path(actual.span.path) != expected["path"]:
        return False
    if "message" in expected and expected["message"] not in actual.message:
        return False
    if "hint" in expected and expected["hint"] not in (actual.hint or ""):
        return False
    return True


def _assert_diags(kind: str, actual: list, expected: list, sources: dict) -> None:
    shown = "\n".join(d.render(sources.get(d.span.path)) for d in actual) or "(none)"
    assert len(actual) == len(expected) and all(_matches(a, e) for a, e in zip(actual, expected)), (
        f"{kind}: expected {expected}\ngot:\n{shown}")


def _load(case: dict):
    texts = case.get("files")
    if texts is None and "source" in case:
        texts = {"case.rules": case["source"]}
    paths = [ROOT / p for p in case.get("paths", ())]
    return load_rule_set(paths, defaults=bool(case.get("defaults", False)), texts=texts or {})


@pytest.mark.parametrize("rel, case", _load_cases())
def test_case(rel, case):
    _check_case_shape(case)
    loaded = _load(case)
    # what `chatflow check` reports: errors, less the ones an ignore marker silences
    errors = sorted(apply_ignores([d for d in loaded.diagnostics if d.severity == "error"], loaded.files),
                    key=_sort_key)
    for d in loaded.diagnostics:  # every finding renders, caret and all
        d.render(loaded.sources.get(d.span.path))

    if "error" in case:
        _assert_diags("errors", errors, _expected_diags(case["error"]), loaded.sources)
        return

    _assert_diags("errors", errors, [], loaded.sources)
    ruleset = loaded.ruleset
    assert ruleset is not None

    expect = case.get("expect") or {}
    if "rules" in expect:
        assert list(ruleset.ids) == expect["rules"]
    for rid, fields in (expect.get("summary") or {}).items():
        rule = ruleset.rule(rid)
        assert rule is not None, f"no rule {rid!r} in {ruleset.ids}"
        summary = rule_summary(rule)
        assert {k: summary[k] for k in fields} == fields
    if "routing" in expect:
        r = ruleset.routing
        compiled = {"backlog": r.backlog, "max_idle": r.max_idle, "limit": r.limit, "window": r.window,
                    "capacity": r.capacity}
        assert compiled == {**compiled, **expect["routing"]}, compiled

    if "lint" in case:
        # what `chatflow lint` reports: compiler warnings and lint findings of the case's
        # own files (not of the shipped defaults), less the silenced ones
        warnings = [d for d in loaded.diagnostics if d.severity == "warning"] + lint(ruleset)
        warnings = [d for d in warnings if not is_default_file(d.span.path)]
        warnings = sorted(apply_ignores(warnings, loaded.files), key=_sort_key)
        _assert_diags("lint", warnings, _expected_diags(case["lint"] or []), loaded.sources)
