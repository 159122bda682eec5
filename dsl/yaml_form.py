"""The YAML form of rule files: load it into the same AST the .rules parser builds, and
print any RuleFile back as canonical YAML.

    YAML text ─> nodes with marks (no aliases, bounded depth, comments kept)
              ─> plain data ─> JSON Schema (schemas/rules.schema.json) ─> AST

Nodes come from libyaml's event stream, composed here without recursion; a file the
fast path is not sure of (an alias, an anchor or tag, deep nesting, a tab, any YAML
error) is read again by PyYAML's pure-Python composer, whose nodes and errors are the
reference, so both paths give the same result.

Plain scalars are read with YAML 1.2's core schema, as editors do (`on:` is the key
"on", not the boolean true). Every problem, from a tab in the indentation to a typo in
an action's key or a `when` that does not parse, is a ParseError located in the YAML
file; no other exception leaves :func:`load_yaml`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import numbers
import re
from bisect import bisect_right
from collections import namedtuple
from pathlib import Path

import jsonschema
import yaml
from yaml.events import (DocumentEndEvent, MappingEndEvent, MappingStartEvent, ScalarEvent, SequenceEndEvent,
                         SequenceStartEvent, StreamEndEvent)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

try:
    from yaml._yaml import CParser as _CParser
except ImportError:  # PyYAML without libyaml: the pure-Python composer reads every file
    _CParser = None

from . import ast
from .comments import IGNORE_RE, attach_comments, ignore_markers
from .errors import Diagnostic, ParseError, SourceError, Span, did_you_mean, fail
from .parser import MAX_SOURCE_BYTES, decode_source, duration_seconds, parse_expression

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "rules.schema.json"
MAX_NESTING = 64  # YAML collections inside each other; rule files need about 8

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_DURATION_TEXT_RE = re.compile(r"[0-9]{1,12}[dhms]([0-9]{1,12}[dhms])*\Z")
_RULE_ID_RE = re.compile(r"(default\.)?[A-Za-z_][A-Za-z0-9_]*\Z")
_HOURS_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:-\s*([A-Za-z_][A-Za-z0-9_]*)\s*)?"
                       r"\s([0-9]{2}:[0-9]{2})\s*-\s*([0-9]{2}:[0-9]{2})\s*\Z")
_BREAKS = "\r\n\x85\u2028\u2029"
_SPACE = " \t" + _BREAKS
_BREAK_RE = re.compile("\r\n|[" + _BREAKS + "]")  # one line break, as PyYAML counts them
_STR = "tag:yaml.org,2002:str"
BARE_ACTIONS = ("unassign", "close", "reopen", "lock", "unlock", "stop")
KEYED_ACTIONS = ("assign", "subscribe", "unsubscribe", "notify", "email", "webhook", "reply", "note", "tag",
                 "untag", "set", "snooze")

_Comment = namedtuple("_Comment", "value line column")  # what comments.py reads of a token


# ---------------------------------------------------------------- reading YAML

class _CoreResolver(yaml.resolver.BaseResolver):
    """YAML 1.2 core schema for plain scalars: no yes/no/on/off booleans, no sexagesimals."""

    yaml_implicit_resolvers: dict = {}


for _tag, _re, _first in (
    ("bool", r"(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
              r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
    ("null", r"(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    _CoreResolver.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_re), list(_first))


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer,
              _CoreResolver):
    """PyYAML's pure-Python composer, made safe for untrusted files: aliases are refused
    (a "billion laughs" document stops at its first `*`), nesting is bounded (the composer
    recurses), and comments are recorded (the scanner drops them). The reference reader:
    _compose_fast must give what this gives, and leaves it every file it is unsure of."""

    def __init__(self, source: str, path: str):
        yaml.reader.Reader.__init__(self, source)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _CoreResolver.__init__(self)
        self.path = path
        self.comments: list[_Comment] = []
        self.depth = 0

    def scan_to_next_token(self):
        # yaml.scanner.Scanner.scan_to_next_token, keeping each comment it skips.
        if self.index == 0 and self.peek() == "\ufeff":
            self.forward()
        found = False
        while not found:
            while self.peek() == " ":
                self.forward()
            if self.peek() == "#":
                mark, start = self.get_mark(), self.pointer
                while self.peek() not in "\0" + _BREAKS:
                    self.forward()
                self.comments.append(_Comment(self.buffer[start:self.pointer], mark.line + 1, mark.column + 1))
            if self.scan_line_break():
                if not self.flow_level:
                    self.allow_simple_key = True
            else:
                found = True

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            fail(_mark_span(self.path, event.start_mark, event.end_mark), "yaml_error",
                 f"aliases (`*{event.anchor}`) are not allowed in rule files",
                 "write the value out where it is needed", kind=ParseError)
        self.depth += 1
        if self.depth > MAX_NESTING:
            fail(_mark_span(self.path, event.start_mark, event.end_mark), "yaml_error",
                 f"YAML nested deeper than {MAX_NESTING} levels", kind=ParseError)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_CORE = _CoreResolver()
_YAML11 = yaml.resolver.Resolver()


def _mark_span(path: str, start, end=None) -> Span:
    if end is None or end.line != start.line or end.column <= start.column:
        return Span.point(path, start.line + 1, start.column + 1)
    return Span(path, start.line + 1, start.column + 1, end.line + 1, end.column + 1)


class _Lines:
    """Character index <-> 1-based (line, column), counting line breaks as PyYAML does."""

    def __init__(self, source: str):
        self.starts = [0] + [m.end() for m in _BREAK_RE.finditer(source)]

    def pos(self, index: int) -> tuple[int, int]:
        line = bisect_right(self.starts, index)
        return line, index - self.starts[line - 1] + 1


def _yaml_error(path: str, lines: _Lines, err: yaml.YAMLError) -> ParseError:
    """A PyYAML error as a located ParseError."""
    if isinstance(err, yaml.reader.ReaderError):
        line, col = lines.pos(err.position)
        ch = err.character if isinstance(err.character, str) else chr(err.character)
        return ParseError([Diagnostic(Span.point(path, line, col), "yaml_error",
                                      f"character {ch!r} (U+{ord(ch):04X}) is not allowed in a YAML file")])
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    span = _mark_span(path, mark) if mark is not None else Span.point(path, 1, 1)
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or "not valid YAML"
    context = getattr(err, "context", None)
    hint = context if context and context != problem else None
    if "'\\t'" in problem:
        problem, hint = "a tab in YAML indentation", "indent with spaces"
    return ParseError([Diagnostic(span, "yaml_error", problem, hint=hint)])


def _compose(source: str, path: str, lines: _Lines):
    """(root node or None for an empty document, comments)."""
    fast = _compose_fast(source, lines)
    if fast is not None:
        return fast
    loader = None
    try:
        loader = _Loader(source, path)  # the reader checks the characters here already
        return loader.get_single_node(), loader.comments
    except yaml.YAMLError as e:
        raise _yaml_error(path, lines, e) from None
    finally:
        if loader is not None:
            loader.dispose()


# Files the fast path leaves to _Loader: a character PyYAML refuses (its error names
# it), a tab (libyaml takes some that PyYAML refuses), a byte order mark, a line break
# other than \n and \r\n (fewer ways for the two to count lines apart), a directive
# line (`%YAML`, `%TAG`: a `#` there is no comment).
_SLOW_PATH_RE = re.compile("[^\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd"
                           "\U00010000-\U0010ffff]|\r(?!\n)|^%", re.MULTILINE)
_COMMENT_RE = re.compile(r"#[^\r\n]*")
# A block scalar's header line as PyYAML's scanner takes it.
_BLOCK_HEADER_RE = re.compile(r"[|>](?:[+-][1-9]?|[1-9][+-]?)?(?: +(?:#[^\r\n]*)?)?(?:\r?\n|\Z)")
_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"


def _compose_fast(source: str, lines: _Lines):
    """(root, comments) as _Loader composes them, from libyaml's events; None when
    _Loader must read the file: for anything the two might read apart, and for every
    error, so that errors come out exactly as PyYAML words and places them."""
    if _CParser is None or _SLOW_PATH_RE.search(source):
        return None
    parser = _CParser(source)
    eof = None
    if source and source[-1] not in _BREAKS:
        # libyaml puts a line break after the last line when the text ends without one;
        # PyYAML marks the end where it is.
        line, column = lines.pos(len(source))
        eof = yaml.error.Mark("<unicode string>", len(source), line - 1, column - 1, None, None)
    try:
        composed = _compose_events(parser.get_event, source, eof)
    except yaml.YAMLError:
        return None
    finally:
        parser.dispose()
    if composed is None:
        return None
    root, bounds = composed
    return root, _comments_between(source, bounds, lines)


def _compose_events(get_event, source: str, eof=None):
    """(root or None, [start, end, start, end, ...] character indexes of every scalar,
    in file order), composed without recursion; None for what _Loader must read.
    ``eof``: the mark to use for marks at the end of the text."""
    get_event()  # StreamStartEvent
    event = get_event()
    if type(event) is StreamEndEvent:
        return None, []
    if event.version is not None or event.tags:  # a %YAML or %TAG directive
        return None
    bounds: list = []
    resolved: dict = {}  # plain scalar text -> its tag (a file repeats its keys)
    resolve = _CORE.resolve
    stack: list = []  # open collections, innermost last
    keys: list = []  # for each open collection: its pending key node, or None
    flow = 0  # how many open collections are flow collections
    root = None
    while True:
        event = get_event()
        kind = type(event)
        if kind is MappingEndEvent or kind is SequenceEndEvent:
            node = stack.pop()
            keys.pop()
            node.end_mark = event.end_mark
            if eof is not None and node.end_mark.index == eof.index:
                node.end_mark = eof
            if node.flow_style:
                flow -= 1
            if not stack:
                break
            continue
        # A new node: aliases, anchors and tags are left to _Loader (it refuses aliases
        # with a located error, finds duplicate anchors, words tag errors); so is
        # nesting past the bound, where _Loader stops with its error.
        if event.anchor is not None or len(stack) >= MAX_NESTING:
            return None
        if kind is ScalarEvent:
            if event.tag is not None:
                return None
            value, start, end = event.value, event.start_mark, event.end_mark
            if eof is not None and end.index == eof.index:
                start, end = (eof if start.index == eof.index else start), eof
            if event.implicit[0]:
                if flow and (not value or "?" in value):
                    # libyaml marks an empty value in a flow collection elsewhere, and
                    # takes a `?` inside a plain scalar there, which PyYAML refuses
                    return None
                tag = resolved.get(value)
                if tag is None:
                    tag = resolved[value] = resolve(ScalarNode, value, (True, False))
                node = ScalarNode(tag, value, start, end)
            else:
                style = event.style
                if (style == "|" or style == ">") and not _BLOCK_HEADER_RE.match(source, start.index):
                    return None  # libyaml takes headers PyYAML refuses, such as `|#`
                node = ScalarNode(_STR, value, start, end, style=style)
            bounds.append(start.index)
            bounds.append(end.index)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if event.tag is not None:
                return None
            cls = MappingNode if kind is MappingStartEvent else SequenceNode
            start, flow_style = event.start_mark, event.flow_style
            if eof is not None and start.index == eof.index:
                start = eof
            if (cls is SequenceNode and not flow_style and stack and type(stack[-1]) is MappingNode
                    and start.column == stack[-1].start_mark.column):
                flow_style = None  # `key:` then `- item` at the key's indentation: PyYAML's indentless sequence
            node = cls(_MAP if cls is MappingNode else _SEQ, [], start, None, flow_style=flow_style)
        else:  # an alias
            return None
        if stack:
            parent = stack[-1]
            if type(parent) is SequenceNode:
                parent.value.append(node)
            elif keys[-1] is None:
                keys[-1] = node
            else:
                parent.value.append((keys[-1], node))
                keys[-1] = None
        else:
            root = node
        if kind is ScalarEvent:
            if not stack:
                break
        else:
            stack.append(node)
            keys.append(None)
            if node.flow_style:
                flow += 1
    if type(get_event()) is not DocumentEndEvent or type(get_event()) is not StreamEndEvent:
        return None  # a second document: _Loader says where
    return root, bounds


def _comments_between(source: str, bounds: list, lines: _Lines) -> list:
    """The comments PyYAML's scanner skips: a `#` outside every scalar starts one, to
    the end of its line (inside a scalar, including a block scalar's header line, it
    is text or dropped, as _Loader does)."""
    out = []
    find = source.find
    i = find("#")
    while i >= 0:
        k = bisect_right(bounds, i)
        if k & 1:  # within [start, end) of a scalar
            i = find("#", bounds[k])
            continue
        text = _COMMENT_RE.match(source, i).group()
        line, column = lines.pos(i)
        out.append(_Comment(text, line, column))
        i = find("#", i + len(text))
    return out


# ---------------------------------------------------------------- nodes to data

_SCALAR_TAGS = {"tag:yaml.org,2002:" + t for t in ("str", "int", "bool", "null", "float")}


def _scalar_value(path: str, node: ScalarNode):
    tag, text = node.tag, node.value
    if tag == _STR:
        return text
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return text.lower() == "true"
    try:
        if tag == "tag:yaml.org,2002:int":
            if len(text) > 1000:
                raise ValueError("too long")
            digits = text.lstrip("+-")
            sign = -1 if text.startswith("-") else 1
            if digits[:2] in ("0o", "0x"):
                return sign * int(digits[2:], 8 if digits[1] == "o" else 16)
            return sign * int(digits, 10)
        if tag == "tag:yaml.org,2002:float":
            low = text.lower().lstrip("+")
            return float(low.replace(".inf", "inf").replace(".nan", "nan"))
    except ValueError:
        problem = "is too long for a number" if len(text) > 1000 else "is not a valid number"
        fail(_node_span(path, node), "schema_error", f"`{_shown(text)}` {problem}", kind=ParseError)
    fail(_node_span(path, node), "schema_error", f"YAML tag `{_tag_name(tag)}` is not used in rule files",
         "remove the tag", kind=ParseError)


def _shown(text: str) -> str:
    """A value as a message quotes it: escapes visible, long ones cut."""
    text = json.dumps(text, ensure_ascii=False)[1:-1]
    return text if len(text) <= 40 else text[:37] + "..."


def _tag_name(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


def _node_span(path: str, node) -> Span:
    return _mark_span(path, node.start_mark, node.end_mark)


def _to_data(path: str, node):
    """Plain data for the schema; refuses duplicate or non-text keys and unknown tags."""
    if isinstance(node, ScalarNode):
        return _scalar_value(path, node)
    if isinstance(node, SequenceNode):
        if node.tag != "tag:yaml.org,2002:seq":
            fail(_node_span(path, node), "schema_error", f"YAML tag `{_tag_name(node.tag)}` is not used in rule files",
                 kind=ParseError)
        return [_to_data(path, item) for item in node.value]
    if node.tag != "tag:yaml.org,2002:map":
        fail(_node_span(path, node), "schema_error", f"YAML tag `{_tag_name(node.tag)}` is not used in rule files",
             kind=ParseError)
    out, first = {}, {}
    for key, value in node.value:
        if not isinstance(key, ScalarNode):
            fail(_node_span(path, key), "schema_error", "a key must be plain text, not a list or mapping",
                 kind=ParseError)
        if key.value in first:
            fail(_node_span(path, key), "schema_error", f"duplicate key `{key.value}`",
                 f"first written at line {first[key.value].start_mark.line + 1}", kind=ParseError)
        first[key.value] = key
        # A key is its text: `on:` is the key "on" whatever a resolver makes of it.
        out[key.value] = _to_data(path, value)
    return out


def _pairs(node: MappingNode) -> dict:
    return {k.value: (k, v) for k, v in node.value}


def _node_at(root, path):
    """(node, key node) of the value at a JSON path; the key is None for list items."""
    node, key = root, None
    for p in path:
        if isinstance(node, MappingNode):
            key, node = _pairs(node)[p]
        elif isinstance(node, SequenceNode):
            key, node = None, node.value[p]
    return node, key


# ---------------------------------------------------------------- the schema

@functools.lru_cache(maxsize=1)
def schema() -> dict:
    """The JSON Schema of YAML rule files (schemas/rules.schema.json)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _validator():
    jsonschema.Draft202012Validator.check_schema(schema())
    return jsonschema.Draft202012Validator(schema())


