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
    from dsl import ast

    out = []
    for sid in rule.schedules:
        out.append(schedules[sid].next_change)
    stack = [rule.when] if rule.when is not None else []
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


_COMPILED: dict = {}  # id(ruleset) -> (ruleset, rules): a service builds an Engine per command


def _compiled_rules(ruleset) -> list:
    """The rule set's conditions as generated functions, compiled once per rule set."""
    hit = _COMPILED.get(id(ruleset))
    if hit is not None and hit[0] is ruleset:
        return hit[1]
    rules = [_Rule(r, compile_condition(r.when, ruleset.schedules), i, _wakers(r, ruleset.schedules))
             for i, r in enumerate(ruleset.rules)]
    if len(_COMPILED) >= 16:  # a few versions stay warm; an old one compiles again if it comes back
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[id(ruleset)] = (ruleset, rules)
    return rules


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
        self._heap: list = []
        self.now: float | None = None
        self.set_ruleset(ruleset)

    # ------------------------------------------------------------ rule sets

    def set_ruleset(self, ruleset) -> None:
        """Activate a rule set. Deadlines of rules it no longer has are dropped; its state
        rules take effect from each chat's next event or deadline."""
        self.ruleset = ruleset
        self.world.routing = ruleset.routing
        self.rules = _compiled_rules(ruleset)
        self._by_id = {r.id: r for r in self.rules}
        self._plans: dict[str, list] = {}
        self._timed = [r for r in self.rules if r.rule.on is None
                       and (r.rule.temporals or r.wakers or r.rule.sla_states)]
        self._state_plan = [r for r in self.rules if r.rule.on is None]
        for key in [k for k in self.timers if k[1] not in self._by_id]:
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

    # ------------------------------------------------------------ per-chat state (stored by the service)

    def chat_state(self, chat_id: str) -> dict:
        """What the engine remembers of a chat between evaluations: each state rule's last
        value (its episode) and its armed deadline."""
        return {
            "last": {rule: v for (chat, rule), v in self.last.items() if chat == chat_id},
            "timers": {rule: due for (chat, rule), due in self.timers.items() if chat == chat_id},
        }

    def load_chat_state(self, chat_id: str, state: dict | None) -> None:
        for rule, v in ((state or {}).get("last") or {}).items():
            if rule in self._by_id:
                self.last[(chat_id, rule)] = bool(v)
        for rule, due in ((state or {}).get("timers") or {}).items():
            if rule in self._by_id:
                r = self._by_id[rule]
                self.timers[(chat_id, rule)] = float(due)
                heapq.heappush(self._heap, (float(due), r.order, chat_id, rule))

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
        if not plan and not self.tracing:
            return []  # a chat.updated nobody listens to costs nothing more
        chat = self.world.chats[chat_id]
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
                caused.extend(events)
                if stopped:
                    self._log("stop", at, chat_id, rule=r.id, event=event_type, event_id=key_event)
                    self._rearm_skipped(plan[i + 1:], ctx)
                    break
        return caused

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
        anchors: dict = {}  # each state's anchor, computed once for all rules here
        tracing, timers = self.tracing, self.timers
        sla_ctx = None
        for r in self._timed:
            due = None
            for temporal in r.rule.temporals:
                state, seconds = temporal[0], temporal[1]
                since = anchors[state] if state in anchors else anchors.setdefault(state, STATE_FUNCS[state](chat))
                if since is None:
                    continue
                if len(temporal) > 2:  # `within "schedule"`: the instant that much business time has passed
                    t = business_deadline(self.ruleset.schedules[temporal[2]], since, seconds)
                else:
                    t = since + seconds
                if t is not None and t > now:
                    due = t if due is None or t < due else due
            if r.rule.sla_states:
                if sla_ctx is None:
                    sla_ctx = Context(self.world, chat, None, now, self.ruleset)
                t = sla.next_change(sla_ctx, r.rule.sla_states)
                if t is not None and (due is None or t < due):
                    due = t
            for waker in r.wakers:
                t = waker(now)
                if t > now and (due is None or t < due):
                    due = t
            key = (chat_id, r.id)
            old = timers.get(key)
            if due == old:
                continue
            if old is not None:
                del timers[key]
                if tracing:
                    self._log("timer_cancelled", now, chat_id, rule=r.id, detail={"due": old})
            if due is not None:
                timers[key] = due
                heapq.heappush(self._heap, (due, r.order, chat_id, r.id))
                if tracing:
                    self._log("timer_armed", now, chat_id, rule=r.id, detail={"due": due})

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
            if rule_id not in self._by_id or chat is None:
                continue
            self._tick(rule_id, chat, due, out)

    def _tick(self, rule_id: str, chat, due: float, out: Outcome) -> None:
        """A deadline is due: every state rule of the chat is evaluated at that instant, in
        order, so rules due at the same instant all get their turn, and a change one of
        them makes is seen by the others (as at an event)."""
        self._log("timer_fired", due, chat.id, rule=rule_id)
        ctx = Context(self.world, chat, None, due, self.ruleset)
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
        """Armed deadlines as (rule id, chat id, due), soonest first."""
        return sorted(((rule, chat, due) for (chat, rule), due in self.timers.items()), key=lambda t: (t[2], t[1], t[0]))


def _shown(args: dict) -> dict:
    return {k: v for k, v in args.items() if v is not None}
