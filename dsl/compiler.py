"""Compile parsed rule files into the rule graph the engine runs.

    files (RuleFile, .rules or YAML) ─> resolve ids, overrides, disables ─> type-check
    conditions and actions against the vocabulary ─> order by priority/file/position
    ─> RuleSet (frozen): rules with their temporal predicates, schedules resolved.

Every problem is collected as a located Diagnostic (not only the first one), so
``chatflow check`` can list them all; ``compile_files`` returns them with the RuleSet.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import ast, vocabulary as V
from .errors import Diagnostic, Span, did_you_mean
from .routing import NO_ROUTING, CompiledRouting, compile_routing
from .schedule import CompiledSchedule, compile_schedule
from .templates import template_problems
from .types import (UNKNOWN, Scope, check_business_duration, check_condition, check_expr, check_schedule_name,
                    check_shift, describe, timezones, value_type)

DEFAULT_PRIORITY = 0
MAX_SNOOZE = 366 * 86400  # as engine.commands.MAX_SNOOZE
DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules" / "default.rules"


@dataclass(frozen=True)
class CompiledRule:
    """One rule as the engine runs it.

    ``temporals`` are the ``(state, seconds)`` pairs of its ``STATE for D`` predicates
    (``(state, seconds, schedule)`` for ``STATE for D within "schedule"``), from which the
    engine computes the exact next deadline; ``durations`` the ``(key, seconds)`` pairs of
    its ``(CONDITION) for D`` predicates, ``key`` being the condition's canonical text, under
    which the engine keeps the instant it became true (its anchor); ``anchored`` the
    ``(key, condition)`` of each, innermost first; ``sla_states`` the ``(SLA state,
    target)`` pairs it reads (their due times are deadlines too); ``clock`` is true when the condition
    reads the time of day (schedules, ``hour``, ``weekday``), so the engine also wakes at
    the next change of those. ``constant`` is the folded condition (True/False) when the
    compiler could decide it, else UNKNOWN.
    """

    id: str
    title: str | None
    on: str | None
    when: object
    actions: tuple
    priority: int
    path: str
    file_index: int
    position: int
    span: Span
    id_span: Span = None
    temporals: tuple = ()
    durations: tuple = ()
    anchored: tuple = ()
    schedules: tuple = ()
    sla_states: tuple = ()  # (SLA state, target) pairs the condition reads
    clock: bool = False
    constant: object = field(default=UNKNOWN, compare=False)
    is_default: bool = False
    overrides: bool = False

    @property
    def is_state_rule(self) -> bool:
        return self.on is None

    @property
    def sort_key(self) -> tuple:
        return (self.priority, self.file_index, self.position)


@dataclass(frozen=True)
class CompiledSla:
    """An SLA policy as the engine applies it: the first policy (in file order) whose
    ``when`` holds for a chat is the chat's; ``targets`` maps a target name to seconds,
    counted inside the schedule ``within`` when it is set; ``due_soon`` is how long
    before a due time the target is due soon (None: never)."""

    id: str
    title: str | None
    when: object
    targets: dict
    within: str | None
    due_soon: int | None
    path: str
    span: Span
    id_span: Span
    constant: object = field(default=UNKNOWN, compare=False)

    def __hash__(self):
        return hash((self.id, self.path, self.span))


@dataclass(frozen=True)
class RuleSet:
    rules: tuple  # CompiledRule, in evaluation order
    schedules: dict  # id -> CompiledSchedule
    files: tuple = ()
    disabled: tuple = ()
    routing: CompiledRouting = NO_ROUTING
    slas: tuple = ()  # CompiledSla, in the order they are tried

    def __post_init__(self):
        by_event: dict[str, list] = {}
        for r in self.rules:
            if r.on:
                by_event.setdefault(r.on, []).append(r)
        object.__setattr__(self, "_by_event", {k: tuple(v) for k, v in by_event.items()})
        object.__setattr__(self, "_by_id", {r.id: r for r in self.rules})

    def rule(self, rule_id: str) -> CompiledRule | None:
        return self._by_id.get(rule_id)

    def for_event(self, event: str) -> tuple:
        """Rules to evaluate for an event: its event rules and every state rule, in order."""
        return tuple(r for r in self.rules if r.on is None or r.on == event)

    @property
    def state_rules(self) -> tuple:
        return tuple(r for r in self.rules if r.on is None)

    @property
    def ids(self) -> tuple:
        return tuple(r.id for r in self.rules)


@dataclass
class CompileResult:
    ruleset: RuleSet | None
    diagnostics: list

    @property
    def errors(self) -> list:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def is_default_file(path: str) -> bool:
    try:
        return Path(path).resolve() == DEFAULT_RULES
    except OSError:
        return False


class _Compiler:
    def __init__(self):
        self.diagnostics: list[Diagnostic] = []

    def report(self, span, code, message, hint=None, severity="error"):
        self.diagnostics.append(Diagnostic(span, code, message, severity, hint))

    def compile(self, files) -> RuleSet:
        schedules = self._schedules(files)
        slas = self._slas(files, schedules)
        entries: dict[str, tuple] = {}  # id -> (Rule, file_index, position, is_default, overrides)
        first_span: dict[str, Span] = {}
        disabled = []
        routing = None
        for fi, rf in enumerate(files):
            default_file = is_default_file(rf.path)
            for pos, item in enumerate(rf.items):
                if isinstance(item, ast.Routing):
                    if routing is not None:
                        self.report(item.span, "duplicate_routing", "a rule set has one `routing` block",
                                    f"the first is at {routing.span}")
                        continue
                    routing = self._routing(item)
                    continue
                if isinstance(item, ast.Disable):
                    if item.id in entries:
                        del entries[item.id]
                        disabled.append(item.id)
                    else:
                        self._unknown_rule(item.span, "disable", item.id, entries)
                    continue
                if item.override:
                    if item.id not in entries:
                        self._unknown_rule(item.id_span, "override", item.id, entries)
                        continue
                    old, ofi, opos, odef, _ = entries[item.id]
                    rule = item
                    if item.priority is None:
                        rule = dataclasses.replace(item, priority=old.priority)
                    if item.title is None:
                        rule = dataclasses.replace(rule, title=old.title)
                    entries[item.id] = (rule, ofi, opos, odef, True)
                    continue
                if item.id.startswith("default.") and not default_file:
                    self.report(item.id_span, "reserved_name", f"`{item.id}`: the `default.` prefix is reserved",
                                f"to change a shipped rule write `override rule {item.id} {{ … }}`"
                                if item.id in entries else "name the rule without `default.`")
                    continue
                if item.id in entries or item.id in first_span:
                    where = first_span.get(item.id)
                    self.report(item.id_span, "duplicate_rule", f"rule `{item.id}` is defined twice",
                                f"first defined at {where}" if where else None)
                    continue
                first_span[item.id] = item.id_span
                entries[item.id] = (item, fi, pos, default_file, False)
        field_types = self._field_types([e[0] for e in entries.values()], schedules)
        rules = []
        for rule, fi, pos, is_default, overrides in entries.values():
            compiled = self._rule(rule, fi, pos, is_default, overrides, files[fi].path, schedules, field_types)
            if compiled is not None:
                rules.append(compiled)
        rules.sort(key=lambda r: r.sort_key)
        return RuleSet(tuple(rules), schedules, tuple(files), tuple(disabled), routing or NO_ROUTING,
                       slas=slas)

    def _routing(self, node: ast.Routing) -> CompiledRouting:
        for line in node.lines:
            if line.kind == "capacity" and line.channel not in V.CHANNELS:
                self.report(line.channel_span, "unknown_channel", f"unknown channel `{line.channel}`",
                            did_you_mean(line.channel, V.CHANNELS) or "channels: " + ", ".join(V.CHANNELS))
            if line.kind == "limit" and line.count < 1:
                self.report(line.span, "bad_value", "`at most` needs at least 1 chat per window",
                            "to keep agents from being picked, leave them out of the department")
        return compile_routing(node)

    def _slas(self, files, schedules) -> tuple:
        out, seen = [], {}
        for rf in files:
            for p in rf.slas:
                if p.id in seen:
                    self.report(p.id_span, "duplicate_sla", f"policy `{p.id}` is defined twice",
                                f"first defined at {seen[p.id]}")
                    continue
                seen[p.id] = p.id_span
                scope = Scope(None, frozenset(schedules), self.report)
                if p.within is not None:
                    check_schedule_name(p.within, p.within_span, scope)
                    for line in p.lines:
                        check_business_duration(line.duration, scope)
                constant = UNKNOWN
                if p.when is not None and self._sla_condition(p.when):
                    constant = check_condition(p.when, scope).const
                targets = {line.name: line.duration.seconds for line in p.lines if line.name in V.SLA_TARGETS}
                out.append(CompiledSla(p.id, p.title, p.when, targets, p.within, p.target("due_soon"),
                                       rf.path, p.span, p.id_span, constant))
        return tuple(out)

    def _sla_condition(self, when) -> bool:
        """A policy is chosen by what the chat is (priority, department, channel, tags,
        fields…), not by time: durations, schedules, the clock, changes and the SLA states
        themselves would make a chat's policy, and so its due times, move by themselves."""
        ok = True
        stack = [when]
        while stack:
            node = stack.pop()
            bad = None
            if isinstance(node, ast.For):
                bad = "`for`"
            elif isinstance(node, ast.Changed):
                bad = "a change condition"
            elif isinstance(node, ast.Call) and (node.name in V.SLA_STATES or node.name in ("in_schedule", "hour", "weekday")):
                bad = f"`{node.name}`"
            elif isinstance(node, ast.Ref) and node.name in ("now", "chat.sla_policy"):
                bad = f"`{node.name}`"
            if bad is not None:
                self.report(node.span, "bad_sla_condition", f"{bad} cannot choose an SLA policy",
                            "a policy is chosen by the chat's facts (priority, department, channel, tags, fields); "
                            "count a target in business time with `within \"SCHEDULE\"`")
                ok = False
                continue
            stack.extend(_children(node))
        return ok

    def _unknown_rule(self, span, verb, rule_id, entries):
        hint = did_you_mean(rule_id, entries) or (f"`{verb}` names a rule loaded before it")
        self.report(span, "unknown_rule", f"cannot {verb} `{rule_id}`: no such rule", hint)

    def _schedules(self, files) -> dict:
        out: dict[str, CompiledSchedule] = {}
        for rf in files:
            for s in rf.schedules:
                if s.id in out:
                    self.report(s.id_span, "duplicate_schedule", f"schedule `{s.id}` is defined twice",
                                f"first defined at {out[s.id].span}")
                    continue
                if s.timezone not in timezones():
                    self.report(s.timezone_span, "unknown_timezone", f"unknown timezone `{s.timezone}`",
                                did_you_mean(s.timezone, timezones()) or 'use an IANA name such as "Europe/Berlin"')
                # kept even with a bad timezone (the set fails anyway), so its uses are
                # not reported a second time as an unknown schedule
                out[s.id] = compile_schedule(s)
        return out

    def _email_targets(self, action: ast.Action):
        """An address must be a plain address (no display name, no placeholder: the rule
        names it, nothing else fills it in); ids must not be empty; a transcript names
        each recipient once."""
        targets = action.targets if action.kind == "email_transcript" else (action.target,)
        seen = {}
        for t in targets:
            if t.kind == "address" and not (len(t.id) <= 254 and V.ADDRESS_RE.fullmatch(t.id)):
                self.report(t.span, "bad_address", f"`{t.id[:60]}` is not an email address",
                            'write a plain address such as "support-lead@example.com"')
            elif t.kind in ("agent", "department") and not t.id.strip():
                self.report(t.span, "bad_value", f"`email {t.kind}` needs a non-empty id")
            key = (t.kind, t.id.lower() if t.kind == "address" else t.id)
            if key in seen:
                self.report(t.span, "duplicate_option", "this recipient is already in the transcript's list",
                            f"first at {seen[key]}")
            seen.setdefault(key, t.span)

    def _field_types(self, rules, schedules) -> dict:
        """Chat fields the rule set stores times in (``set field follow_up = now + 1d``):
        name -> nullable time. Such a field is a time in every condition; a ``set field``
        storing anything else but none in it is an error, located at its value."""
        scope = Scope(None, frozenset(schedules), lambda *a, **k: None)
        stored: dict[str, list] = {}  # field -> [(type, value node)]
        for rule in rules:
            for action in rule.actions:
                if action.kind == "set_field":
                    t = value_type(action.value, scope)
                    if t is not None and t.name != "any":
                        stored.setdefault(action.field_name, []).append((t, action.value))
        typed = {}
        for name, values in stored.items():
            first_time = next((node for t, node in values if t.name == "time"), None)
            if first_time is None:
                continue
            typed[name] = V.Type("time", nullable=True)
            for t, node in values:
                if t.name != "time":
                    self.report(node.span, "field_type",
                                f"field `{name}` holds a time (set at {first_time.span}); this stores {describe(t)}",
                                "store a time in it (`now`, `now + 1d`), or none, or use another field")
        return typed

    def _rule(self, rule: ast.Rule, fi, pos, is_default, overrides, path, schedules, field_types=None):
        errors_before = len([d for d in self.diagnostics if d.severity == "error"])
        if rule.on is not None and rule.on not in V.EVENTS:
            self.report(rule.on_span, "unknown_event", f"unknown event `{rule.on}`",
                        did_you_mean(rule.on, V.EVENTS) or "events: " + ", ".join(V.EVENTS))
            event_scope = None
        else:
            event_scope = rule.on
        scope = Scope(event_scope, frozenset(schedules), self.report,
                      unknown_event=rule.on is not None and event_scope is None, field_types=field_types or {})
        constant = UNKNOWN
        if rule.when is not None:
            constant = check_condition(rule.when, scope).const
        for action in rule.actions:
            self._action(action, scope)
        priority = rule.priority if rule.priority is not None else DEFAULT_PRIORITY
        temporals, used, clock = _temporal_facts(rule.when)
        sla_states = _sla_states(rule.when)
        durations, anchored = duration_conditions(rule.when)
        errors_after = len([d for d in self.diagnostics if d.severity == "error"])
        if errors_after > errors_before:
            return None
        return CompiledRule(
            id=rule.id, title=rule.title, on=rule.on, when=rule.when, actions=rule.actions,
            priority=priority, path=path, file_index=fi, position=pos, span=rule.span, id_span=rule.id_span,
            temporals=temporals, durations=durations, anchored=anchored, schedules=used, clock=clock,
            constant=constant, sla_states=sla_states,
            is_default=is_default, overrides=overrides,
        )

    def _action(self, action: ast.Action, scope: Scope):
        kind = action.kind
        if kind == "assign_department" and action.strategy is not None and action.strategy not in V.STRATEGIES:
            self.report(action.span, "unknown_strategy", f"unknown strategy `{action.strategy}`",
                        did_you_mean(action.strategy, V.STRATEGIES) or "strategies: " + ", ".join(V.STRATEGIES))
        if kind == "set_priority" and not 0 <= action.priority <= 4:
            self.report(action.span, "bad_value", f"priority {action.priority} is out of range", "priorities go 0 to 4")
        if kind == "set_field":
            if isinstance(action.value, ast.Shift):
                check_shift(action.value, scope)
            elif not isinstance(action.value, (ast.Literal, ast.Ref, ast.Duration, ast.ListLit)):
                self.report(action.value.span, "bad_value", "`set field` takes a literal or a fact, or a time moved by a duration",
                            'e.g. `set field plan = "gold"`, `set field origin = chat.page_url` '
                            'or `set field follow_up = now + 1d`')
            else:
                check_expr(action.value, scope)
        if kind == "set_department" and not action.department.strip():
            self.report(action.span, "bad_value", "`set department` needs a non-empty department")
        if kind == "webhook" and not re.fullmatch(V.WEBHOOK_NAME, action.webhook):
            self.report(action.span, "bad_value", f"`webhook` needs the name of a declared webhook, got {action.webhook!r}",
                        "a name of letters, digits, `_`, `.` and `-`, as the server's WEBHOOKS setting declares it")
        if kind == "set_status" and action.status not in V.SETTABLE_STATUSES:
            other = {"closed": "write `close`", "open": "write `reopen`",
                     "snoozed": 'write `snooze for D` or `snooze until next "SCHEDULE"`'}
            self.report(action.span, "bad_value", f"`set status` sets `pending`, not `{action.status}`",
                        other.get(action.status) or did_you_mean(action.status, V.SETTABLE_STATUSES)
                        or "statuses: " + ", ".join(V.STATUSES))
        if kind == "snooze" and action.schedule is not None and action.schedule not in scope.schedules:
            self.report(action.span, "unknown_schedule", f"unknown schedule `{action.schedule}`",
                        did_you_mean(action.schedule, scope.schedules)
                        or ("schedules: " + ", ".join(sorted(scope.schedules)) if scope.schedules
                            else 'declare it: schedule NAME { timezone "…" mon-fri 09:00-18:00 }'))
        if kind == "snooze" and action.duration is not None and action.duration.seconds > MAX_SNOOZE:
            self.report(action.duration.span, "bad_duration", f"a snooze lasts at most 366 days, not {action.duration.text}")
        if kind in ("email", "email_transcript"):
            self._email_targets(action)
        if kind in ("tag", "untag") and not action.tag.strip():
            self.report(action.span, "bad_value", f"`{kind}` needs a non-empty tag")
        for text in (action.text, action.message):
            if text:
                for code, message, hint in template_problems(text, scope.event):
                    self.report(action.span, code, message, hint)


