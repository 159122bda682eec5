"""Analytics: the figures admins act on, computed from the stored events, notifications,
emails, chats and rule traces — there is no second copy to keep in step.

Every figure belongs to the period ``[start, end)`` by the instant its defining thing
happened (the reply, the close, the join…), as Chatwoot's reports do; so a report of a
past period does not change later. What each figure means exactly is written in the
README ("Analytics"). In short, over a chat's event stream in order:

- a *wait* starts at a customer message when no wait is running and ends at the next
  agent public reply (a *response*, whose time is the response time) or at the chat's
  close; a rule's bot messages and private notes neither start nor end one;
- the *first response* of a chat is its first response; its time is counted from the
  chat's first customer message;
- *resolution time* is from the chat's start (or its last reopening) to a close.

The event stream of the chats active in the period is read once and walked with window
functions (SQLite ≥ 3.25 and PostgreSQL both have them). Medians and 90th percentiles
are ``percentile_cont`` on PostgreSQL; SQLite has no such aggregate, so there the samples
are fetched and the same interpolation is done in Python (:func:`percentile`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import (JSON, Column, Float, Integer, MetaData, String, Table, and_, case, func, literal,
                        null, or_, select, true, union_all)

from . import store as S

# The columns migration 0003 has the database generate (``events.msg_kind``,
# ``events.agent_id``, ``chats.department``) are not in server.store's tables, which
# describe what the application writes: they are read here only.
_generated = MetaData()
events = Table(
    "events", _generated,
    Column("seq", Integer, primary_key=True),
    Column("chat_id", String(100)),
    Column("type", String(40)),
    Column("at", Float),
    Column("msg_kind", String(10)),  # customer | reply | note | bot | NULL (no message)
    Column("agent_id", String(100)),
)
chats = Table(
    "chats", _generated,
    Column("id", String(100), primary_key=True),
    Column("channel", String(20)),
    Column("assignee", String(100)),
    Column("department", String(200)),
    Column("created_at", Float),
    Column("updated_at", Float),
    Column("state", JSON),
)

STREAM_TYPES = ("chat.created", "message.created", "chat.closed", "chat.reopened", "chat.joined")
ESCALATION_TEMPLATE = "unread_messages"  # SPEC §2.6: the notification of default.escalate_unread
ALL = ""  # the agent key of samples counted over all agents (no agent has an empty id)


@dataclass(frozen=True)
class Query:
    """What a report is asked for: the period ``[start, end)`` in epoch seconds, the
    chat filters (None: all), the wait threshold, and ``now`` (a wait still running is
    counted as long only once its threshold has passed by then)."""

    start: float
    end: float
    now: float
    channel: str | None = None
    department: str | None = None
    agent: str | None = None
    wait_minutes: float = 10.0

    @property
    def filtered(self) -> bool:
        return any(v is not None for v in (self.channel, self.department, self.agent))


def percentile(values, p: float) -> float | None:
    """``percentile_cont(p)``: linear interpolation between the closest ranks."""
    if not values:
        return None
    v = sorted(values)
    pos = p * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


# ------------------------------------------------------------------ the event stream

def _chat_filter(q: Query):
    """The ids of the chats the filters keep, as a subquery (None: no filter)."""
    if not q.filtered:
        return None
    conds = []
    if q.channel is not None:
        conds.append(chats.c.channel == q.channel)
    if q.department is not None:
        conds.append(chats.c.department == q.department)
    if q.agent is not None:
        conds.append(chats.c.assignee == q.agent)
    return select(chats.c.id).where(and_(*conds))


def _stream(q: Query):
    """The stream rows of every chat with an event in the period, from its start up to
    the period's end, with the running values the figures need (one sort by chat, seq).

    The period's rows are read by range on ``events.at``; the earlier history is read
    only for chats started before the period and changed since (``updated_at``), by
    chat id — not the whole table before ``start``."""
    e = events
    cols = (e.c.chat_id, e.c.seq, e.c.at, e.c.type, e.c.msg_kind, e.c.agent_id)
    typed = e.c.type.in_(STREAM_TYPES)
    keep = _chat_filter(q)
    recent = select(*cols).where(and_(e.c.at >= q.start, e.c.at < q.end, typed))
    older_chats = select(chats.c.id).where(and_(chats.c.created_at < q.start, chats.c.updated_at >= q.start))
    older = select(*cols).where(and_(e.c.chat_id.in_(older_chats), e.c.at < q.start, typed))
    if keep is not None:
        recent = recent.where(e.c.chat_id.in_(keep))
        older = older.where(e.c.chat_id.in_(keep))
    rows = union_all(recent, older).subquery("rows")

    is_reply = rows.c.msg_kind == "reply"
    ends = case((or_(is_reply, rows.c.type == "chat.closed"), 1), else_=0)
    joins = case((rows.c.type == "chat.joined", 1), else_=0)
    window = dict(partition_by=rows.c.chat_id, order_by=rows.c.seq)
    return select(
        rows.c.chat_id, rows.c.at, rows.c.type, rows.c.msg_kind, rows.c.agent_id,
        # how many waits ended before this row: the number of the wait this row is in
        func.coalesce(func.sum(ends).over(rows=(None, -1), **window), 0).label("wait_no"),
        func.coalesce(func.sum(joins).over(rows=(None, -1), **window), 0).label("joins_before"),
        func.max(case((rows.c.type.in_(("chat.created", "chat.reopened")), rows.c.at))).over(rows=(None, 0), **window)
        .label("opened_at"),
        func.min(case((rows.c.type == "chat.created", rows.c.at))).over(rows=(None, 0), **window).label("created_at"),
    ).cte("stream")


def _samples(q: Query):
    """One row per counted thing: (metric, agent, chat_id, value). Metrics: started,
    closed (value: resolution time), reply, note, first_join (value: time to join),
    response (value: response time), first_response (value: first response time),
    waited (a wait that passed the threshold in the period)."""
    s = _stream(q)
    in_period = and_(s.c.at >= q.start, s.c.at < q.end)
    none = null()

    def row(metric, agent, value, where):
        return select(literal(metric).label("metric"), agent.label("agent") if agent is not None else none.label("agent"),
                      s.c.chat_id, value.label("value") if value is not None else none.label("value")).where(where)

    waits = select(
        s.c.chat_id, s.c.wait_no,
        func.min(case((s.c.msg_kind == "customer", s.c.at))).label("wait_start"),
        func.max(case((or_(s.c.msg_kind == "reply", s.c.type == "chat.closed"), s.c.at))).label("end_at"),
        func.max(case((s.c.msg_kind == "reply", s.c.agent_id))).label("replier"),
        func.max(case((s.c.msg_kind == "reply", 1), else_=0)).label("by_reply"),
    ).group_by(s.c.chat_id, s.c.wait_no).cte("waits")
    w = waits.c
    answered = and_(w.wait_start.is_not(None), w.by_reply == 1)
    firsts = select(
        w.chat_id,
        func.min(w.wait_start).label("first_customer"),
        func.min(case((answered, w.end_at))).label("first_reply"),
    ).group_by(w.chat_id).subquery("firsts")
    f = firsts.c
    threshold = q.wait_minutes * 60.0
    late_at = w.wait_start + threshold
    seen_until = min(q.end, q.now)

    parts = [
        row("started", None, None, and_(s.c.type == "chat.created", in_period)),
        row("closed", None, s.c.at - s.c.opened_at, and_(s.c.type == "chat.closed", in_period)),
        row("reply", s.c.agent_id, None, and_(s.c.msg_kind == "reply", in_period)),
        row("note", s.c.agent_id, None, and_(s.c.msg_kind == "note", in_period)),
        row("first_join", s.c.agent_id, s.c.at - s.c.created_at,
            and_(s.c.type == "chat.joined", s.c.joins_before == 0, in_period)),
        select(literal("response").label("metric"), w.replier.label("agent"), w.chat_id,
               (w.end_at - w.wait_start).label("value"))
        .where(and_(answered, w.end_at >= q.start, w.end_at < q.end)),
        # the same samples once more as one group ("*"): the overall median and p90
        select(literal("response").label("metric"), literal(ALL).label("agent"), w.chat_id,
               (w.end_at - w.wait_start).label("value"))
        .where(and_(answered, w.end_at >= q.start, w.end_at < q.end)),
        select(literal("first_response").label("metric"), none.label("agent"), f.chat_id,
               (f.first_reply - f.first_customer).label("value"))
        .where(and_(f.first_reply >= q.start, f.first_reply < q.end)),
        select(literal("waited").label("metric"), none.label("agent"), w.chat_id, none.label("value"))
        .where(and_(w.wait_start.is_not(None), late_at >= q.start, late_at < seen_until,
                    or_(w.end_at.is_(None), w.end_at > late_at))),
    ]
    return union_all(*parts).subquery("samples")


def _summaries(conn, q: Query) -> dict:
    """{(metric, agent): {"count", "chats", "median", "p90"}} over the samples."""
    samples = _samples(q)
    key = (samples.c.metric, samples.c.agent)
    if conn.dialect.name == "postgresql":
        v = samples.c.value
        stmt = select(*key, func.count(), func.count(samples.c.chat_id.distinct()),
                      func.percentile_cont(0.5).within_group(v), func.percentile_cont(0.9).within_group(v)
                      ).group_by(*key)
        return {(m, a): {"count": n, "chats": c, "median": p50, "p90": p90}
                for m, a, n, c, p50, p90 in conn.execute(stmt)}
    groups: dict = {}
    for m, a, chat_id, value in conn.execute(select(samples)):
        g = groups.setdefault((m, a), ([], set(), []))
        g[0].append(chat_id)
        g[1].add(chat_id)
        if value is not None:
            g[2].append(value)
    return {k: {"count": len(ids), "chats": len(distinct), "median": percentile(vals, 0.5),
                "p90": percentile(vals, 0.9)} for k, (ids, distinct, vals) in groups.items()}


# ------------------------------------------------------------------ the other tables

def _escalated(conn, q: Query) -> int:
    n = S.notifications
    stmt = select(func.count(n.c.chat_id.distinct())).where(
        and_(n.c.template == ESCALATION_TEMPLATE, n.c.at >= q.start, n.c.at < q.end))
    keep = _chat_filter(q)
    if keep is not None:
        stmt = stmt.where(n.c.chat_id.in_(keep))
    return conn.execute(stmt).scalar() or 0


def _email(conn, q: Query) -> dict:
    """Emails sent to customers in the period, and the customers' answers by email: the
    customer messages received by email after the chat's first email (read from the
    stored chats that were emailed; there are few)."""
    m = S.emails
    keep = _chat_filter(q)
    sent = select(func.count(), func.count(m.c.chat_id.distinct())).where(and_(m.c.at >= q.start, m.c.at < q.end))
    if keep is not None:
        sent = sent.where(m.c.chat_id.in_(keep))
    n_emails, n_chats = conn.execute(sent).one()
    first_email = select(m.c.chat_id, func.min(m.c.at).label("first")).where(m.c.at < q.end) \
        .group_by(m.c.chat_id).subquery("first_email")
    stmt = select(first_email.c.first, chats.c.state).join(chats, chats.c.id == first_email.c.chat_id) \
        .where(chats.c.updated_at >= q.start)
    if keep is not None:
        stmt = stmt.where(chats.c.id.in_(keep))
    answers, answered = 0, 0
    for first, state in conn.execute(stmt):
        found = sum(1 for msg in state.get("messages") or ()
                    if msg.get("author") == "customer" and msg.get("via") == "email"
                    and msg["at"] >= first and q.start <= msg["at"] < q.end)
        answers += found
        answered += 1 if found else 0
    return {"emails_sent": n_emails or 0, "customers_emailed": n_chats or 0,
            "answers_received": answers, "customers_answered": answered}


def rule_figures(conn, q: Query, rule_ids=()) -> list[dict]:
    """Per rule, from the stored traces of rule runs in the period: times evaluated,
    fired, effects produced (notifications, emails, replies), the last time it fired.
    ``rule_ids`` (the active rule set) are listed even when they never ran. Chat
    filters apply (a trace belongs to one chat)."""
    t = S.traces
    if conn.dialect.name == "postgresql":
        entry = func.json_array_elements(t.c.entries).table_valued("value").alias("entry")
        field = lambda name: entry.c.value.op("->>")(name)  # noqa: E731
        at = func.cast(field("at"), Float)
    else:
        entry = func.json_each(t.c.entries).table_valued("value").alias("entry")
        field = lambda name: func.json_extract(entry.c.value, f"$.{name}")  # noqa: E731
        at = field("at")
    kind, rule = field("kind"), field("rule")
    stmt = select(rule.label("rule"),
                  func.sum(case((kind == "rule", 1), else_=0)),
                  func.sum(case((kind == "fired", 1), else_=0)),
                  func.sum(case((kind == "effect", 1), else_=0)),
                  func.max(case((kind == "fired", at))),
                  ).select_from(t).join(entry, true()) \
        .where(and_(t.c.at >= q.start, t.c.at < q.end, kind.in_(("rule", "fired", "effect")))).group_by(rule)
    keep = _chat_filter(q)
    if keep is not None:
        stmt = stmt.where(t.c.chat_id.in_(keep))
    found = {r: {"rule": r, "evaluated": int(ev or 0), "fired": int(fi or 0), "effects": int(ef or 0),
                 "last_fired": last} for r, ev, fi, ef, last in conn.execute(stmt) if r is not None}
    for r in rule_ids:
        found.setdefault(r, {"rule": r, "evaluated": 0, "fired": 0, "effects": 0, "last_fired": None})
    return sorted(found.values(), key=lambda d: (-d["fired"], -d["evaluated"], d["rule"]))


# ------------------------------------------------------------------ the reports

def _times(summary: dict) -> dict:
    return {"count": summary["count"], "median": summary["median"], "p90": summary["p90"]}


def _empty() -> dict:
    return {"count": 0, "chats": 0, "median": None, "p90": None}


def _overview(conn, q: Query, sums: dict) -> dict:
    get = lambda metric: sums.get((metric, None), _empty())  # noqa: E731
    return {
        "chats": {
            "started": get("started")["count"],
            "answered": get("first_response")["count"],
            "closed": get("closed")["chats"],
            "escalated_unread": _escalated(conn, q),
            "waited_longer": get("waited")["chats"],
        },
        "first_response_time": _times(get("first_response")),
        "response_time": _times(sums.get(("response", ALL), _empty())),
        "resolution_time": _times(get("closed")),
        "email": _email(conn, q),
    }


def _agents(conn, q: Query, sums: dict) -> list[dict]:
    ids = {a for (_, a) in sums if a not in (None, ALL)}
    with_access = select(S.agents.c.id).where(S.agents.c.access_chats.is_(True))
    ids |= {r[0] for r in conn.execute(with_access)}
    if q.agent is not None:
        ids = {q.agent}
    out = []
    for a in sorted(ids):
        get = lambda metric: sums.get((metric, a), _empty())  # noqa: E731
        joins = get("first_join")
        out.append({"agent": a, "chats_handled": get("reply")["chats"], "replies": get("reply")["count"],
                    "notes": get("note")["count"], "responses": get("response")["count"],
                    "response_time_median": get("response")["median"],
                    "joins": joins["count"], "time_to_join": {"median": joins["median"], "p90": joins["p90"]}})
    return out


def report(db, q: Query, parts=("overview", "agents", "rules"), rule_ids=()) -> dict:
    """The report of ``q``: ``overview`` (chats started, answered, closed, escalated,
    waited longer; first response, response and resolution times; email), ``agents``
    and ``rules``, as JSON-able data (times in seconds)."""
    out = {}
    with db.connect() as conn:
        if "overview" in parts or "agents" in parts:
            sums = _summaries(conn, q)
            if "overview" in parts:
                out["overview"] = _overview(conn, q, sums)
            if "agents" in parts:
                out["agents"] = _agents(conn, q, sums)
        if "rules" in parts:
            out["rules"] = rule_figures(conn, q, rule_ids)
    return out
