"""One exception root for every stage, and the located-error type source errors share.

A source error prints like a compiler's: ``path:line:col: CODE message``, then the
source line and a caret under the spot. Every error raised from rule text goes through
:func:`fail` so none loses its position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Span(NamedTuple):
    """Where a node stands in its file: 1-based line and column, end exclusive.

    A named tuple, not a dataclass: every node has one, and building them was a third of
    turning a parse tree into the AST."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def point(cls, path: str, line: int, column: int) -> "Span":
        return cls(path, line, column, line, column + 1)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


NO_SPAN = Span("<unknown>", 1, 1, 1, 2)


class ChatflowError(Exception):
    """Root of every error chatflow raises on purpose."""

    code = "error"


@dataclass
class Diagnostic:
    """A located finding: an error (check) or a warning (lint)."""

    span: Span
    code: str
    message: str
    severity: str = "error"  # error | warning
    hint: str | None = None

    def render(self, source: str | None = None) -> str:
        """The finding as a user reads it: header line, source line, caret, hint."""
        head = f"{self.span.path}:{self.span.line}:{self.span.column}: {self.code} {self.message}"
        lines = [head]
        if source is not None:
            text_lines = source.split("\n")  # Lark counts lines by \n only
            if 1 <= self.span.line <= len(text_lines):
                src = text_lines[self.span.line - 1].expandtabs(1)
                if len(src) > 200:  # a minified or binary line: show the part around the spot
                    start = max(0, self.span.column - 80)
                    src = src[start:start + 160]
                    col = self.span.column - start
                else:
                    col = self.span.column
                width = 1
                if self.span.end_line == self.span.line:
                    width = max(1, min(self.span.end_column - self.span.column, len(src) - col + 1))
                lines.append(f"  {src}")
                lines.append("  " + " " * (col - 1) + "^" * width)
        if self.hint:
            lines.append(f"  = help: {self.hint}")
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "path": self.span.path,
            "line": self.span.line,
            "column": self.span.column,
            "end_line": self.span.end_line,
            "end_column": self.span.end_column,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


class SourceError(ChatflowError):
    """An error in rule text; carries one or more located diagnostics."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        first = diagnostics[0]
        self.code = first.code
        self.span = first.span
        super().__init__(f"{first.span}: {first.code} {first.message}")


class ParseError(SourceError):
    """Syntax of a .rules file or the structure of a YAML rule file."""


class CompileError(SourceError):
    """A well-formed rule that names or combines things wrongly."""


def fail(span: Span, code: str, message: str, hint: str | None = None, kind=CompileError):
    """Raise a located source error; the one way rule-text errors are raised."""
    raise kind([Diagnostic(span, code, message, "error", hint)])


def did_you_mean(name: str, candidates) -> str | None:
    """The nearest candidate to a misspelled name, as a hint, or None (also for a name
    that is no text: a YAML key such as `true:` or `1:` is close to nothing)."""
    if not isinstance(name, str):
        return None
    import difflib

    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean `{found[0]}`?" if found else None
