"""The engine: applies inputs to chats, evaluates rules on the events they emit, fires
state rules at their exact deadlines, and returns effects as data.

Pure: the clock is whatever ``at`` the caller passes (the scenario runner's virtual
clock, the server's wall clock); nothing here does I/O. The simulator and the service
run this same class.

Semantics (SPEC §3.4): for each event, the event rules for it and every state rule are
evaluated in rule order, each seeing the changes of the ones before; a rule fires at
most once per event; ``stop`` ends the event; caused events are evaluated after it,
first in first out, and a chain deeper than ``max_cascade`` is cut (``cascade_limit``).
A state rule fires when its condition goes from false to true and not again until it
has been false; its next deadline is computed from its ``for`` durations and schedules.
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from dsl.schedule import business_deadline, next_hour, next_midnight
from dsl.vocabulary import UPDATE_EVENT

from . import commands as C
from . import sla
from .actions import Stop, run_action
from .codegen import compile_condition
from .conditions import explain
from .context import Context
from .effects import Effect, TraceEntry
from .model import World
from .routing import freed_agents
from .states import STATE_FUNCS

MAX_CASCADE = 10
# the plan of a chat.updated that follows its change's own event (see Engine._event_plan)
_FOLLOWING_UPDATE = UPDATE_EVENT + " (following)"
MAX_EVENTS = 1000  # events one input may cause in all: fan-out is bounded, not only depth


@dataclass(slots=True)
class _Rule:
    rule: object  # dsl.compiler.CompiledRule
    cond: object  # generated function ctx -> bool
    order: int
    wakers: tuple  # functions now -> next instant the clock part may change
    id: str = ""
    is_state: bool = False

    def __post_init__(self):
        self.id = self.rule.id
        self.is_state = self.rule.on is None


@dataclass
class Outcome:
    """What one input or one tick produced."""

    events: list = field(default_factory=list)
    effects: list = field(default_factory=list)
    fired: list = field(default_factory=list)  # (rule id, chat id)
    # backlog events of chats in World.foreign: for the caller to store and process later
    deferred: list = field(default_factory=list)


def _wakers(rule, schedules) -> tuple:
    """Functions giving the next instant a time-of-day part of the condition can change."""
    return _wakers_of(rule.when, rule.schedules, schedules)


def _wakers_of(when, schedule_ids, schedules) -> tuple:
    from dsl import ast

    out = []
    for sid in schedule_ids:
        out.append(schedules[sid].next_change)
    stack = [when] if when is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Call) and node.name in ("hour", "weekday"):
            tz = node.args[1].value if len(node.args) > 1 and isinstance(node.args[1], ast.Literal) else "UTC"
            fn = next_hour if node.name == "hour" else next_midnight
            out.append(lambda now, fn=fn, tz=tz: fn(now, tz))
        for attr in ("items", "args"):
            stack.extend(getattr(node, attr, ()) or ())
        for attr in ("operand", "left", "right", "expr"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, (str, int)):
                stack.append(child)
    return tuple(out)


@dataclass(slots=True)
class _Anchored:
    """A ``(CONDITION) for D`` condition of the rule set: the engine keeps, per chat, the
    instant it became true under ``key``. ``temporals``, ``durations`` and ``wakers`` are
    its own time-driven parts (a ``STATE for D``, a nested duration, a schedule), at whose
    instants it can become true with no event: the engine wakes the chat then."""

    key: str
    cond: object
    temporals: tuple
    durations: tuple
    wakers: tuple


# The id of the deadline that wakes a chat when only an anchored condition's own time-driven
# part is due (no rule's deadline falls then). Not a rule id: rule ids cannot start with @.
WAKE_TIMER = "@durations"
# The end of a snooze: the chat reopens by itself (commands.snooze_ended).
SNOOZE_TIMER = "@snooze"
ENGINE_TIMERS = (WAKE_TIMER, SNOOZE_TIMER)


def _anchored_conditions(ruleset) -> list:
    """Every anchored condition of the rule set once, each after the ones nested in it."""
    from dsl.compiler import _temporal_facts, duration_conditions

    seen, out = {}, []
    for r in ruleset.rules:
        for key, node in r.anchored:
            if key in seen:
                continue
            temporals, used, _ = _temporal_facts(node)
            durations, _ = duration_conditions(node)
            seen[key] = _Anchored(key, compile_condition(node, ruleset.schedules), temporals, durations,
                                  _wakers_of(node, used, ruleset.schedules))
            out.append(seen[key])
    depth = {a.key: 0 for a in out}
    for a in out:  # a nested duration's key is among a.durations; it must come first
        for key, _ in a.durations:
            depth[a.key] = max(depth[a.key], depth.get(key, 0) + 1)
    return sorted(out, key=lambda a: depth[a.key])


_COMPILED: dict = {}  # id(ruleset) -> (ruleset, rules, anchored): a service builds an Engine per command


def _compiled_rules(ruleset) -> list:
    """The rule set's conditions as generated functions, compiled once per rule set."""
    hit = _COMPILED.get(id(ruleset))
    if hit is not None and hit[0] is ruleset:
        return hit[1], hit[2]
    rules = [_Rule(r, compile_condition(r.when, ruleset.schedules), i, _wakers(r, ruleset.schedules))
             for i, r in enumerate(ruleset.rules)]
    anchored = _anchored_conditions(ruleset)
    if len(_COMPILED) >= 16:  # a few versions stay warm; an old one compiles again if it comes back
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[id(ruleset)] = (ruleset, rules, anchored)
    return rules, anchored


