"""SLA figures of a period: per policy and target, how many cycles were achieved and how
many breached (README: "Analytics", "SLA policies and business time").

Kept apart from :mod:`server.analytics` (SQL over the event stream): these figures are
the engine's own SLA clocks (:mod:`engine.sla`) run over each stored chat with the active
rule set, so the report counts exactly what ``chat.sla_breached`` fired on. A cycle counts
in the period in which it was decided: *achieved* at its reply or close (when that was by
the due time), *breached* at its due time (once that has passed by ``now``), whether it
was met late or is still running.

The chats read are those started before the period's end that changed since its start or
are still open (an open chat can breach with no new event). Each chat's policy is the one
it has now, by its facts now.
"""
from __future__ import annotations

from sqlalchemy import or_, select

from engine import sla
from engine.context import Context
from engine.model import World
from engine.snapshot import chat_from_dict

from . import store as S

BATCH = 1000  # chats read per round trip


def _counts(policy) -> dict:
    return {t: {"achieved": 0, "breached": 0} for t in sla.TARGETS if t in policy.targets}


def sla_figures(db, q, ruleset) -> list[dict]:
    """``[{policy, title, within, targets: {TARGET: {achieved, breached, achieved_rate}}}]``
    for every policy of ``ruleset`` (in order; zeros when nothing was decided), over the
    chats ``q``'s filters keep (``q``: a server.analytics.Query)."""
    policies = list(getattr(ruleset, "slas", ()) or ()) if ruleset is not None else []
    figures = {p.id: _counts(p) for p in policies}
    if policies:
        world = World()
        stmt = (select(S.chats.c.state)
                .where(S.chats.c.created_at < q.end, or_(S.chats.c.updated_at >= q.start, S.chats.c.status == "open"))
                .execution_options(yield_per=BATCH))
        with db.connect() as conn:
            for (state,) in conn.execute(stmt):
                chat = chat_from_dict(state)
                if not _kept(chat, q):
                    continue
                ctx = Context(world, chat, None, q.now, ruleset)
                policy = sla.policy_of(ctx)
                if policy is None:
                    continue
                for target, counts in figures[policy.id].items():
                    for c in sla.clocks_of(ctx, target, policy):
                        if c.due is None:
                            continue
                        if c.achieved():
                            if q.start <= c.end < q.end:
                                counts["achieved"] += 1
                        elif q.start <= c.due < q.end and c.due <= q.now:
                            counts["breached"] += 1
    out = []
    for p in policies:
        targets = {}
        for target, counts in figures[p.id].items():
            decided = counts["achieved"] + counts["breached"]
            targets[target] = {**counts, "achieved_rate": counts["achieved"] / decided if decided else None}
        out.append({"policy": p.id, "title": p.title, "within": p.within, "targets": targets})
    return out


def _kept(chat, q) -> bool:
    """The report's chat filters, as the other figures apply them (the chat as it is now)."""
    return ((q.channel is None or chat.channel == q.channel)
            and (q.department is None or chat.department == q.department)
            and (q.agent is None or chat.assignee == q.agent))
