"""`chatflow fmt`: print, -w, --check, --diff and --to yaml|rules, as a rules repo's CI uses it."""
from __future__ import annotations

from pathlib import Path

from chatflow.cli import main
from dsl.parser import parse
from dsl.yaml_form import load_yaml

MESSY = 'rule a "A" { on chat.created   when chat.priority>2 then {tag "x"} }  # why\n'
CANONICAL = 'rule a "A" {\n  on chat.created\n  when chat.priority > 2\n  then tag "x"\n}  # why\n'
ROOT = Path(__file__).resolve().parents[1]


def test_fmt_prints_the_canonical_layout(tmp_path, capsys):
    f = tmp_path / "a.rules"
    f.write_text(MESSY)
    assert main(["fmt", str(f)]) == 0
    assert capsys.readouterr().out == CANONICAL
    assert f.read_text() == MESSY  # printing never writes


def test_check_and_diff_fail_on_an_unformatted_file_and_write_fixes_it(tmp_path, capsys):
    f = tmp_path / "a.rules"
    f.write_text(MESSY)
    assert main(["fmt", "--check", str(f)]) == 1
    assert f"would reformat {f}" in capsys.readouterr().out
    assert main(["fmt", "--diff", str(f)]) == 1
    diff = capsys.readouterr().out
    assert diff.startswith(f"--- {f}") and "+  when chat.priority > 2" in diff
    assert main(["fmt", "-w", str(f)]) == 0
    assert f.read_text() == CANONICAL
    assert main(["fmt", "--check", str(f)]) == 0


def test_shipped_rule_files_are_formatted(capsys):
    assert main(["fmt", "--check", str(ROOT / "rules")]) == 0


def test_to_yaml_and_back_keeps_the_rules(tmp_path, capsys):
    src = (ROOT / "rules" / "examples" / "routing.rules").read_text()
    f = tmp_path / "routing.rules"
    f.write_text(src)
    assert main(["fmt", "--to", "yaml", "-w", str(f)]) == 0
    y = tmp_path / "routing.yaml"
    original = parse(src, str(f))
    converted = load_yaml(y.read_text(), str(y))
    assert (converted.items, converted.schedules) == (original.items, original.schedules)
    f.unlink()
    assert main(["fmt", "--to", "rules", "-w", str(y)]) == 0
    back = parse(f.read_text(), str(f))
    assert (back.items, back.schedules) == (original.items, original.schedules)


def test_a_broken_file_is_a_located_error(tmp_path, capsys):
    f = tmp_path / "bad.rules"
    f.write_text("rule a { then tagg \"x\" }\n")
    assert main(["fmt", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}:1:15: syntax_error unexpected `tagg`" in err and "did you mean `tag`?" in err


def test_an_unreadable_file_after_a_good_one_shows_no_other_files_line(tmp_path, capsys):
    good, bad = tmp_path / "a.rules", tmp_path / "b.rules"
    good.write_text(CANONICAL)
    bad.write_bytes(b"\xff\xfe not text")
    assert main(["fmt", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:1:1: bad_encoding" in err and "rule a" not in err