# ---------------------------------------------------------------- a quick yes from the schema

class _Unsupported(Exception):
    """The schema uses a keyword the quick check does not know."""


_ANNOTATIONS = frozenset({"title", "description", "examples", "errorMessage", "patternErrorMessage", "$comment",
                          "default", "deprecated", "readOnly", "writeOnly"})
_IS_TYPE = {  # as jsonschema's draft 2020-12 type checker says
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "null": lambda x: x is None,
    "boolean": lambda x: isinstance(x, bool),
    "number": lambda x: isinstance(x, numbers.Number) and not isinstance(x, bool),
    "integer": lambda x: (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, float) and x.is_integer()),
}


def _json_equal(x, scalar) -> bool:
    """jsonschema's equality of an instance and a JSON scalar: `true` is not 1."""
    if x is scalar:
        return True
    if isinstance(x, str) or isinstance(scalar, str):
        return x == scalar
    if isinstance(x, bool) or isinstance(scalar, bool):
        return False
    return x == scalar


def _check_all(checks):
    if len(checks) == 1:
        return checks[0]

    def check(x):
        for c in checks:
            if not c(x):
                return False
        return True
    return check


def _compile_check(sub, defs: dict, done: dict):
    """A function x -> bool that says what jsonschema's is_valid says of ``sub``."""
    if sub is True or sub is False:
        return lambda x, ok=sub: ok
    if not isinstance(sub, dict):
        raise _Unsupported(repr(sub))
    checks = []
    for kw, arg in sub.items():
        if kw in _ANNOTATIONS or kw in ("then", "else"):
            continue
        if kw == "$ref":
            name = arg[len("#/$defs/"):]
            if not arg.startswith("#/$defs/") or name not in defs or "/" in name or "~" in name:
                raise _Unsupported(arg)
            if name not in done:
                done[name] = None  # a reference back to it finds it at check time
                done[name] = _compile_check(defs[name], defs, done)
            checks.append(lambda x, name=name: done[name](x))
        elif kw == "type":
            names = [arg] if isinstance(arg, str) else arg
            if not all(t in _IS_TYPE for t in names):
                raise _Unsupported(repr(arg))
            tests = [_IS_TYPE[t] for t in names]
            checks.append(tests[0] if len(tests) == 1 else lambda x, tests=tests: any(t(x) for t in tests))
        elif kw == "properties":
            props = {k: _compile_check(v, defs, done) for k, v in arg.items()}

            def check(x, props=props):
                if isinstance(x, dict):
                    for k, v in x.items():
                        f = props.get(k)
                        if f is not None and not f(v):
                            return False
                return True
            checks.append(check)
        elif kw == "additionalProperties":
            if "patternProperties" in sub:
                raise _Unsupported(kw)
            known = frozenset(sub.get("properties", ()))
            if arg is False:
                checks.append(lambda x, known=known: not isinstance(x, dict) or known.issuperset(x))
            else:
                extra = _compile_check(arg, defs, done)
                checks.append(lambda x, known=known, extra=extra: not isinstance(x, dict)
                              or all(extra(v) for k, v in x.items() if k not in known))
        elif kw == "required":
            checks.append(lambda x, req=tuple(arg): not isinstance(x, dict) or all(k in x for k in req))
        elif kw == "items":
            if "prefixItems" in sub:
                raise _Unsupported(kw)
            item = _compile_check(arg, defs, done)
            checks.append(lambda x, item=item: not isinstance(x, list) or all(item(i) for i in x))
        elif kw in ("enum", "const"):
            values = arg if kw == "enum" else [arg]
            if not all(v is None or isinstance(v, (str, bool, int, float)) for v in values):
                raise _Unsupported(kw)
            if all(isinstance(v, str) for v in values):
                checks.append(lambda x, texts=frozenset(values): isinstance(x, str) and x in texts)
            else:
                checks.append(lambda x, values=values: any(_json_equal(x, v) for v in values))
        elif kw == "pattern":
            checks.append(lambda x, rx=re.compile(arg): not isinstance(x, str) or rx.search(x) is not None)
        elif kw == "minimum":
            checks.append(lambda x, m=arg: not _IS_TYPE["number"](x) or not x < m)
        elif kw == "minItems":
            checks.append(lambda x, n=arg: not isinstance(x, list) or len(x) >= n)
        elif kw == "minProperties":
            checks.append(lambda x, n=arg: not isinstance(x, dict) or len(x) >= n)
        elif kw == "maxProperties":
            checks.append(lambda x, n=arg: not isinstance(x, dict) or len(x) <= n)
        elif kw == "not":
            checks.append(lambda x, f=_compile_check(arg, defs, done): not f(x))
        elif kw == "if":
            test = _compile_check(arg, defs, done)
            then = _compile_check(sub.get("then", True), defs, done)
            else_ = _compile_check(sub.get("else", True), defs, done)
            checks.append(lambda x, test=test, then=then, else_=else_: then(x) if test(x) else else_(x))
        else:
            raise _Unsupported(kw)
    return _check_all(checks) if checks else (lambda x: True)


