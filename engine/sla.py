"""SLA policies applied to a chat: which policy is the chat's, and each target's clock.

Pure: everything comes from the chat, the rule set and the instant asked about. A
target's *cycle* starts and ends at instants read from the chat (its messages, its
opening and closing), so the engine knows each due time in advance and arms it as a
deadline, exactly as it arms ``STATE for D``:

- ``first_response``: from the first customer message to the first agent reply after it;
- ``next_response``: from the first customer message after an agent reply (the anchor of
  ``chat.awaiting_agent`` once the chat had a first response) to the next agent reply —
  a new cycle with each such message, so a breach fires once per cycle;
- ``resolution``: from the chat's start or its last reopening to its close.

Messages count as the states count them (engine.states): public, not deleted, and only
an agent's reply answers (a rule's bot reply does not). The due time is the start plus
the target, in business time when the policy is ``within`` a schedule. A reply or close
at the due time itself is in time (inputs at an instant come before its deadlines).
"""
from __future__ import annotations

from dataclasses import dataclass

from dsl.schedule import business_deadline

from .conditions import compile_condition


@dataclass(frozen=True)
class SlaClock:
    """One target of the chat's policy: the current cycle and its due time."""

    policy: str
    target: str
    start: float
    end: float | None  # when the cycle was met (reply, close), None while running
    due: float | None  # None: the schedule has no time inside, never due
    warn_at: float | None  # when it becomes due soon (None: the policy has no due_soon)

    def breached(self, now: float) -> bool:
        if self.due is None:
            return False
        return self.end > self.due if self.end is not None else now >= self.due

    def due_soon(self, now: float) -> bool:
        return (self.end is None and self.warn_at is not None and self.due is not None
                and self.warn_at <= now < self.due)

    def achieved(self) -> bool:
        return self.end is not None and not self.breached(self.end)

    def next_change(self, now: float, state: str = "chat.sla_due_soon") -> float | None:
        """The next instant after ``now`` when ``state`` can change by time alone: the due
        time for ``chat.sla_breached``; the start of due-soon, then the due time, for
        ``chat.sla_due_soon``."""
        if self.end is not None or self.due is None:
            return None
        for t in ((self.warn_at, self.due) if state == "chat.sla_due_soon" else (self.due,)):
            if t is not None and t > now:
                return t
        return None

    def as_dict(self, now: float) -> dict:
        state = "achieved" if self.achieved() else "breached" if self.breached(now) else \
            "due_soon" if self.due_soon(now) else "running"
        return {"policy": self.policy, "target": self.target, "start": self.start, "end": self.end,
                "due": self.due, "due_soon_at": self.warn_at, "state": state}


_CONDITIONS: dict = {}  # id(ruleset) -> (ruleset, [(policy, condition)])


def _policies(ruleset) -> list:
    hit = _CONDITIONS.get(id(ruleset))
    if hit is not None and hit[0] is ruleset:
        return hit[1]
    out = [(p, compile_condition(p.when, ruleset.schedules)) for p in getattr(ruleset, "slas", ())]
    if len(_CONDITIONS) >= 16:
        _CONDITIONS.pop(next(iter(_CONDITIONS)))
    _CONDITIONS[id(ruleset)] = (ruleset, out)
    return out


def policy_of(ctx):
    """The chat's policy (dsl.compiler.CompiledSla): the first whose ``when`` holds, or None."""
    if ctx.ruleset is None:
        return None
    for policy, cond in _policies(ctx.ruleset):
        if cond(ctx) is True:
            return policy
    return None


def policy_id(ctx) -> str | None:
    p = policy_of(ctx)
    return None if p is None else p.id


TARGETS = ("first_response", "next_response", "resolution")


def cycles(chat, target: str) -> list:
    """Every cycle of the target the chat's history shows, oldest first, as (start, end or
    None): one ``first_response``; each ``next_response``; the current ``resolution``
    episode (earlier ones ended in closes the chat no longer records)."""
    if target == "resolution":
        start = chat.opened_at if chat.opened_at else chat.created_at
        end = chat.closed_at if chat.status == "closed" and chat.closed_at is not None else None
        return [(start, end)]
    out = []  # [start, end] of each cycle
    answered = False  # an agent replied since the current cycle's start
    for m in chat.messages:
        if not m.public or m.author not in ("customer", "agent"):
            continue
        if m.author == "customer":
            if not out or answered:
                if out and target == "first_response":
                    break  # only the first cycle counts
                out.append([m.at, None])
                answered = False
        elif out and not answered:
            out[-1][1], answered = m.at, True
    spans = [tuple(c) for c in out]
    return spans[:1] if target == "first_response" else spans[1:]


def cycle(chat, target: str) -> tuple | None:
    """(start, end or None) of the target's current cycle in the chat, None before one starts."""
    spans = cycles(chat, target)
    return spans[-1] if spans else None


def _clock(ctx, policy, target: str, start: float, end) -> SlaClock:
    seconds = policy.targets[target]
    warn = None
    if policy.within is not None:
        sched = ctx.ruleset.schedules[policy.within]
        due = business_deadline(sched, start, seconds)
        if policy.due_soon is not None and due is not None:
            warn = business_deadline(sched, start, max(seconds - policy.due_soon, 0))
    else:
        due = start + seconds
        if policy.due_soon is not None:
            warn = start + max(seconds - policy.due_soon, 0)
    return SlaClock(policy.id, target, start, end, due, warn)


def clocks_of(ctx, target: str, policy) -> list:
    """A clock for every cycle of the target under ``policy`` (analytics counts them all)."""
    if target not in policy.targets:
        return []
    return [_clock(ctx, policy, target, start, end) for start, end in cycles(ctx.chat, target)]


def clock(ctx, target: str, policy=None) -> SlaClock | None:
    """The target's clock for the chat at ``ctx`` (its policy unless ``policy`` is given),
    None when no policy applies, it sets no such target, or no cycle has started."""
    policy = policy if policy is not None else policy_of(ctx)
    if policy is None or target not in policy.targets:
        return None
    span = cycle(ctx.chat, target)
    if span is None:
        return None
    return _clock(ctx, policy, target, *span)


def breached(ctx, target: str) -> bool:
    c = clock(ctx, target)
    return c is not None and c.breached(ctx.now)


def due_soon(ctx, target: str) -> bool:
    c = clock(ctx, target)
    return c is not None and c.due_soon(ctx.now)


STATE_TESTS = {"chat.sla_breached": breached, "chat.sla_due_soon": due_soon}


def next_change(ctx, states) -> float | None:
    """The earliest instant after ``ctx.now`` at which one of these ``(SLA state, target)``
    changes by time alone (a deadline to arm), or None."""
    policy = policy_of(ctx)
    if policy is None:
        return None
    out = None
    for state, target in states:
        c = clock(ctx, target, policy)
        t = c.next_change(ctx.now, state) if c is not None else None
        if t is not None and (out is None or t < out):
            out = t
    return out


def clocks(ctx) -> list:
    """Every target clock of the chat's policy (for traces, dry-run and analytics)."""
    policy = policy_of(ctx)
    if policy is None:
        return []
    return [c for c in (clock(ctx, t, policy) for t in policy.targets) if c is not None]
