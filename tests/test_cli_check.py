"""`chatflow check` and `chatflow lint`, run in-process: exit codes, the four output formats,
--max-errors, --strict and --no-defaults (SPEC §3.5; exit codes 0 clean, 1 findings, 2 usage)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatflow.cli import main
from dsl.loader import load_rule_set

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "rules" / "examples" / "routing.rules"

BROKEN = """\
rule pricing {
  on chat.create
  when chat.pageurl contains "/pricing"
  then assign agent "alice"
}
"""

WARNING_ONLY = """\
rule a { on chat.created then assign agent "alice" }
rule b { on chat.created then assign agent "bob" }
"""


def run(capsys, *argv):
    """(exit code, stdout, stderr) of ``chatflow ARGV``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def broken(tmp_path):
    path = tmp_path / "broken.rules"
    path.write_text(BROKEN, encoding="utf-8")
    return path


@pytest.fixture
def warning_only(tmp_path):
    path = tmp_path / "warn.rules"
    path.write_text(WARNING_ONLY, encoding="utf-8")
    return path


# ---------------------------------------------------------------- exit codes and text


def test_check_passes_on_the_examples(capsys):
    code, out, _ = run(capsys, "check", EXAMPLES)
    assert code == 0
    assert out == "All checks passed: 2 files, 11 rules.\n"


def test_check_passes_on_the_examples_without_defaults(capsys):
    code, out, _ = run(capsys, "check", "--no-defaults", EXAMPLES)
    assert (code, out) == (0, "All checks passed: 1 file, 4 rules.\n")