@functools.lru_cache(maxsize=1)
def _quick_check():
    """x -> True when jsonschema would find nothing wrong with x, compiled from the
    schema (about ten times quicker than asking jsonschema); None if the schema uses a
    keyword this does not know. A False sends the file to jsonschema for its findings."""
    top = dict(schema())
    for kw in ("$schema", "$id", "$defs"):
        top.pop(kw, None)
    try:
        return _compile_check(top, schema().get("$defs", {}), {})
    except _Unsupported:
        return None


_TYPE_NAMES = {"string": "text", "integer": "a whole number", "array": "a list", "object": "a mapping",
               "boolean": "`true` or `false`", "null": "empty"}


def _describe(value) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text `{_shown(value)}`"
    return "a list" if isinstance(value, list) else "a mapping"


def _what(path, instance) -> str:
    """What a user calls the value at ``path``, for messages."""
    if not path:
        return "the file"
    last = path[-1]
    if isinstance(last, str):
        return f"`{last}`"
    parent = path[-2] if len(path) > 1 else None
    if parent == "rules":
        if isinstance(instance, dict):
            return "disable" if "disable" in instance else "override" if "override" in instance else "rule"
        return "rule"
    return {"then": "action", "schedules": "schedule", "hours": "hours line", "slas": "policy"}.get(parent, "item")


