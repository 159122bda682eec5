"""Checking the ``{{ … }}`` placeholders of action texts at compile time.

Texts are Jinja templates rendered in Jinja's sandbox by the engine; here they are only
parsed, and every name they read is checked against the vocabulary, so a misspelled
``{{ customer.nmae }}`` is a located error and not an empty string in a customer's chat.
"""
from __future__ import annotations

import functools

from jinja2 import TemplateSyntaxError, nodes
from jinja2.exceptions import TemplateError
from jinja2.sandbox import SandboxedEnvironment

from . import vocabulary as V
from .errors import did_you_mean


@functools.lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    """The one sandbox both the checker and the engine use (autoescape off: plain text)."""
    env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
    return env


# What a rule text may contain: placeholders reading facts, literals, `{% if %}` and
# comparisons, and filters that cannot grow a text without bound. No loops, calls or
# arithmetic: a rule text must not be able to make the engine spin or fill memory.
SAFE_FILTERS = frozenset({"default", "d", "upper", "lower", "title", "capitalize", "trim", "join",
                          "length", "count", "first", "last", "truncate", "e", "escape"})
_ALLOWED_NODES = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Getattr,
                  nodes.Const, nodes.Filter, nodes.If, nodes.CondExpr, nodes.Compare, nodes.Operand,
                  nodes.Not, nodes.And, nodes.Or, nodes.Test)
MAX_FILTERS = 20


def _shape_problem(tree) -> str | None:
    """Why a template is not a plain placeholder text, or None."""
    filters = 0
    stack = [tree]
    while stack:
        node = stack.pop()
        if not isinstance(node, _ALLOWED_NODES):
            if isinstance(node, nodes.For):
                return "loops ({% for %}) are not allowed in rule texts"
            what = "{% … %} blocks other than if" if isinstance(node, nodes.Stmt) else f"`{type(node).__name__}` expressions"
            return f"{what} are not allowed in rule texts"
        if isinstance(node, nodes.Filter):
            filters += 1
            if node.name not in SAFE_FILTERS:
                return f"the filter `{node.name}` is not allowed in rule texts"
            if filters > MAX_FILTERS:
                return f"more than {MAX_FILTERS} filters in one text"
            for arg in list(node.args) + [kw.value for kw in node.kwargs]:
                if not isinstance(arg, nodes.Const) or (isinstance(arg.value, int) and arg.value > 100_000):
                    return f"the filter `{node.name}` takes small literal arguments only"
        if isinstance(node, nodes.Name) and node.ctx != "load":
            return "assignments are not allowed in rule texts"
        stack.extend(node.iter_child_nodes())
    return None


def _chain(node) -> list[str] | None:
    """``customer.fields.plan`` as ["customer", "fields", "plan"], or None if not a plain chain."""
    parts = []
    while isinstance(node, nodes.Getattr):
        parts.append(node.attr)
        node = node.node
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return None
    if isinstance(node, nodes.Name):
        parts.append(node.name)
        return list(reversed(parts))
    return None


def template_problems(text: str, event: str | None) -> list[tuple[str, str, str | None]]:
    """(code, message, hint) for each problem in a template text; [] when it is fine."""
    if "{" not in text:
        return []
    try:
        tree = environment().parse(text)
        shape = _shape_problem(tree)
    except TemplateSyntaxError as e:
        return [("bad_template", f"template syntax: {e.message}", "placeholders look like {{ customer.name }}")]
    except (RecursionError, MemoryError):
        return [("bad_template", "template nested too deeply", None)]
    if shape:
        return [("bad_template", shape, "rule texts take placeholders such as {{ customer.name }} "
                 "and the filters " + ", ".join(sorted(SAFE_FILTERS)))]
    problems = []
    roots = set(V.TEMPLATE_ROOTS)
    if event not in V.MESSAGE_EVENTS:
        roots.discard("message")
    bound = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    seen = set()
    for node in tree.find_all((nodes.Getattr, nodes.Name)):
        chain = _chain(node)
        if not chain or id(node) in seen:
            continue
        # mark the inner nodes of this chain so they are not checked again on their own
        inner = node
        while isinstance(inner, nodes.Getattr):
            inner = inner.node
            seen.add(id(inner))
        root = chain[0]
        if root in bound or root in ("loop",):
            continue
        if any(p.startswith("_") for p in chain):
            problems.append(("bad_template", f"`{'.'.join(chain)}` is not readable in a template", None))
            continue
        if root not in roots:
            hint = did_you_mean(root, roots) or "templates see " + ", ".join(sorted(roots))
            problems.append(("unknown_variable", f"unknown template variable `{root}`", hint))
            continue
        if len(chain) == 1:
            continue
        name = ".".join(chain)
        if chain[1] == "fields" and root in ("chat", "customer"):
            continue
        if name not in V.FACTS:
            hint = did_you_mean(name, [f for f in V.FACTS if f.startswith(root + ".")])
            problems.append(("unknown_variable", f"unknown template variable `{name}`", hint))
    return problems


# What a message says, as opposed to what it is (its kind, author, id): the parts of a
# private note a customer must never read.
MESSAGE_CONTENT = frozenset({"text", "subject", "mentions"})


@functools.lru_cache(maxsize=4096)
def reads_message(text: str) -> bool:
    """Whether a template text reads what the message says (``{{ message.text }}``,
    ``message.subject``, ``message.mentions``, or the whole ``message``): such a text must
    not reach the customer when the message is a private note."""
    if "{" not in text or "message" not in text:
        return False
    try:
        tree = environment().parse(text)
    except (TemplateError, RecursionError, MemoryError):
        return False  # the compiler refuses such a text; the engine keeps it raw
    harmless = set()
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "message" and node.attr not in MESSAGE_CONTENT:
            harmless.add(id(node.node))
    return any(n.name == "message" and id(n) not in harmless for n in tree.find_all(nodes.Name))
