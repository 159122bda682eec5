"""Printing findings the way the tools our users know do: text with carets (like ruff and
rustc), JSON for machines, SARIF 2.1.0 for code-scanning UIs, GitHub workflow commands."""
from __future__ import annotations

import json

from dsl.lint import LINT_CODES

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def sort_key(d):
    return (d.span.path, d.span.line, d.span.column, d.code)


def render_text(diagnostics, sources: dict, color: bool = False) -> str:
    out = []
    for d in diagnostics:
        text = d.render(sources.get(d.span.path))
        if color:
            head, _, rest = text.partition("\n")
            tint = "\033[31m" if d.severity == "error" else "\033[33m"
            text = f"\033[1m{head.split(': ', 1)[0]}:\033[0m {tint}{head.split(': ', 1)[1] if ': ' in head else head}\033[0m" + (
                "\n" + rest if rest else "")
        out.append(text)
    return "\n".join(out)


def summary_line(n_errors: int, n_warnings: int, n_files: int, n_rules: int | None) -> str:
    if n_errors == 0 and n_warnings == 0:
        rules = f", {n_rules} rules" if n_rules is not None else ""
        return f"All checks passed: {n_files} file{'s' if n_files != 1 else ''}{rules}."
    parts = []
    if n_errors:
        parts.append(f"{n_errors} error{'s' if n_errors != 1 else ''}")
    if n_warnings:
        parts.append(f"{n_warnings} warning{'s' if n_warnings != 1 else ''}")
    return f"Found {' and '.join(parts)} in {n_files} file{'s' if n_files != 1 else ''}."


def render_json(diagnostics, n_files: int, n_rules: int | None) -> str:
    errors = sum(d.severity == "error" for d in diagnostics)
    return json.dumps({
        "diagnostics": [d.as_json() for d in diagnostics],
        "summary": {"files": n_files, "rules": n_rules, "errors": errors,
                    "warnings": len(diagnostics) - errors},
    }, indent=2)


def render_sarif(diagnostics, version: str) -> str:
    codes = sorted({d.code for d in diagnostics})
    rules = [{"id": c, "shortDescription": {"text": LINT_CODES.get(c, c.replace("_", " "))}} for c in codes]
    results = []
    for d in diagnostics:
        msg = d.message + (f" ({d.hint})" if d.hint else "")
        results.append({
            "ruleId": d.code,
            "ruleIndex": codes.index(d.code),
            "level": "error" if d.severity == "error" else "warning",
            "message": {"text": msg},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": d.span.path},
                "region": {"startLine": d.span.line, "startColumn": d.span.column,
                           "endLine": d.span.end_line, "endColumn": d.span.end_column},
            }}],
        })
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "chatflow", "version": version,
                                      "informationUri": "https://chatflow.invalid/docs/rules", "rules": rules}},
                  "results": results}],
    }
    return json.dumps(doc, indent=2)


def _gh_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def render_github(diagnostics) -> str:
    lines = []
    for d in diagnostics:
        level = "error" if d.severity == "error" else "warning"
        msg = d.message + (f" ({d.hint})" if d.hint else "")
        lines.append(
            f"::{level} file={_gh_escape(d.span.path, True)},line={d.span.line},col={d.span.column},"
            f"endLine={d.span.end_line},endColumn={d.span.end_column},title={_gh_escape(d.code, True)}::{_gh_escape(msg)}")
    return "\n".join(lines)
