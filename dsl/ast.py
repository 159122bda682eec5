"""The rule language's syntax tree: frozen dataclasses, each node with its span.

Both source forms (.rules text and YAML) produce these nodes; the compiler, linter and
formatter read them. Behaviour lives in those passes, not here. ``span`` and
``comments`` never take part in equality, so two trees compare equal when they mean the
same thing, whatever their layout (that is how fmt's round trips are tested).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .errors import NO_SPAN, Span


def _span():
    return field(default=NO_SPAN, compare=False, repr=False)


def _comments():
    return field(default=(), compare=False, repr=False)


# ---------------------------------------------------------------- expressions

@dataclass(frozen=True)
class Literal:
    """A string, integer, boolean or none. ``kind`` is str|int|bool|none."""

    value: object
    kind: str
    span: Span = _span()


@dataclass(frozen=True)
class Duration:
    """A duration literal such as ``1h30m``; ``seconds`` is its length."""

    seconds: int
    text: str
    span: Span = _span()


@dataclass(frozen=True)
class ListLit:
    items: tuple
    span: Span = _span()


@dataclass(frozen=True)
class Regex:
    """``/pattern/`` with Python syntax; ``pattern`` is the text between the slashes."""

    pattern: str
    span: Span = _span()


@dataclass(frozen=True)
class Ref:
    """A dotted name: a fact (``chat.priority``), a state (``chat.idle``) or ``now``."""

    name: str
    span: Span = _span()


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple
    span: Span = _span()


@dataclass(frozen=True)
class Compare:
    """``left OP right``; op is one of ==, !=, <, <=, >, >=, in, not in, contains,
    starts with, ends with, matches."""

    op: str
    left: "Expr"
    right: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class IsNone:
    operand: "Expr"
    negated: bool
    span: Span = _span()


@dataclass(frozen=True)
class Changed:
    """A change condition, true only on a ``chat.updated`` whose changes include the fact.

    ``changed(FACT)``: ``old`` and ``new`` are None. ``FACT changed to NEW``: ``old`` is
    None. ``FACT changed from OLD to NEW``: both set. (A written ``none`` is a Literal, so
    None here always means "not written".)
    """

    fact: "Expr"
    old: "Expr | None" = None
    new: "Expr | None" = None
    span: Span = _span()


@dataclass(frozen=True)
class For:
    """``STATE for DURATION [within "SCHEDULE"]``: true once the state has held for that
    long; with ``within``, that long inside the named schedule (business time)."""

    operand: "Expr"
    duration: Duration
    span: Span = _span()
    within: str | None = None
    within_span: Span = _span()


@dataclass(frozen=True)
class Not:
    operand: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class And:
    items: tuple
    span: Span = _span()


@dataclass(frozen=True)
class Or:
    items: tuple
    span: Span = _span()


@dataclass(frozen=True)
class Paren:
    """Parentheses the author wrote; kept so fmt reproduces them."""

    expr: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Shift:
    """``BASE + AMOUNT`` or ``BASE - AMOUNT``: a time moved by a duration, the value of a
    ``set field`` (``set field follow_up = now + 1d``). The compiler checks that BASE is
    a time and AMOUNT a duration; the grammar only takes them where a value is set."""

    base: "Expr"
    op: str  # + | -
    amount: "Expr"
    span: Span = _span()


Expr = Union[Literal, Duration, ListLit, Regex, Ref, Call, Compare, IsNone, Changed, For, Not, And, Or, Paren, Shift]


# ---------------------------------------------------------------- actions

@dataclass(frozen=True)
class Target:
    """Who an action reaches. kind: subscribers|assignee|operators|mentioned|agent|
    department|customer|address; ``id`` for agent and department, the address for address."""

    kind: str
    id: str | None = None
    span: Span = _span()


@dataclass(frozen=True)
class Action:
    """One action of a ``then`` block.

    kind and the fields it uses:
      assign_agent: agent | assign_department: department, strategy
      unassign, close, reopen, lock, unlock, stop: nothing
      subscribe: target | unsubscribe: target (agent)
      notify: target, except_, template, message
      email: target (customer | agent | department | address), template
      email_transcript: targets (a tuple of those Targets)
      webhook: webhook (the name of an endpoint the server's settings declare)
      reply: text | reply_article: article | note: text
      tag, untag: tag | set_priority: priority
      set_field: field_name, value (an Expr, or a Shift)
      set_department: department
      snooze: duration (``snooze for D``) or schedule (``snooze until next "S"``)
      set_status: status (``set status pending``)
    """

    kind: str
    span: Span = _span()
    agent: str | None = None
    department: str | None = None
    strategy: str | None = None
    target: Target | None = None
    except_: str | None = None
    template: str | None = None
    message: str | None = None
    text: str | None = None
    article: str | None = None
    tag: str | None = None
    priority: int | None = None
    field_name: str | None = None
    value: object = None  # an Expr for set_field
    webhook: str | None = None
    duration: "Duration | None" = None
    schedule: str | None = None
    status: str | None = None
    targets: tuple | None = None  # email_transcript
    # option order as written (notify's options come in any order); fmt keeps it
    order: tuple = field(default=(), compare=False, repr=False)
    comments: tuple = _comments()
    trailing: str | None = field(default=None, compare=False, repr=False)


# ---------------------------------------------------------------- top level

@dataclass(frozen=True)
class Rule:
    """A rule or an override (``override=True``; ``id`` is then the id it replaces).

    ``on`` is the event name or None for a state rule; ``priority`` is None when not written.
    """

    id: str
    title: str | None
    on: str | None
    when: Expr | None
    actions: tuple
    priority: int | None = None
    override: bool = False
    span: Span = _span()
    id_span: Span = _span()
    on_span: Span = _span()
    priority_span: Span = _span()
    # (clause, Span) for each clause as written: "on" | "when" | "then" | "priority"
    clause_spans: tuple = field(default=(), compare=False, repr=False)
    comments: tuple = _comments()
    clause_comments: tuple = field(default=(), compare=False, repr=False)  # ((clause, (lines)), …)
    end_comments: tuple = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Disable:
    id: str
    span: Span = _span()
    comments: tuple = _comments()


@dataclass(frozen=True)
class ScheduleLine:
    """``DAY[-DAY] HH:MM-HH:MM``: days 0=mon … 6=sun, minutes since midnight (end ≤ 1440)."""

    first_day: int
    last_day: int
    start: int
    end: int
    span: Span = _span()
    comments: tuple = _comments()


@dataclass(frozen=True)
class Schedule:
    id: str
    title: str | None
    timezone: str
    lines: tuple
    span: Span = _span()
    id_span: Span = _span()
    timezone_span: Span = _span()
    comments: tuple = _comments()
    end_comments: tuple = field(default=(), compare=False, repr=False)


SLA_TARGETS = ("first_response", "next_response", "resolution")


@dataclass(frozen=True)
class SlaTarget:
    """One line of a policy: a target (``first_response``, ``next_response``,
    ``resolution``) or ``due_soon``, with its duration."""

    name: str
    duration: Duration
    span: Span = _span()
    comments: tuple = _comments()


@dataclass(frozen=True)
class Sla:
    """``sla ID ["title"] { when COND  TARGET D …  within "SCHEDULE"  due_soon D }``.

    ``lines`` keeps the target and ``due_soon`` lines in written order; ``when`` is None
    for a policy that applies to every chat (no earlier policy matching)."""

    id: str
    title: str | None
    when: "Expr | None"
    lines: tuple
    within: str | None = None
    span: Span = _span()
    id_span: Span = _span()
    when_span: Span = _span()
    within_span: Span = _span()
    # ("when" | "within" | "line", Span) for each clause as written, so fmt keeps the order
    clause_spans: tuple = field(default=(), compare=False, repr=False)
    comments: tuple = _comments()
    clause_comments: tuple = field(default=(), compare=False, repr=False)
    end_comments: tuple = field(default=(), compare=False, repr=False)

    def target(self, name: str):
        """The duration in seconds of a target (or ``due_soon``), None when not set."""
        for line in self.lines:
            if line.name == name:
                return line.duration.seconds
        return None


@dataclass(frozen=True)
class RoutingLine:
    """One line of a ``routing`` block.

    kind and the fields it uses:
      backlog: ``idle`` (a Duration, ``skip idle over D``) or None
      limit: ``count`` chats ``per`` a Duration (``at most N per D``)
      capacity: ``channel`` and ``count`` (``capacity CHANNEL N``)
    """

    kind: str
    count: int | None = None
    per: Duration | None = None
    idle: Duration | None = None
    channel: str | None = None
    span: Span = _span()
    channel_span: Span = _span()
    comments: tuple = _comments()


@dataclass(frozen=True)
class Routing:
    """``routing { … }``: how department assignment and the backlog pick agents.
    Kept among a file's items (in written order); a rule set has at most one."""

    lines: tuple
    span: Span = _span()
    comments: tuple = _comments()
    end_comments: tuple = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class RuleFile:
    """One source file. ``items`` keeps rules, overrides, disables and the routing block in
    written order;
    ``schedules`` are kept apart since their place in a file carries no meaning."""

    path: str
    items: tuple
    schedules: tuple
    source: str = field(default="", compare=False, repr=False)
    end_comments: tuple = field(default=(), compare=False, repr=False)
    # (line, codes) of `# chatflow: ignore=CODE` markers, already resolved to the line they cover
    ignores: tuple = field(default=(), compare=False, repr=False)
    form: str = field(default="rules", compare=False, repr=False)  # rules | yaml
    slas: tuple = ()  # SLA policies, in written order (the first that matches a chat applies)


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