class Engine:
    """Runs a compiled RuleSet against a World of chats on an injected clock."""

    def __init__(self, ruleset, world: World | None = None, *, articles=None, canned=None,
                 tracing: bool = False, why: str = "all", max_cascade: int = MAX_CASCADE, observer=None):
        self.world = world if world is not None else World()
        # mappings, looked up by key only (a service passes lazy ones)
        self.articles = articles if articles is not None else {}
        self.canned = canned if canned is not None else {}
        self.tracing = tracing
        # with tracing, each rule entry explains its condition: "all" rules (dry-run) or only
        # the ones that "fired" (the service: explaining costs more than evaluating)
        self.why_all = why == "all"
        # observer(rule, ctx, value) is told of every evaluation (coverage uses it)
        self.observer = observer
        self.max_cascade = max_cascade
        self.trace: list[TraceEntry] = []
        self.effects: list[Effect] = []
        self.last: dict[tuple, bool] = {}  # (chat, rule) -> condition value at its last evaluation
        self.timers: dict[tuple, float] = {}  # (chat, rule) -> due
        # chat -> {key: instant}: when each anchored condition (`(CONDITION) for D`) last
        # became true; stored with the chat's rule memory, so it survives restarts
        self.anchors: dict[str, dict] = {}
        self._heap: list = []
        self.now: float | None = None
        self.set_ruleset(ruleset)

    # ------------------------------------------------------------ rule sets

    def set_ruleset(self, ruleset) -> None:
        """Activate a rule set. Deadlines of rules it no longer has are dropped; its state
        rules take effect from each chat's next event or deadline."""
        self.ruleset = ruleset
        self.world.routing = ruleset.routing
        self.rules, self._anchored = _compiled_rules(ruleset)
        self._by_id = {r.id: r for r in self.rules}
        self._plans: dict[str, list] = {}
        self._timed = [r for r in self.rules if r.rule.on is None
                       and (r.rule.temporals or r.rule.durations or r.wakers or r.rule.sla_states)]
        self._state_plan = [r for r in self.rules if r.rule.on is None]
        self._wake = [a for a in self._anchored if a.temporals or a.durations or a.wakers]
        keys = {a.key for a in self._anchored}
        for anchors in self.anchors.values():
            for key in [k for k in anchors if k not in keys]:
                del anchors[key]
        for key in [k for k in self.timers if k[1] not in self._by_id and k[1] not in ENGINE_TIMERS]:
            due = self.timers.pop(key)
            self._log("timer_cancelled", due if self.now is None else self.now, key[0], rule=key[1],
                      detail={"due": due, "reason": "rule removed"})
        for key in [k for k in self.last if k[1] not in self._by_id]:
            del self.last[key]

    def _plan(self, event_type: str) -> list:
        plan = self._plans.get(event_type)
        if plan is None:
            plan = [r for r in self.rules if r.rule.on is None or r.rule.on == event_type]
            self._plans[event_type] = plan
        return plan

    def _event_plan(self, event) -> list:
        """The rules an event runs. A chat.updated that follows its change's own event
        (chat.assigned, chat.closed …) runs only the rules on chat.updated: the state rules
        were just evaluated at that event, which already showed the change. A chat.updated
        that is its change's only event (set priority, set field) runs them too."""
        if event.type == UPDATE_EVENT and event.data.get("events"):
            plan = self._plans.get(_FOLLOWING_UPDATE)
            if plan is None:
                plan = self._plans[_FOLLOWING_UPDATE] = [r for r in self.rules if r.rule.on == UPDATE_EVENT]
            return plan
        return self._plan(event.type)

    # ------------------------------------------------------------ inputs

    def execute(self, command: str, at: float, **args) -> Outcome:
        """Apply one input command (a scenario step / API call) at ``at`` and evaluate the
        rules on what it emits. Raises model.CommandRefused with nothing changed."""
        return self.process(self.apply(command, at, **args), at)

    def apply(self, command: str, at: float, **args) -> list:
        """Apply one input command and return the events it emits, without evaluating
        rules on them (the service commits these first: a transactional outbox)."""
        fn = C.INPUTS[command]
        args = dict(args)
        shortcut = args.pop("canned", None) if command == "reply" else None
        if shortcut is not None:
            if shortcut not in self.canned:
                raise C.CommandRefused("bad_request", f"no canned response `{shortcut}`")
            args["canned_text"] = self.canned[shortcut]
        if command == "snooze":
            until_next = args.pop("until_next", None)
            if until_next is not None:
                if args.get("until") is not None or args.get("duration") is not None:
                    raise C.CommandRefused("bad_request", "snooze takes one of for, until and until_next")
                args["until"] = self.schedule_start(until_next, at)
        if command == "reply" and args.get("article") is not None:
            slug = args["article"]
            if slug not in self.articles:
                raise C.CommandRefused("bad_request", f"no article `{slug}`")
            from .actions import article_text
            args.setdefault("text", None)
            if args["text"] is None:
                args["text"] = article_text(self.articles[slug])
        self.now = at
        events = fn(self.world, at, **args)
        if self.tracing:
            self._log("input", at, args.get("chat_id"), detail={"command": command, "args": _shown(args)})
        return events

    def schedule_start(self, name, at: float) -> float:
        """When the active rule set's schedule ``name`` next opens after ``at`` (``snooze
        until next "NAME"``); refused when there is no such schedule or it never opens."""
        schedule = self.ruleset.schedules.get(name) if isinstance(name, str) else None
        if schedule is None:
            raise C.CommandRefused("unknown_schedule", f"no schedule {name!r} in the active rule set")
        start = schedule.next_start(at)
        if start is None:
            raise C.CommandRefused("bad_request", f"schedule {name!r} never opens after a closed period")
        return start

    # ------------------------------------------------------------ per-chat state (stored by the service)

    def chat_state(self, chat_id: str) -> dict:
        """What the engine remembers of a chat between evaluations: each state rule's last
        value (its episode) and its armed deadline."""
        return {
            "last": {rule: v for (chat, rule), v in self.last.items() if chat == chat_id},
            "timers": {rule: due for (chat, rule), due in self.timers.items() if chat == chat_id},
            "since": dict(self.anchors.get(chat_id) or {}),
        }

    def load_chat_state(self, chat_id: str, state: dict | None) -> None:
        for rule, v in ((state or {}).get("last") or {}).items():
            if rule in self._by_id:
                self.last[(chat_id, rule)] = bool(v)
        for rule, due in ((state or {}).get("timers") or {}).items():
            if rule in self._by_id or rule in ENGINE_TIMERS:
                order = self._by_id[rule].order if rule in self._by_id else -1
                self.timers[(chat_id, rule)] = float(due)
                heapq.heappush(self._heap, (float(due), order, chat_id, rule))
        keys = {a.key for a in self._anchored}
        since = {k: float(v) for k, v in ((state or {}).get("since") or {}).items() if k in keys}
        if since:
            self.anchors[chat_id] = since

    def process(self, events, at: float) -> Outcome:
        """Evaluate rules on events (and everything they cause), then re-arm deadlines."""
        out = Outcome()
        queue = deque((e, 1) for e in events)
        touched = []
        handled = 0
        while queue:
            event, depth = queue.popleft()
            handled += 1
            if handled > MAX_EVENTS:
                self._log("cascade_limit", at, event.chat_id, event=event.type, event_id=event.id,
                          detail={"events": handled, "rule": event.rule, "dropped": len(queue) + 1})
                break
            if depth > self.max_cascade:
                self._log("cascade_limit", at, event.chat_id, event=event.type, event_id=event.id,
                          detail={"depth": depth, "rule": event.rule})
                continue
            out.events.append(event)
            for chat_id in self._chats_of(event):
                if chat_id not in touched:
                    touched.append(chat_id)
                for caused in self._evaluate(event, chat_id, at, out):
                    queue.append((caused, depth + 1))
            for caused in self.backlog(event, at):
                if caused.chat_id in self.world.foreign:
                    out.deferred.append(caused)
                else:
                    queue.append((caused, depth + 1))
        for chat_id in touched:
            self._rearm(chat_id, at)
        return out

    def backlog(self, event, at: float) -> list:
        """The routing backlog after an event that lets agents take waiting chats (one
        came online, one's chat closed or changed hands): the events of the chats they
        were given, not evaluated yet (the caller queues or stores them)."""
        if not self.ruleset.routing.backlog:
            return []
        caused = []
        for agent_id in freed_agents(self.world, event):
            given = C.fill_backlog(self.world, at, agent_id)
            if self.tracing:
                self._log("backlog", at, event.chat_id, event=event.type, event_id=event.id,
                          detail={"agent": agent_id, "chats": [e.chat_id for e in given if e.type == "chat.assigned"]})
            caused.extend(given)
        return caused

    def _chats_of(self, event) -> list:
        if event.chat_id is not None:
            return [event.chat_id] if event.chat_id in self.world.chats else []
        # an agent's status change concerns the open chats it is responsible for
        return [c.id for c in self.world.chats.values() if c.assignee == event.agent_id and c.status == "open"]

    def _evaluate(self, event, chat_id, at, out: Outcome) -> list:
        plan = self._event_plan(event)
        chat = self.world.chats[chat_id]
        if self._anchored:  # every change of the chat comes with an event: notice it here
            ctx = Context(self.world, chat, event, at, self.ruleset, self.anchors.setdefault(chat_id, {}))
            self._refresh_anchors(ctx)
        elif not plan and not self.tracing:
            return []  # a chat.updated nobody listens to costs nothing more
        else:
            ctx = Context(self.world, chat, event, at, self.ruleset)
        if self.tracing:
            detail = {"actor": event.actor, "agent": event.agent_id, "rule": event.rule, "message": event.message_id}
            if event.type == UPDATE_EVENT:
                detail["changes"] = event.data.get("changes")
            self._log("event", at, chat_id, event=event.type, event_id=event.id, detail=detail)
        return self._run_rules(plan, ctx, event.id, event.type, at, out)

    def _run_rules(self, plan, ctx: Context, key_event: str, event_type, at: float, out: Outcome) -> list:
        """Evaluate rules in order on one event (or one deadline instant); fire those whose
        condition holds (state rules: that just became true). Returns the events caused."""
        chat_id = ctx.chat.id
        caused = []
        last, observer, tracing = self.last, self.observer, self.tracing
        for i, r in enumerate(plan):
            value = r.cond(ctx) is True
            if observer is not None:
                observer(r.rule, ctx, value)
            if r.is_state:
                key = (chat_id, r.id)
                was = last.get(key, False)
                if value is not was:
                    last[key] = value
                fire = value and not was
            else:
                was, fire = None, value
            if tracing:
                explained = r.rule.when is not None and (fire or self.why_all)
                self._log("rule", at, chat_id, rule=r.id, event=event_type, event_id=key_event, fired=fire,
                          detail={"why": explain(r.rule.when, ctx, self.ruleset.schedules) if explained else [],
                                  "state_rule": r.rule.on is None, "was_true": was})
            if fire:
                events, stopped = self._fire(r, ctx, key_event, at, out)
                if self._anchored:  # the rules after it see what its actions changed
                    self._refresh_anchors(ctx)
                caused.extend(events)
                if stopped:
                    self._log("stop", at, chat_id, rule=r.id, event=event_type, event_id=key_event)
                    self._rearm_skipped(plan[i + 1:], ctx)
                    break
        return caused

    def _refresh_anchors(self, ctx: Context) -> None:
        """Each anchored condition's anchor: kept while it holds, set to now when it has
        just become true, dropped when false (innermost first: an outer condition reads
        the anchors nested in it)."""
        anchors, now = ctx.anchors, ctx.now
        for a in self._anchored:
            if a.cond(ctx) is True:
                if a.key not in anchors:
                    anchors[a.key] = now
                    if self.tracing:
                        self._log("anchor", now, ctx.chat.id, detail={"condition": a.key, "since": now})
            elif a.key in anchors:
                del anchors[a.key]
                if self.tracing:
                    self._log("anchor", now, ctx.chat.id, detail={"condition": a.key, "since": None})

    def _rearm_skipped(self, rest, ctx: Context) -> None:
        """``stop`` keeps later rules from firing, not from noticing that a state rule's
        condition went false: those are re-armed, so they can fire when it holds again."""
        for r in rest:
            if r.rule.on is None and not r.cond(ctx):
                self.last[(ctx.chat.id, r.id)] = False

    def _fire(self, r: _Rule, ctx: Context, key_event: str, at: float, out: Outcome) -> tuple:
        """Run a rule's actions: (events they caused, whether it stopped the evaluation)."""
        out.fired.append((r.id, ctx.chat.id))
        self._log("fired", at, ctx.chat.id, rule=r.id, event=ctx.event.type if ctx.event else None,
                  event_id=key_event, fired=True)
        caused = []
        for index, action in enumerate(r.rule.actions):
            try:
                events, effects, note = run_action(self, ctx, r.rule, index, action, key_event)
            except Stop:
                return caused, True
            caused.extend(events)
            if effects:
                out.effects.extend(effects)
                self.effects.extend(effects)
                if self.tracing:
                    for eff in effects:
                        self._log("effect", at, ctx.chat.id, rule=r.id, event_id=key_event,
                                  detail={"kind": eff.kind, "to": eff.recipient, "template": eff.template,
                                          "text": eff.text, "key": eff.idempotency_key})
            if note:
                self._log("skipped", at, ctx.chat.id, rule=r.id, event_id=key_event,
                          detail={"action": action.kind, "reason": note})
        return caused, False

    # ------------------------------------------------------------ deadlines

    def _rearm(self, chat_id: str, now: float) -> None:
        chat = self.world.chats.get(chat_id)
        if chat is None:
            return
        self._arm(chat_id, SNOOZE_TIMER, -1, chat.snoozed_until if chat.status == "snoozed" else None, now)
        anchors: dict = {}  # each state's anchor, computed once for all rules here
        held = self.anchors.get(chat_id) or {}  # each anchored condition's
        schedules = self.ruleset.schedules
        armed = set()
        sla_ctx = None
        for r in self._timed:
            due = _next_due(chat, now, r.rule.temporals, r.rule.durations, r.wakers, anchors, held, schedules)
            if r.rule.sla_states:
                if sla_ctx is None:
                    sla_ctx = Context(self.world, chat, None, now, self.ruleset)
                t = sla.next_change(sla_ctx, r.rule.sla_states)
                if t is not None and (due is None or t < due):
                    due = t
            self._arm(chat_id, r.id, r.order, due, now)
            armed.add(due)
        if self._wake:
            # an anchored condition can become true at an instant of its own (a nested
            # `STATE for D`, a schedule) when no event comes: wake the chat then, unless a
            # rule's deadline already does
            due = None
            for a in self._wake:
                t = _next_due(chat, now, a.temporals, a.durations, a.wakers, anchors, held, schedules)
                if t is not None and (due is None or t < due):
                    due = t
            self._arm(chat_id, WAKE_TIMER, -1, None if due in armed else due, now)

    def _arm(self, chat_id: str, timer: str, order: int, due, now: float) -> None:
        key = (chat_id, timer)
        timers, tracing = self.timers, self.tracing
        old = timers.get(key)
        if due == old:
            return
        if old is not None:
            del timers[key]
            if tracing:
                self._log("timer_cancelled", now, chat_id, rule=timer, detail={"due": old})
        if due is not None:
            timers[key] = due
            heapq.heappush(self._heap, (due, order, chat_id, timer))
            if tracing:
                self._log("timer_armed", now, chat_id, rule=timer, detail={"due": due})

    def next_due(self) -> float | None:
        """The earliest armed deadline, or None."""
        heap = self._heap
        while heap:
            due, _, chat_id, rule_id = heap[0]
            if self.timers.get((chat_id, rule_id)) == due:
                return due
            heapq.heappop(heap)  # cancelled or re-armed since: drop the stale entry
        return None

    def run_due(self, until: float) -> Outcome:
        """Fire every deadline due at or before ``until``, in time then rule order."""
        out = Outcome()
        while True:
            due = self.next_due()
            if due is None or due > until:
                return out
            _, _, chat_id, rule_id = heapq.heappop(self._heap)
            del self.timers[(chat_id, rule_id)]
            self.now = due
            chat = self.world.chats.get(chat_id)
            if (rule_id not in self._by_id and rule_id not in ENGINE_TIMERS) or chat is None:
                continue
            if rule_id == SNOOZE_TIMER:
                self._snooze_ends(chat, due, out)
                continue
            self._tick(rule_id, chat, due, out)

    def _snooze_ends(self, chat, due: float, out: Outcome) -> None:
        """A snooze's end is due: the chat reopens (chat.reopened, reason snooze_ended), an
        event like any other."""
        self._log("timer_fired", due, chat.id, rule=SNOOZE_TIMER)
        sub = self.process(C.snooze_ended(self.world, due, chat.id), due)
        out.events.extend(sub.events)
        out.effects.extend(sub.effects)
        out.fired.extend(sub.fired)

    def _tick(self, rule_id: str, chat, due: float, out: Outcome) -> None:
        """A deadline is due: every state rule of the chat is evaluated at that instant, in
        order, so rules due at the same instant all get their turn, and a change one of
        them makes is seen by the others (as at an event)."""
        self._log("timer_fired", due, chat.id, rule=rule_id)
        ctx = Context(self.world, chat, None, due, self.ruleset, self.anchors.setdefault(chat.id, {}))
        if self._anchored:
            self._refresh_anchors(ctx)
        key_event = f"{chat.id}:deadline:{due:.3f}"
        caused = self._run_rules(self._state_plan, ctx, key_event, None, due, out)
        sub = self.process(caused, due) if caused else None
        if sub is not None:
            out.events.extend(sub.events)
            out.effects.extend(sub.effects)
            out.fired.extend(sub.fired)
            out.deferred.extend(sub.deferred)
        else:
            self._rearm(chat.id, due)

    # ------------------------------------------------------------ trace

    def _log(self, kind, at, chat_id, rule=None, event=None, event_id=None, fired=None, detail=None):
        # without tracing only what the scenario runner and coverage read is kept
        if not self.tracing and kind not in ("fired", "cascade_limit"):
            return
        self.trace.append(TraceEntry(kind, at, chat_id, rule, event, event_id, fired, detail or {}))

    def pending(self) -> list:
        """Armed deadlines of rules as (rule id, chat id, due), soonest first (the engine's
        own wake-ups are not listed)."""
        return sorted(((rule, chat, due) for (chat, rule), due in self.timers.items() if rule not in ENGINE_TIMERS),
                      key=lambda t: (t[2], t[1], t[0]))


def _next_due(chat, now: float, temporals, durations, wakers, states: dict, held: dict, schedules):
    """The soonest instant after ``now`` at which a ``STATE for D`` (``temporals``, with
    ``within "schedule"`` counted in its business time), a ``(CONDITION) for D``
    (``durations``, anchored in ``held``) or a time-of-day part (``wakers``) can turn true;
    None if none can. ``states`` caches state anchors."""
    due = None
    for temporal in temporals:
        state, seconds = temporal[0], temporal[1]
        since = states[state] if state in states else states.setdefault(state, STATE_FUNCS[state](chat))
        if since is None:
            continue
        if len(temporal) > 2:  # `within "schedule"`: the instant that much business time has passed
            t = business_deadline(schedules[temporal[2]], since, seconds)
        else:
            t = since + seconds
        if t is not None and t > now:
            due = t if due is None or t < due else due
    for key, seconds in durations:
        since = held.get(key)
        if since is not None and since + seconds > now:
            t = since + seconds
            due = t if due is None or t < due else due
    for waker in wakers:
        t = waker(now)
        if t > now and (due is None or t < due):
            due = t
    return due


def _shown(args: dict) -> dict:
    return {k: v for k, v in args.items() if v is not None}
