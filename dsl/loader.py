"""Rule sets from paths: files and folders of ``*.rules``/``*.yaml``/``*.yml``, with the
shipped ``rules/default.rules`` first unless turned off.

This is the one entry point the CLI, the scenario runner and the server use to turn
paths into a compiled RuleSet and its located diagnostics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import ast
from .compiler import DEFAULT_RULES, CompileResult, compile_files
from .errors import Diagnostic, SourceError, Span
from .parser import decode_source, parse

RULE_SUFFIXES = (".rules", ".yaml", ".yml")


@dataclass
class Loaded:
    """What loading a rule set gives: the compile result, the parsed files and their text."""

    result: CompileResult
    files: list = field(default_factory=list)
    sources: dict = field(default_factory=dict)  # path -> text, for carets

    @property
    def ruleset(self):
        return self.result.ruleset

    @property
    def diagnostics(self) -> list:
        return self.result.diagnostics


def expand_paths(paths) -> list[Path]:
    """Files named, and the rule files found in folders named (sorted, recursive)."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in RULE_SUFFIXES))
        else:
            out.append(p)
    return out


def parse_source(text: str, path: str) -> ast.RuleFile:
    """Parse rule text in the form its name says (.yaml/.yml, else .rules)."""
    if path.endswith((".yaml", ".yml")):
        from .yaml_form import load_yaml

        return load_yaml(text, path)
    return parse(text, path)


def read_rule_file(path: Path, sources: dict) -> ast.RuleFile:
    """Read and parse one file, keeping its text in ``sources``; raises SourceError."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SourceError([Diagnostic(Span.point(str(path), 1, 1), "file_error",
                                      f"cannot read file: {e.strerror or e}")]) from None
    text = decode_source(str(path), data)
    sources[str(path)] = text
    return parse_source(text, str(path))


def load_rule_set(paths, defaults: bool = True, texts: dict | None = None) -> Loaded:
    """Parse and compile a rule set. ``texts`` maps extra in-memory names to rule text
    (the admin API uploads text, not files); those come after the paths."""
    files, sources, diagnostics = [], {}, []
    targets = ([DEFAULT_RULES] if defaults else []) + [
        p for p in expand_paths(paths) if not (defaults and _same(p, DEFAULT_RULES))
    ]
    for path in targets:
        try:
            files.append(read_rule_file(path, sources))
        except SourceError as e:
            diagnostics.extend(e.diagnostics)
    for name, text in (texts or {}).items():
        sources[name] = text
        try:
            files.append(parse_source(text, name))
        except SourceError as e:
            diagnostics.extend(e.diagnostics)
    result = compile_files(files)
    if diagnostics:
        result = CompileResult(None, diagnostics + result.diagnostics)
    return Loaded(result, files, sources)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