class _Source:
    """Positions in one YAML file: node spans, and where each character of a scalar's
    value stands in the file (so errors inside a `when` point at the right column)."""

    def __init__(self, source: str, path: str):
        self.source, self.path = source, path
        self.lines = _Lines(source)

    def at(self, index: int) -> tuple[int, int]:
        return self.lines.pos(index)

    def end_index(self, node) -> int:
        """Index just past the node's last character (block collections end at their
        last child, not at the next token as PyYAML's marks say)."""
        if isinstance(node, ScalarNode):
            i = node.end_mark.index
            if node.style in ("|", ">"):
                while i > node.start_mark.index and self.source[i - 1] in _SPACE:
                    i -= 1
            return i
        if node.flow_style or not node.value:
            return node.end_mark.index if node.flow_style else node.start_mark.index
        last = node.value[-1]
        return self.end_index(last[1] if isinstance(node, MappingNode) else last)

    def span(self, node, end_node=None) -> Span:
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        end_line, end_col = self.at(self.end_index(end_node if end_node is not None else node))
        return Span(self.path, line, col, end_line, end_col)

    def head_span(self, node) -> Span:
        """The first line of a node: where a caret about the whole node goes."""
        first = node.value[0][0] if isinstance(node, MappingNode) and node.value else node
        return self.span(node, first) if first is not node else self.span(node)

    def text_offsets(self, node: ScalarNode) -> list[int]:
        """For each character of the scalar's value (and one past its end), its index in
        the file. Exact for one-line scalars with escapes and for literal blocks; when the
        characters cannot be lined up, every one maps to the scalar's start."""
        src, value, style = self.source, node.value, node.style
        start, end = node.start_mark.index, node.end_mark.index
        if style in ('"', "'"):
            start, end = start + 1, end - 1
        elif style in ("|", ">"):
            while start < end and src[start] not in _BREAKS:
                start += 1
            start += 2 if src.startswith("\r\n", start) else 1
        out, r = [], start
        for ch in value:
            if ch not in " \t\n":  # folded line breaks and indentation stand between characters
                while r < end and src[r] in _SPACE and src[r] != ch:
                    r += 1
            while style == '"' and r + 1 < end and src[r] == "\\" and src[r + 1] in _BREAKS:
                r += 2  # an escaped line break joins the lines
                while r < end and src[r] in _SPACE:
                    r += 1
            if r >= end:
                return [start] * (len(value) + 1)
            if style == '"' and src[r] == "\\":
                out.append(r)
                r += {"x": 4, "u": 6, "U": 10}.get(src[r + 1] if r + 1 < end else "", 2)
            elif style == "'" and ch == "'" and src.startswith("''", r):
                out.append(r)
                r += 2
            elif src[r] == ch or (ch in " \t\n" and src[r] in _SPACE):
                out.append(r)
                r += 1
            else:
                return [start] * (len(value) + 1)
        out.append(min(r, max(end, start)))
        return out

    def mapper(self, node: ScalarNode, text: str):
        """A function from a Span inside ``text`` (as parsed at line 1, column 1) to the
        Span in the file."""
        offsets = self.text_offsets(node)
        starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

        def place(line, col):
            off = starts[min(line, len(starts)) - 1] + col - 1
            return self.at(offsets[max(0, min(off, len(offsets) - 1))])

        def remap(span: Span) -> Span:
            return Span(self.path, *place(span.line, span.column), *place(span.end_line, span.end_column))

        return offsets, remap


def _respan(node, remap):
    """The expression tree with every span passed through ``remap``."""
    if isinstance(node, tuple):
        return tuple(_respan(n, remap) for n in node)
    if not dataclasses.is_dataclass(node):
        return node
    changes = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, Span):
            changes[f.name] = remap(value)
        elif isinstance(value, tuple) or dataclasses.is_dataclass(value):
            changes[f.name] = _respan(value, remap)
    return dataclasses.replace(node, **changes)


def _schema_diagnostic(src: _Source, root, err) -> tuple:
    """(sort position, Diagnostic) for one jsonschema error, worded for a YAML author."""
    path = list(err.absolute_path)
    node, _ = _node_at(root, path) if root is not None else (None, None)
    inst, kw = err.instance, err.validator
    sub = err.schema if isinstance(err.schema, dict) else {}
    custom = sub.get("errorMessage")
    what = _what(path, inst)
    span = src.span(node) if node is not None else Span.point(src.path, 1, 1)
    hint = None
    if kw == "additionalProperties":
        allowed = list(sub.get("properties", {}))
        extra = next(k for k in inst if k not in allowed)
        span = src.span(_pairs(node)[extra][0])
        near = did_you_mean(extra, allowed)
        message = f"unknown key `{extra}` in {what}" + (f"; {near}" if near else "")
        hint = None if near else "the keys are " + ", ".join(f"`{a}`" for a in allowed)
    elif kw == "required":
        missing = next(k for k in err.validator_value if k not in inst)
        message = custom or f"{what} needs `{missing}`"
        span = src.head_span(node)
        # reported after other findings in the same mapping: a misspelled key explains it
        return (*src.at(src.end_index(node)), 1), Diagnostic(span, "schema_error", message)
    elif kw == "enum" and path and path[-2:-1] == ["then"]:
        if inst in KEYED_ACTIONS:
            message = f"`{inst}` needs a value, such as `- {inst}: ...`"
        else:
            near = did_you_mean(str(inst), BARE_ACTIONS + KEYED_ACTIONS)
            message = f"unknown action `{inst}`" + (f"; {near}" if near else "")
            hint = None if near else "actions: " + ", ".join(BARE_ACTIONS + KEYED_ACTIONS)
    elif custom:
        message = custom
    elif kw == "type":
        expected = err.validator_value
        expected = expected[0] if isinstance(expected, list) else expected
        message = f"{what} must be {_TYPE_NAMES.get(expected, expected)}, not {_describe(inst)}"
        if expected == "string" and (inst is None or isinstance(inst, (bool, int, float))):
            hint = "put the value in quotes to make it text"
    elif kw == "enum":
        choices = [c for c in err.validator_value if isinstance(c, str)]
        near = did_you_mean(str(inst), choices) if isinstance(inst, str) else None
        message = f"{what} must be one of " + ", ".join(f"`{c}`" for c in choices) + f", not {_describe(inst)}"
        hint = near
    elif kw == "const":
        message = f"{what} must be `{err.validator_value}`"
    elif kw == "pattern":
        message = f"`{_shown(str(inst))}`: " + sub.get("patternErrorMessage", f"does not match `{err.validator_value}`")
    elif kw == "minimum":
        message = f"{what} must be {err.validator_value} or more, not {inst}"
    elif kw == "not":
        message = f"{what} is not allowed here"
    else:
        message = err.message
    return (span.line, span.column, 0), Diagnostic(span, "schema_error", message, hint=hint)


