"""Checking the ``{{ … }}`` placeholders of action texts at compile time.

Texts are Jinja templates rendered in Jinja's sandbox by the engine; here they are only
parsed, and every name they read is checked against the vocabulary, so a misspelled
``{{ customer.nmae }}`` is a located error and not an empty string in a customer's chat.
"""
from __future__ import annotations

import functools

from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

from . import vocabulary as V
from .errors import did_you_mean


@functools.lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    """The one sandbox both the checker and the engine use (autoescape off: plain text)."""
    env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
    return env


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
    except TemplateSyntaxError as e:
        return [("bad_template", f"template syntax: {e.message}", "placeholders look like {{ customer.name }}")]
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