def test_check_reads_folders(capsys, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.rules").write_text("rule a { then stop }\n")
    (tmp_path / "sub" / "b.rules").write_text("rule b { then stop }\n")
    (tmp_path / "notes.txt").write_text("not a rule file {")
    code, out, _ = run(capsys, "check", "--no-defaults", tmp_path)
    assert (code, out) == (0, "All checks passed: 2 files, 2 rules.\n")


def test_check_fails_on_errors_with_located_text(capsys, broken):
    code, out, _ = run(capsys, "check", broken)
    assert code == 1
    assert out == (
        f"{broken}:2:6: unknown_event unknown event `chat.create`\n"
        "    on chat.create\n"
        "       ^^^^^^^^^^^\n"
        "  = help: did you mean `chat.created`?\n"
        f"{broken}:3:8: unknown_fact unknown fact `chat.pageurl`\n"
        '    when chat.pageurl contains "/pricing"\n'
        "         ^^^^^^^^^^^^\n"
        "  = help: did you mean `chat.page_url`?\n"
        "\n"
        "Found 2 errors in 2 files.\n"
    )


def test_check_of_a_missing_file(capsys, tmp_path):
    missing = tmp_path / "nope.rules"
    code, out, _ = run(capsys, "check", "--no-defaults", missing)
    assert code == 1
    assert out.startswith(f"{missing}:1:1: file_error cannot read file: ")


def test_check_of_a_binary_file(capsys, tmp_path):
    path = tmp_path / "bin.rules"
    path.write_bytes(b"rule r {\n\xff\xfe}\n")
    code, out, _ = run(capsys, "check", "--no-defaults", path)
    assert code == 1
    assert out.startswith(f"{path}:2:1: bad_encoding not UTF-8 text (byte 0xff)")


@pytest.mark.parametrize("argv", [
    [],
    ["check"],
    ["check", "--format", "xml", "x.rules"],
    ["check", "--max-errors", "many", "x.rules"],
    ["check", "--strict", "x.rules"],  # --strict belongs to lint
    ["frobnicate", "x.rules"],
], ids=["no command", "no path", "unknown format", "bad max-errors", "strict on check",
        "unknown command"])
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    _, err = capsys.readouterr()
    assert err.startswith("usage: chatflow")


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", "--help"])
    assert info.value.code == 0
    out, _ = capsys.readouterr()
    assert out.startswith("usage: chatflow check")
    for option in ("--no-defaults", "--format", "--max-errors"):
        assert option in out


# ---------------------------------------------------------------- formats


def test_json_format(capsys, broken):
    code, out, _ = run(capsys, "check", "--format", "json", broken)
    assert code == 1
    doc = json.loads(out)
    assert doc["summary"] == {"files": 2, "rules": None, "errors": 2, "warnings": 0}
    assert [(d["path"], d["line"], d["column"], d["code"], d["severity"]) for d in doc["diagnostics"]] == [
        (str(broken), 2, 6, "unknown_event", "error"),
        (str(broken), 3, 8, "unknown_fact", "error"),
    ]
    first = doc["diagnostics"][0]
    assert (first["end_line"], first["end_column"]) == (2, 17)
    assert first["message"] == "unknown event `chat.create`"
    assert first["hint"] == "did you mean `chat.created`?"


def test_json_format_when_clean(capsys):
    code, out, _ = run(capsys, "check", "--format", "json", EXAMPLES)
    assert code == 0
    assert json.loads(out) == {"diagnostics": [], "summary": {"files": 2, "rules": 11, "errors": 0, "warnings": 0}}


def test_sarif_format(capsys, broken):
    code, out, _ = run(capsys, "check", "--format", "sarif", broken)
    assert code == 1
    doc = json.loads(out)
    assert doc["version"] == "2.1.0"
    assert "sarif" in doc["$schema"]
    (run_,) = doc["runs"]
    driver = run_["tool"]["driver"]
    assert driver["name"] == "chatflow"
    assert [r["id"] for r in driver["rules"]] == ["unknown_event", "unknown_fact"]
    results = run_["results"]
    assert [r["ruleId"] for r in results] == ["unknown_event", "unknown_fact"]
    for r in results:
        assert r["level"] == "error"
        assert driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
        assert r["message"]["text"]
    locations = [r["locations"][0]["physicalLocation"] for r in results]
    assert [loc["artifactLocation"]["uri"] for loc in locations] == [str(broken)] * 2
    assert [(loc["region"]["startLine"], loc["region"]["startColumn"]) for loc in locations] == [(2, 6), (3, 8)]


def test_sarif_format_for_lint_warnings(capsys, warning_only):
    code, out, _ = run(capsys, "lint", "--format", "sarif", warning_only)
    assert code == 0
    (result,) = json.loads(out)["runs"][0]["results"]
    assert (result["ruleId"], result["level"]) == ("conflicting_assign", "warning")
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == 2


def test_github_format(capsys, broken):
    code, out, _ = run(capsys, "check", "--format", "github", broken)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("::error file=")
    assert lines[0].startswith(f"::error file={broken},line=2,col=6,endLine=2,endColumn=17,title=unknown_event::")
    assert lines[0].endswith("unknown event `chat.create` (did you mean `chat.created`?)")


def test_github_format_for_lint_warnings(capsys, warning_only):
    code, out, _ = run(capsys, "lint", "--format", "github", warning_only)
    assert code == 0
    (line,) = out.splitlines()
    assert line.startswith(f"::warning file={warning_only},line=2,col=6,")


def test_github_format_prints_nothing_when_clean(capsys):
    assert run(capsys, "check", "--format", "github", EXAMPLES) == (0, "", "")


# ---------------------------------------------------------------- options


def test_max_errors_text(capsys, broken):
    code, out, _ = run(capsys, "check", "--max-errors", "1", broken)
    assert code == 1
    assert out.count(": unknown_") == 1
    assert f"{broken}:2:6: unknown_event" in out
    assert "... 1 more not shown (--max-errors 1)\n" in out
    assert out.endswith("Found 2 errors in 2 files.\n")


@pytest.mark.parametrize("fmt", ["json", "sarif", "github"])
def test_max_errors_machine_formats(capsys, broken, fmt):
    code, out, _ = run(capsys, "check", "--format", fmt, "--max-errors", "1", broken)
    assert code == 1
    if fmt == "json":
        assert len(json.loads(out)["diagnostics"]) == 1
    elif fmt == "sarif":
        assert len(json.loads(out)["runs"][0]["results"]) == 1
    else:
        assert len(out.splitlines()) == 1


def test_lint_warning_only_passes_without_strict(capsys, warning_only):
    code, out, _ = run(capsys, "lint", warning_only)
    assert code == 0
    assert out == (
        f"{warning_only}:2:6: conflicting_assign `a` and `b` can both assign on `chat.created` "
        '(agent "alice" vs agent "bob"); the later one wins\n'
        '  rule b { on chat.created then assign agent "bob" }\n'
        "       ^\n"
        "  = help: make the conditions exclusive, or add `stop` to the first\n"
        "\n"
        "Found 1 warning in 2 files.\n"
    )


def test_lint_strict_fails_on_a_warning(capsys, warning_only):
    code, out, _ = run(capsys, "lint", "--strict", warning_only)
    assert code == 1
    assert "conflicting_assign" in out


def test_lint_strict_passes_when_clean(capsys, tmp_path):
    path = tmp_path / "clean.rules"
    path.write_text('rule vip { on chat.created when chat.fields.plan == "gold" then set priority 3 }\n')
    assert run(capsys, "lint", "--strict", path) == (0, "All checks passed: 2 files, 8 rules.\n", "")


def test_lint_strict_on_the_spec_examples(capsys):
    # the SPEC's own example routes a pricing chat to alice and, out of hours, to the night desk
    code, out, _ = run(capsys, "lint", "--strict", EXAMPLES)
    assert code == 1
    assert "conflicting_assign" in out


def test_lint_fails_on_errors(capsys, broken):
    code, _, _ = run(capsys, "lint", broken)
    assert code == 1


def test_check_does_not_report_warnings(capsys, warning_only):
    assert run(capsys, "check", warning_only) == (0, "All checks passed: 2 files, 9 rules.\n", "")


def test_lint_honours_ignore_markers(capsys, tmp_path):
    path = tmp_path / "ignored.rules"
    path.write_text(WARNING_ONLY.replace("\nrule b", "\n# chatflow: ignore=conflicting_assign\nrule b"))
    assert run(capsys, "lint", "--strict", path)[0] == 0


def test_no_defaults(capsys, tmp_path):
    path = tmp_path / "override.rules"
    path.write_text("override rule default.escalate_unread { when chat.unread_by_assignee for 5m "
                    'then notify subscribers template "unread_messages" }\n')
    assert run(capsys, "check", path) == (0, "All checks passed: 2 files, 7 rules.\n", "")
    code, out, _ = run(capsys, "check", "--no-defaults", path)
    assert code == 1
    assert f"{path}:1:15: unknown_rule cannot override `default.escalate_unread`: no such rule" in out
    assert out.endswith("Found 1 error in 1 file.\n")


def test_default_file_named_on_the_command_line_is_loaded_once(capsys):
    code, out, _ = run(capsys, "check", ROOT / "rules" / "default.rules", EXAMPLES)
    assert (code, out) == (0, "All checks passed: 2 files, 11 rules.\n")


def test_check_passes_only_sets_that_load(capsys, tmp_path):
    path = tmp_path / "ignored_error.rules"
    path.write_text("rule r {\n  on chat.created\n"
                    "  when chat.prioritx > 1  # chatflow: ignore=unknown_fact\n  then stop\n}\n")
    code, _, _ = run(capsys, "check", path)
    loads = load_rule_set([path]).ruleset is not None
    assert (code == 0) == loads