def _validate(src: _Source, root, data) -> None:
    quick = _quick_check()
    if quick is not None and quick(data):
        return
    found = {}
    for err in _validator().iter_errors(data):
        pos, diag = _schema_diagnostic(src, root, err)
        found.setdefault((diag.span, diag.message), (pos, diag))
    if found:
        raise ParseError([d for _, d in sorted(found.values(), key=lambda pd: pd[0])])


# ---------------------------------------------------------------- data to AST

class _Build:
    """Validated YAML nodes to AST nodes, with spans in the YAML file."""

    def __init__(self, src: _Source):
        self.src = src
        self.path = src.path
        self.parsed: dict = {}  # condition text -> (expr, line, column) where first parsed

    def span(self, node, end_node=None) -> Span:
        return self.src.span(node, end_node)

    def name(self, node, pattern, what: str) -> str:
        # The schema's patterns also let a trailing newline through (Python's `$`).
        if not pattern.match(node.value):
            fail(self.span(node), "schema_error", f"`{_shown(node.value)}` is not a valid {what}",
                 kind=ParseError)
        return node.value

    def duration(self, node) -> ast.Duration:
        """A duration scalar (`2h`), located like one in rule text when it is bad."""
        text = node.value
        seconds = duration_seconds(text) if _DURATION_TEXT_RE.match(text) else None
        if seconds is None:
            fail(self.span(node), "bad_duration", f"bad duration `{_shown(text)}`",
                 "units go d, h, m, s in that order, each at most once (`1h30m`)", kind=ParseError)
        if seconds <= 0:
            fail(self.span(node), "bad_duration", f"duration `{text}` must be above zero", kind=ParseError)
        return ast.Duration(seconds, text, self.span(node))

    def item(self, node: MappingNode):
        pairs = _pairs(node)
        if "disable" in pairs:
            return ast.Disable(self.name(pairs["disable"][1], _NAME_RE, "rule id"), self.span(node))
        override = "override" in pairs
        key, id_node = pairs["override" if override else "id"]
        rule_id = self.name(id_node, _NAME_RE if override else _RULE_ID_RE, "rule id")
        clause_spans, on, on_span, when, priority = [], None, self.span(node), None, None
        priority_span = on_span
        for clause in ("on", "when", "then", "priority"):
            if clause in pairs:
                clause_spans.append((clause, self.span(*pairs[clause])))
        if "on" in pairs:
            on, on_span = self.name(pairs["on"][1], _NAME_RE, "event name"), self.span(pairs["on"][1])
        if "when" in pairs:
            when = self.condition(pairs["when"][1], "`when`")
        if "priority" in pairs:
            priority, priority_span = int(_scalar_value(self.path, pairs["priority"][1])), self.span(*pairs["priority"])
        title = pairs["title"][1].value if "title" in pairs else None
        actions = tuple(self.action(n) for n in pairs["then"][1].value)
        clause_spans.sort(key=lambda cs: (cs[1].line, cs[1].column))
        return ast.Rule(rule_id, title, on, when, actions, priority, override, self.span(node),
                        self.span(id_node), on_span, priority_span, tuple(clause_spans))

    def condition(self, node: ScalarNode, what: str, start: str = "expr"):
        text = node.value
        if not text.strip():
            fail(self.span(node), "schema_error", f"{what} is empty", "write a condition such as `chat.assignee is none`",
                 kind=ParseError)
        style = node.style
        if style is None or style == "'" or style == '"':
            quote = 0 if style is None else 1
            begin = node.start_mark.index + quote
            if node.end_mark.index - quote - begin == len(text) and self.src.source.startswith(text, begin):
                # one line standing as written (what text_offsets finds, found quicker)
                return self._parse_at(text, *self.src.at(begin), start)
        offsets, remap = self.src.mapper(node, text)
        if all(o == offsets[0] + i for i, o in enumerate(offsets)):
            # the text stands as written (no escapes, no folding): parse it where it stands
            line, col = self.src.at(offsets[0])
            return self._parse(text, line, col, None, start)
        return _respan(self._parse(text, 1, 1, remap, start), remap)

    def _parse_at(self, text: str, line: int, col: int, start: str = "expr"):
        """``text`` parsed where it stands; a text the file repeats (`value: chat.page_url`)
        is parsed once and its spans moved."""
        known = self.parsed.get((start, text))
        if known is None:
            expr = self._parse(text, line, col, None, start)
            if line > 1 and "\n" not in text:  # one line, and no span is the parser's placeholder (1, 1)
                self.parsed[(start, text)] = (expr, line, col)
            return expr
        expr, first_line, first_col = known
        down, right = line - first_line, col - first_col

        def move(span: Span) -> Span:
            if span.line != first_line:
                return span
            return Span(span.path, line, span.column + right, span.end_line + down, span.end_column + right)
        return _respan(expr, move)

    def _parse(self, text, line, col, remap, start="expr"):
        try:
            return parse_expression(text, self.path, line, col, start)
        except SourceError as e:
            diags = [dataclasses.replace(
                d, span=remap(d.span) if remap else d.span,
                message=d.message.replace("end of file", "end of the condition")) for d in e.diagnostics]
            raise ParseError(diags) from None

    def target(self, node):
        if isinstance(node, ScalarNode):
            return ast.Target(node.value, None, self.span(node))
        (key, value), = node.value
        return ast.Target(key.value, value.value, self.span(node))

    def action(self, node) -> ast.Action:
        span = self.span(node)
        if isinstance(node, ScalarNode):
            return ast.Action(node.value, span)
        (key, value), = node.value
        kind = key.value
        if kind in BARE_ACTIONS:
            return ast.Action(kind, span)
        if kind in ("reply", "note", "tag", "untag", "webhook") and isinstance(value, ScalarNode):
            field = {"tag": "tag", "untag": "tag", "webhook": "webhook"}.get(kind, "text")
            return ast.Action(kind, span, **{field: value.value})
        opts = _pairs(value) if isinstance(value, MappingNode) else {}
        text = {k: v.value for k, (_, v) in opts.items() if isinstance(v, ScalarNode)}
        if kind == "assign":
            if "agent" in opts:
                return ast.Action("assign_agent", span, agent=text["agent"])
            strategy = self.name(opts["by"][1], _NAME_RE, "strategy") if "by" in opts else None
            return ast.Action("assign_department", span, department=text["department"], strategy=strategy)
        if kind in ("subscribe", "unsubscribe"):
            return ast.Action(kind, span, target=self.target(value))
        if kind == "notify":
            order = tuple("except_" if k == "except" else k for k in opts if k != "to")
            kw = {("except_" if k == "except" else k): text[k] for k in opts if k != "to"}
            return ast.Action("notify", span, target=self.target(opts["to"][1]), order=order, **kw)
        if kind == "email":
            if "transcript" in opts:
                return ast.Action("email_transcript", span,
                                  targets=tuple(self.target(n) for n in opts["transcript"][1].value))
            return ast.Action("email", span, target=self.target(opts["to"][1]), template=text["template"])
        if kind == "reply":
            return ast.Action("reply_article", span, article=text["article"])
        if kind == "snooze":
            if "for" in opts:
                return ast.Action("snooze", span, duration=self.duration(opts["for"][1]))
            return ast.Action("snooze", span, schedule=text["until_next"])
        # set
        if "department" in opts:
            return ast.Action("set_department", span, department=text["department"])
        if "status" in opts:
            return ast.Action("set_status", span, status=self.name(opts["status"][1], _NAME_RE, "status"))
        if "priority" in opts:
            return ast.Action("set_priority", span, priority=_scalar_value(self.path, opts["priority"][1]))
        value_node = opts["value"][1]
        value = _scalar_value(self.path, value_node)
        if isinstance(value, str):
            expr = self.condition(value_node, "`value`", start="set_value")
        else:
            kind_name = "none" if value is None else "bool" if isinstance(value, bool) else "int"
            expr = ast.Literal(value, kind_name, self.span(value_node))
        return ast.Action("set_field", span, field_name=self.name(opts["field"][1], _NAME_RE, "field name"),
                          value=expr)

    def routing(self, key_node, node: MappingNode) -> ast.Routing:
        lines = []
        for key, value in node.value:
            span = self.span(key, value)
            if key.value == "backlog":
                if isinstance(value, ScalarNode) and _scalar_value(self.path, value) is False:
                    continue
                idle = None
                if isinstance(value, MappingNode):
                    idle = self.duration(_pairs(value)["skip_idle_over"][1])
                lines.append(ast.RoutingLine("backlog", idle=idle, span=span))
            elif key.value == "at_most":
                opts = _pairs(value)
                lines.append(ast.RoutingLine("limit", count=_scalar_value(self.path, opts["chats"][1]),
                                             per=self.duration(opts["per"][1]), span=span))
            else:  # capacity
                for channel, count in value.value:
                    lines.append(ast.RoutingLine("capacity", count=_scalar_value(self.path, count),
                                                 channel=channel.value, span=self.span(channel, count),
                                                 channel_span=self.span(channel)))
        return ast.Routing(tuple(lines), self.span(key_node, node))

    def duration(self, node: ScalarNode) -> ast.Duration:
        from .parser import duration_seconds

        seconds = duration_seconds(node.value) if len(node.value) <= 24 else None
        if not seconds:
            fail(self.span(node), "bad_duration", f"bad duration `{_shown(node.value)}`",
                 "units go d, h, m, s in that order, each at most once, above zero (`1h30m`)", kind=ParseError)
        return ast.Duration(seconds, node.value, self.span(node))

    def schedule(self, node: MappingNode) -> ast.Schedule:
        pairs = _pairs(node)
        id_node = pairs["id"][1]
        tz_node = pairs["timezone"][1] if "timezone" in pairs else id_node
        lines = tuple(self.hours(n) for n in pairs["hours"][1].value)
        return ast.Schedule(self.name(id_node, _NAME_RE, "schedule id"),
                            pairs["title"][1].value if "title" in pairs else None,
                            tz_node.value if "timezone" in pairs else "UTC", lines, self.span(node),
                            self.span(id_node), self.span(tz_node))

    def sla(self, node: MappingNode) -> ast.Sla:
        pairs = _pairs(node)
        id_node = pairs["id"][1]
        when = self.condition(pairs["when"][1], "`when`") if "when" in pairs else None
        within, within_span = None, self.span(id_node)
        if "within" in pairs:
            within, within_span = self.name(pairs["within"][1], _NAME_RE, "schedule name"), self.span(pairs["within"][1])
        lines, clause_spans = [], []
        for key, value in node.value:
            name = key.value
            if name in ("when", "within"):
                clause_spans.append((name, self.span(key, value)))
            elif name in ast.SLA_TARGETS or name == "due_soon":
                seconds = duration_seconds(value.value) if len(value.value) <= 24 else None
                if not seconds:
                    fail(self.span(value), "bad_duration", f"bad duration `{_shown(value.value)}`",
                         "units go d, h, m, s in that order, each at most once (`1h30m`), above zero", kind=ParseError)
                line = ast.SlaTarget(name, ast.Duration(seconds, value.value, self.span(value)), self.span(key, value))
                lines.append(line)
                clause_spans.append(("line", line.span))
        if not any(line.name in ast.SLA_TARGETS for line in lines):
            fail(self.span(id_node), "bad_sla", f"policy `{id_node.value}` sets no target",
                 "add `first_response: 1h` (" + ", ".join(ast.SLA_TARGETS) + ")", kind=ParseError)
        return ast.Sla(self.name(id_node, _NAME_RE, "policy id"), pairs["title"][1].value if "title" in pairs else None,
                       when, tuple(lines), within, self.span(node), self.span(id_node),
                       self.span(*pairs["when"]) if "when" in pairs else self.span(id_node), within_span,
                       tuple(clause_spans))

    def hours(self, node: ScalarNode) -> ast.ScheduleLine:
        m = _HOURS_RE.match(node.value)
        offsets, _ = self.src.mapper(node, node.value)

        def at(group):
            (line, col), (end_line, end_col) = self.src.at(offsets[m.start(group)]), self.src.at(offsets[m.end(group)])
            return Span(self.path, line, col, end_line, end_col)

        if not m:
            fail(self.span(node), "schema_error", f"`{_shown(node.value)}` is not an hours line",
                 "write `DAY[-DAY] HH:MM-HH:MM`, such as `mon-fri 09:00-18:00`", kind=ParseError)
        days = []
        for g in (1, 2):
            day = m.group(g)
            if day is None:
                continue
            if day not in ast.DAYS:
                fail(at(g), "bad_schedule", f"unknown day `{day}`",
                     did_you_mean(day, ast.DAYS) or "days are mon tue wed thu fri sat sun", kind=ParseError)
            days.append(ast.DAYS.index(day))
        minutes = []
        for g in (3, 4):
            hh, mm = int(m.group(g)[:2]), int(m.group(g)[3:])
            if mm > 59 or hh > 24 or (hh == 24 and mm):
                fail(at(g), "bad_schedule", f"bad time `{m.group(g)}`", "times go 00:00 to 24:00", kind=ParseError)
            minutes.append(hh * 60 + mm)
        if minutes[0] == minutes[1]:
            fail(at(4), "bad_schedule", "a time range must not be empty", kind=ParseError)
        if minutes[0] == 24 * 60:
            fail(at(3), "bad_schedule", "a range cannot start at 24:00", kind=ParseError)
        return ast.ScheduleLine(days[0], days[-1], minutes[0], minutes[1], self.span(node))