def _temporal_facts(expr) -> tuple:
    """(temporals, schedules, clock) of a condition: what its deadlines depend on."""
    temporals, schedules, clock = [], [], False
    stack = [expr] if expr is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, ast.For):
            inner = node.operand
            while isinstance(inner, ast.Paren):
                inner = inner.expr
            if isinstance(inner, ast.Ref) and inner.name in V.STATES:
                entry = (inner.name, node.duration.seconds) if node.within is None else \
                    (inner.name, node.duration.seconds, node.within)
                if entry not in temporals:
                    temporals.append(entry)

        elif isinstance(node, ast.Call):
            if node.name == "in_schedule" and node.args and isinstance(node.args[0], ast.Literal):
                if node.args[0].value not in schedules:
                    schedules.append(node.args[0].value)
                clock = True
            if node.name in ("hour", "weekday"):
                clock = True
        elif isinstance(node, ast.Ref) and node.name == "now":
            clock = True
        for child in _children(node):
            stack.append(child)
    return tuple(temporals), tuple(schedules), clock


def _sla_states(expr) -> tuple:
    """The (SLA state, target) pairs a condition reads, in first-seen order."""
    out = []
    stack = [expr] if expr is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Call) and node.name in V.SLA_STATES and node.args \
                and isinstance(node.args[0], ast.Literal) and (node.name, node.args[0].value) not in out:
            out.append((node.name, node.args[0].value))
        stack.extend(reversed(_children(node)))
    return tuple(out)