def _extend_over_comments(src: _Source, item, node, comments, limit: int):
    """A rule's or schedule's span, stretched over the comments after its last line that
    are indented at least as deep as its keys (YAML has no closing brace to say where a
    rule ends; indentation does), so they stay the item's end comments. ``comments`` are
    in file order (the scanner's)."""
    end_line, end_col = item.span.end_line, item.span.end_column
    limit_line, limit_col = src.at(limit)
    first = bisect_right(comments, (end_line, end_col), key=lambda c: (c.line, c.column))
    for c in comments[first:]:
        if (c.line, c.column) >= (limit_line, limit_col):
            break
        if c.line != end_line and c.column < node.start_mark.column + 1:
            break
        end_line, end_col = c.line, c.column + len(c.value)
    if (end_line, end_col) == (item.span.end_line, item.span.end_column):
        return item
    span = item.span._replace(end_line=end_line, end_column=end_col)
    return dataclasses.replace(item, span=span)


def _load(source: str, path: str) -> ast.RuleFile:
    if source.startswith("\ufeff"):
        source = source[1:]
    if len(source) > MAX_SOURCE_BYTES or len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        fail(Span.point(path, 1, 1), "file_too_large",
             f"file is over {MAX_SOURCE_BYTES} bytes, the limit for rule files", kind=ParseError)
    src = _Source(source, path)
    root, comments = _compose(source, path, src.lines)
    data = _to_data(path, root) if root is not None else None
    if data is not None:
        _validate(src, root, data)
    items, schedules, slas, placed = [], [], [], []
    build = _Build(src)
    if data:
        pairs = _pairs(root)
        section_starts = sorted(k.start_mark.index for k, _ in root.value)
        for section, maker in (("rules", build.item), ("schedules", build.schedule), ("slas", build.sla)):
            if section not in pairs or not isinstance(pairs[section][1], SequenceNode):
                continue
            nodes = pairs[section][1].value
            key_index = pairs[section][0].start_mark.index
            after = [s for s in section_starts if s > key_index]
            for i, node in enumerate(nodes):
                limit = nodes[i + 1].start_mark.index if i + 1 < len(nodes) else (after[0] if after else len(source))
                made = maker(node)
                if not isinstance(made, ast.Disable):
                    made = _extend_over_comments(src, made, node, comments, limit)
                {"schedules": schedules, "slas": slas}.get(section, items).append(made)
                placed.append(made)
        if isinstance(pairs.get("routing", (None, None))[1], MappingNode):
            made = build.routing(*pairs["routing"])
            items.append(made)
            placed.append(made)
    placed.sort(key=lambda it: (it.span.line, it.span.column))
    rf = ast.RuleFile(path, tuple(items), tuple(schedules), source=source,
                      ignores=ignore_markers(source, comments), form="yaml", slas=tuple(slas))
    return attach_comments(rf, placed, comments)


def load_yaml(source: str | bytes, path: str = "<string>") -> ast.RuleFile:
    """Load a YAML rule file into the AST the .rules parser builds for the same rules.

    ``source`` is the file's text (bytes are decoded as parser.decode_source does).
    Raises ParseError, located in ``path``, for anything wrong: YAML syntax (`yaml_error`),
    a shape the schema refuses (`schema_error`), a `when` that does not parse (the
    .rules parser's codes). An empty file is an empty RuleFile.
    """
    try:
        if isinstance(source, (bytes, bytearray)):
            source = decode_source(path, bytes(source))
        return _load(source, path)
    except SourceError:
        raise
    except Exception as e:  # a bug must still come out as a located error, never a traceback
        raise ParseError([Diagnostic(Span.point(path, 1, 1), "yaml_error",
                                     f"cannot read this YAML file ({type(e).__name__}: {e})")]) from e


def load_yaml_file(path: str | Path) -> ast.RuleFile:
    """Read and load a YAML rule file; errors are located ParseErrors."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        fail(Span.point(str(path), 1, 1), "file_error", f"cannot read file: {e.strerror}", kind=ParseError)
    return load_yaml(data, str(path))


# ---------------------------------------------------------------- AST to YAML

_PRINTABLE_RE = re.compile("[\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_PLAIN_RE = re.compile(r"[^\W\d_]|[0-9_/(]")  # what a plain scalar may start with
_PLAIN_BLOCK_CHARS = set(" _./()!?'+-=;~$^<>@%&*|,")
_PLAIN_FLOW_CHARS = _PLAIN_BLOCK_CHARS - set("?,")


def _plain_ok(s: str, flow: bool) -> bool:
    if not s or s != s.strip(" ") or not _PLAIN_RE.match(s[0]):
        return False
    allowed = _PLAIN_FLOW_CHARS if flow else _PLAIN_BLOCK_CHARS
    for i, ch in enumerate(s):
        if ch in allowed or (ch.isalnum() and _PRINTABLE_RE.match(ch)):
            continue
        if ch == ":" and not flow and i + 1 < len(s) and s[i + 1] != " ":
            continue
        return False
    # Both YAML 1.2 (ours) and 1.1 (other tools) must read it as text.
    return all(r.resolve(ScalarNode, s, (True, False)) == _STR for r in (_CORE, _YAML11))


def _double_quoted(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif ch in "\x85\u2028\u2029\ufeff" or not _PRINTABLE_RE.match(ch):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _scalar(s: str, flow: bool = False) -> str:
    """``s`` as a YAML scalar that reads back as exactly that text: plain when it is
    safe, single-quoted when it holds double quotes (condition strings), else double."""
    if _plain_ok(s, flow):
        return s
    one_line = all(ch not in "\n\t\r\x85\u2028\u2029\ufeff" and _PRINTABLE_RE.match(ch) for ch in s)
    if one_line and '"' in s:
        return "'" + s.replace("'", "''") + "'"
    return _double_quoted(s)


def _value_text(value) -> str:
    from .formatter import format_value

    return format_value(value)


def _condition_text(expr) -> str:
    # Imported here: loading YAML must not depend on the printer, only dumping does.
    from .formatter import format_expr

    return format_expr(expr)


def _comment_lines(out: list, comments, indent: int) -> None:
    for c in comments:
        # a comment line must stay one printable line of YAML
        text = "".join(ch if _PRINTABLE_RE.match(ch) and ch not in _BREAKS + "\t" else "\ufffd" for ch in c)
        out.append(" " * indent + text)


def _flow(pairs) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"


def _target_text(t: ast.Target) -> str:
    if t.kind in ("agent", "department", "address"):
        return _flow([(t.kind, _scalar(t.id or "", True))])
    return t.kind


def _action_text(a: ast.Action) -> str:
    """One action as the YAML list item it is written as (without the `- `)."""
    k = a.kind
    if k in BARE_ACTIONS:
        return k
    if k == "assign_agent":
        return "assign: " + _flow([("agent", _scalar(a.agent, True))])
    if k == "assign_department":
        by = [("by", _scalar(a.strategy, True))] if a.strategy is not None else []
        return "assign: " + _flow([("department", _scalar(a.department, True))] + by)
    if k == "subscribe" and a.target.kind == "operators":
        return "subscribe: operators"
    if k in ("subscribe", "unsubscribe"):
        return f"{k}: {_target_text(a.target)}"
    if k == "notify":
        names = [n for n in a.order if getattr(a, n) is not None]
        names += [n for n in ("except_", "template", "message") if n not in names and getattr(a, n) is not None]
        opts = [("except" if n == "except_" else n, _scalar(getattr(a, n), True)) for n in names]
        return "notify: " + _flow([("to", _target_text(a.target))] + opts)
    if k == "email":
        return "email: " + _flow([("to", _target_text(a.target)), ("template", _scalar(a.template, True))])
    if k == "email_transcript":
        return "email: " + _flow([("transcript", "[" + ", ".join(_target_text(t) for t in a.targets) + "]")])
    if k == "webhook":
        return f"webhook: {_scalar(a.webhook)}"
    if k in ("reply", "note"):
        return f"{k}: {_scalar(a.text)}"
    if k == "reply_article":
        return "reply: " + _flow([("article", _scalar(a.article, True))])
    if k in ("tag", "untag"):
        return f"{k}: {_scalar(a.tag)}"
    if k == "set_priority":
        return "set: " + _flow([("priority", str(a.priority))])
    if k == "set_department":
        return "set: " + _flow([("department", _scalar(a.department, True))])
    if k == "set_status":
        return "set: " + _flow([("status", _scalar(a.status, True))])
    if k == "snooze" and a.duration is not None:
        from .formatter import _duration

        return "snooze: " + _flow([("for", _scalar(_duration(a.duration), True))])
    if k == "snooze":
        return "snooze: " + _flow([("until_next", _scalar(a.schedule, True))])
    if k == "set_field":
        v = a.value
        if isinstance(v, ast.Literal) and v.kind in ("int", "bool", "none"):
            text = {"none": "null", "bool": "true" if v.value else "false"}.get(v.kind) or str(v.value)
        else:
            text = _scalar(_value_text(v), True)
        return "set: " + _flow([("field", _scalar(a.field_name, True)), ("value", text)])
    raise ValueError(f"unknown action kind `{k}`")


def _rule_lines(out: list, item) -> None:
    if isinstance(item, ast.Disable):
        out.append(f"  - disable: {_scalar(item.id)}")
        return
    head = "override" if item.override else "id"
    out.append(f"  - {head}: {_scalar(item.id)}")
    if item.title is not None:
        out.append(f"    title: {_scalar(item.title)}")
    said = dict(item.clause_comments)
    clauses = [("priority", item.priority is not None), ("on", item.on is not None),
               ("when", item.when is not None), ("then", True)]
    for clause, present in clauses:
        if not present:
            continue
        _comment_lines(out, said.pop(clause, ()), 4)
        if clause == "then":
            for lines in said.values():  # comments of clauses that have no line here
                _comment_lines(out, lines, 4)
            out.append("    then:" + ("" if item.actions else " []"))
            for a in item.actions:
                _comment_lines(out, a.comments, 6)
                out.append(f"      - {_action_text(a)}" + (f"  {a.trailing}" if a.trailing else ""))
        elif clause == "priority":
            out.append(f"    priority: {item.priority}")
        elif clause == "on":
            out.append(f"    on: {_scalar(item.on)}")
        else:
            out.append(f"    when: {_scalar(_condition_text(item.when))}")
    _comment_lines(out, item.end_comments, 4)


def _hours_text(line: ast.ScheduleLine) -> str:
    days = ast.DAYS[line.first_day] + ("" if line.last_day == line.first_day else "-" + ast.DAYS[line.last_day])
    return f"{days} {line.start // 60:02d}:{line.start % 60:02d}-{line.end // 60:02d}:{line.end % 60:02d}"


def _schedule_lines(out: list, s: ast.Schedule) -> None:
    out.append(f"  - id: {_scalar(s.id)}")
    if s.title is not None:
        out.append(f"    title: {_scalar(s.title)}")
    out.append(f"    timezone: {_scalar(s.timezone)}")
    out.append("    hours:")
    for line in s.lines:
        _comment_lines(out, line.comments, 6)
        out.append(f"      - {_hours_text(line)}")
    _comment_lines(out, s.end_comments, 4)


def _routing_lines(out: list, r: ast.Routing) -> None:
    capacity = []
    for line in r.lines:
        _comment_lines(out, line.comments, 2 if line.kind != "capacity" else 4)
        if line.kind == "backlog":
            out.append("  backlog: " + (_flow([("skip_idle_over", line.idle.text)]) if line.idle else "true"))
        elif line.kind == "limit":
            out.append("  at_most: " + _flow([("chats", str(line.count)), ("per", line.per.text)]))
        else:
            if not capacity:
                out.append("  capacity:")
            capacity.append(line)
            out.append(f"    {_scalar(line.channel)}: {line.count}")
    _comment_lines(out, r.end_comments, 2)


def _sla_lines(out: list, p: ast.Sla) -> None:
    said = dict(p.clause_comments)
    out.append(f"  - id: {_scalar(p.id)}")
    if p.title is not None:
        out.append(f"    title: {_scalar(p.title)}")
    if p.when is not None:
        _comment_lines(out, said.pop("when", ()), 4)
        out.append(f"    when: {_scalar(_condition_text(p.when))}")
    if p.within is not None:
        _comment_lines(out, said.pop("within", ()), 4)
        out.append(f"    within: {_scalar(p.within)}")
    for lines in said.values():
        _comment_lines(out, lines, 4)
    for line in p.lines:
        _comment_lines(out, line.comments, 4)
        out.append(f"    {line.name}: {line.duration.text}")
    _comment_lines(out, p.end_comments, 4)


def dump_yaml(rf: ast.RuleFile) -> str:
    """The canonical YAML text of a RuleFile, from either form: `rules:` in item order,
    then `schedules:`, every comment on its own line before its node (the comments of a
    section's first item go above the section's key, where a file's header stands, except
    the ignore markers just before it, which must stay on the line before the item).
    ``load_yaml`` of the result gives an equal RuleFile."""
    out: list[str] = []
    rules = tuple(i for i in rf.items if not isinstance(i, ast.Routing))
    routings = tuple(i for i in rf.items if isinstance(i, ast.Routing))
    for key, nodes, write in (("rules", rules, _rule_lines), ("schedules", rf.schedules, _schedule_lines),
                              ("slas", rf.slas, _sla_lines)):
        if not nodes:
            continue
        head = list(nodes[0].comments)
        markers = []  # ignore markers must stay on the line before the item they silence
        while head and IGNORE_RE.match(head[-1].lstrip()):
            markers.insert(0, head.pop())
        _comment_lines(out, head, 0)
        out.append(f"{key}:")
        for i, node in enumerate(nodes):
            _comment_lines(out, node.comments if i else markers, 2)
            write(out, node)
    for r in routings[:1]:  # the compiler refuses a second one; YAML has room for one
        _comment_lines(out, r.comments, 0)
        out.append("routing:")
        _routing_lines(out, r)
    _comment_lines(out, rf.end_comments, 0)
    return "\n".join(out) + "\n" if out else ""