def unparen(node):
    while isinstance(node, ast.Paren):
        node = node.expr
    return node


def is_state_duration(node: ast.For) -> bool:
    """``STATE for D`` (the state's own anchor), as opposed to ``(CONDITION) for D``."""
    inner = unparen(node.operand)
    return isinstance(inner, ast.Ref) and inner.name in V.STATES


def anchor_key(condition) -> str:
    """The name under which the engine keeps the anchor of ``(condition) for D``: its
    canonical text, so the same condition shares one anchor, and an anchor survives a new
    rule set that keeps the condition (and is dropped by one that changes it)."""
    from .formatter import format_expr

    try:
        return format_expr(unparen(condition))
    except ValueError:  # a tree built by hand with what no rule text holds (a negative number)
        return repr(unparen(condition))


def duration_conditions(expr) -> tuple:
    """(durations, anchored) of a condition: the ``(key, seconds)`` of each
    ``(CONDITION) for D`` in it, and each such condition once as ``(key, node)``, a
    condition nested in another before it (its anchor is refreshed first)."""
    durations, anchored, keys = [], [], set()

    def walk(node):
        for child in _children(node):
            walk(child)
        if isinstance(node, ast.For) and not is_state_duration(node):
            key = anchor_key(node.operand)
            if (key, node.duration.seconds) not in durations:
                durations.append((key, node.duration.seconds))
            if key not in keys:
                keys.add(key)
                anchored.append((key, unparen(node.operand)))

    if expr is not None:
        walk(expr)
    return tuple(durations), tuple(anchored)


def _children(node):
    if isinstance(node, (ast.And, ast.Or, ast.ListLit)):
        return node.items
    if isinstance(node, (ast.Not, ast.For, ast.IsNone)):
        return (node.operand,)
    if isinstance(node, ast.Paren):
        return (node.expr,)
    if isinstance(node, ast.Compare):
        return (node.left, node.right)
    if isinstance(node, ast.Call):
        return node.args
    if isinstance(node, ast.Changed):
        return tuple(n for n in (node.fact, node.old, node.new) if n is not None)
    return ()


def compile_files(files) -> CompileResult:
    """Compile RuleFiles (defaults first, when loaded) into a RuleSet and its diagnostics.

    The RuleSet is None when there are errors.
    """
    c = _Compiler()
    ruleset = c.compile(list(files))
    ok = not any(d.severity == "error" for d in c.diagnostics)
    return CompileResult(ruleset if ok else None, c.diagnostics)
