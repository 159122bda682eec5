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

The event stream of the chats active in a period is read once and walked with window
functions (SQLite ≥ 3.25 and PostgreSQL both have them): :func:`_samples` fetches each
figure's samples, and medians and 90th percentiles are interpolated in Python
(:func:`percentile`, as ``percentile_cont``). A report walks only the parts of its
period that are not whole past days; the samples of those are kept per day, over
everyone and per chat (``server.analytics_days``: kept in the background soon after
midnight, forgotten when the day's events change), and a report with chat filters
reads the kept samples of the chats its filters keep.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import (JSON, Column, bindparam, Float, Integer, MetaData, String, Table, and_, case, func, literal,
                        null, or_, select, true, union_all)

from . import analytics_days
from . import store as S
from .analytics_days import Samples

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
DEFAULT_WAIT_MINUTES = 10.0  # the wait threshold of the API, the command line and the page; kept in the background
ALL = ""  # the agent key of the figures counted over everyone (no agent has an empty id)


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
    wait_minutes: float = DEFAULT_WAIT_MINUTES

    @property
    def filtered(self) -> bool:
        return any(v is not None for v in (self.channel, self.department, self.agent))


def percentile(values, p: float) -> float | None:
    """``percentile_cont(p)``: linear interpolation between the closest ranks."""
    return _ranked(sorted(values), p)


def _ranked(v, p: float) -> float | None:
    """:func:`percentile` of values ``v`` already sorted."""
    if not v:
        return None
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


# What a stream row is, as a small number (sorting narrow rows is cheaper than strings).
CUSTOMER, REPLY, NOTE, CLOSED, REOPENED, JOINED, CREATED_WITH_MESSAGE, CREATED = 1, 2, 3, 4, 5, 6, 10, 11
CUSTOMER_MESSAGE = (CUSTOMER, CREATED_WITH_MESSAGE)  # a chat started with text starts with a customer message
WAIT_ENDS = (REPLY, CLOSED)
WAIT_ROWS = CUSTOMER_MESSAGE + WAIT_ENDS  # the rows that start, continue or end a wait
KINDS = 16  # a row's (seq, kind) packed in one number: seq * KINDS + kind


def _stream(q: Query, postgres: bool):
    """The stream rows of every chat with an event in the period, from its start up to
    the period's end — (chat_id, at, kind, agent_id) — with the running values every
    figure needs, so that each figure is a filter over these rows.

    The period's rows are read by range on ``events.at``; the earlier history is read
    only for chats started before the period and changed since (``updated_at``; since
    the wait threshold before it), by chat id — not the whole table before ``start``. The rows are sorted once, by chat
    and sequence; two window passes run over that order (the second needs the first's
    values; PostgreSQL does not sort again)."""
    e = events
    kind = case(
        (e.c.type == "chat.created", case((e.c.msg_kind == "customer", CREATED_WITH_MESSAGE), else_=CREATED)),
        (e.c.msg_kind == "customer", CUSTOMER), (e.c.msg_kind == "reply", REPLY), (e.c.msg_kind == "note", NOTE),
        (e.c.type == "chat.closed", CLOSED), (e.c.type == "chat.reopened", REOPENED),
        (e.c.type == "chat.joined", JOINED), else_=0)
    cols = (e.c.chat_id, e.c.seq, e.c.at, kind.label("kind"), e.c.agent_id)
    typed = e.c.type.in_(STREAM_TYPES)
    keep = _chat_filter(q)
    recent = select(*cols).where(and_(e.c.at >= q.start, e.c.at < q.end, typed))
    # a chat changed after ``start`` has rows in the period; one changed in the wait
    # threshold before it may have a wait that turns long in the period, with no row there
    older_chats = select(chats.c.id).where(and_(chats.c.created_at < q.start,
                                                chats.c.updated_at >= q.start - q.wait_minutes * 60.0))
    if keep is not None:
        recent = recent.where(e.c.chat_id.in_(keep))
        older_chats = older_chats.where(chats.c.id.in_(keep))
    if postgres:
        # chat by chat through the chat_id index (LATERAL): left to itself, PostgreSQL
        # hashed the older chats and read every event before the period by time — for
        # the last day of a month, the 29 days before it
        ids = older_chats.subquery("older_chats")
        # (OFFSET 0 keeps the planner from pulling the subquery up into a hash join)
        history = select(*cols).where(and_(e.c.chat_id == ids.c.id, e.c.at < q.start, typed)).offset(0) \
            .lateral("history")
        older = select(*history.c).select_from(ids.join(history, true()))
    else:
        older = select(*cols).where(and_(e.c.chat_id.in_(older_chats), e.c.at < q.start, typed))
    rows = union_all(recent, older).subquery("rows")

    k = rows.c.kind
    # Sorting by the chat id is most of the work: in PostgreSQL's "C" collation its keys
    # compare as bytes (and abbreviate), several times faster than a libc locale's.
    chat_key = rows.c.chat_id.collate("C") if postgres else rows.c.chat_id
    order = dict(partition_by=chat_key, order_by=rows.c.seq)
    so_far, before = dict(order, rows=(None, 0)), dict(order, rows=(None, -1))
    joins = case((k == JOINED, 1), else_=0)
    wait_row = case((k.in_(WAIT_ROWS), rows.c.seq * KINDS + k))
    first = select(
        chat_key.label("chat_id"), rows.c.seq, rows.c.at, k, rows.c.agent_id,
        # the last wait row before this one (a customer message, a reply or a close), packed
        func.max(wait_row).over(**before).label("prev_wait_row"),
        # the chat's last wait row up to the period's end: a customer message means a wait still running
        func.max(wait_row).over(**order, rows=(None, None)).label("last_wait_row"),
        (func.sum(joins).over(**so_far) - joins).label("joins_before"),
        func.max(case((k.in_((CREATED, CREATED_WITH_MESSAGE, REOPENED)), rows.c.at))).over(**so_far)
        .label("opened_at"),
        func.min(case((k.in_((CREATED, CREATED_WITH_MESSAGE)), rows.c.at))).over(**so_far).label("created_at"),
        func.min(case((k.in_(CUSTOMER_MESSAGE), rows.c.at))).over(**so_far).label("first_customer_at"),
    ).subquery("first")

    f = first.c
    prev_kind = f.prev_wait_row % KINDS  # NULL when there is none
    waiting = prev_kind.in_(CUSTOMER_MESSAGE)  # a wait was running just before this row
    starts = and_(f.kind.in_(CUSTOMER_MESSAGE), or_(f.prev_wait_row.is_(None), prev_kind.in_(WAIT_ENDS)))
    answers = and_(f.kind == REPLY, waiting)
    order = dict(partition_by=f.chat_id, order_by=f.seq)
    return select(
        f.chat_id, f.at, f.kind, f.agent_id, f.joins_before, f.opened_at, f.created_at, f.first_customer_at,
        # the wait this row is in or ends: the latest wait start so far
        func.max(case((starts, f.at))).over(**order, rows=(None, 0)).label("wait_start"),
        case((and_(f.kind.in_(WAIT_ENDS), waiting), 1), else_=0).label("ends_wait"),
        case((answers, 1), else_=0).label("answers"),
        (func.sum(case((answers, 1), else_=0)).over(**order, rows=(None, 0))
         - case((answers, 1), else_=0)).label("answers_before"),
        case((and_(f.kind.in_(CUSTOMER_MESSAGE), f.seq * KINDS + f.kind == f.last_wait_row), 1), else_=0)
        .label("still_waiting"),
    ).cte("stream")


@dataclass(frozen=True)
class _Figure:
    """The samples of one figure: the stream rows where ``where`` holds, each one
    counted, with its chat and its ``value`` (a time); ``per_agent`` figures are
    grouped by the row's agent, the others counted over everyone."""

    metric: str
    where: object
    value: object = None
    per_agent: bool = False
    distinct_chats: bool = False  # whether the number of distinct chats is wanted


def _figures(s, q: Query) -> list[_Figure]:
    """What every figure counts (see the module docstring and the README)."""
    k = s.c.kind
    in_period = and_(s.c.at >= q.start, s.c.at < q.end)
    response = and_(s.c.answers == 1, in_period)
    late_at = s.c.wait_start + q.wait_minutes * 60.0
    late_in_period = and_(late_at >= q.start, late_at < min(q.end, q.now))
    return [
        _Figure("started", and_(k.in_((CREATED, CREATED_WITH_MESSAGE)), in_period)),
        _Figure("closed", and_(k == CLOSED, in_period), s.c.at - s.c.opened_at, distinct_chats=True),
        _Figure("response", response, s.c.at - s.c.wait_start),
        _Figure("first_response", and_(response, s.c.answers_before == 0), s.c.at - s.c.first_customer_at),
        # a wait ended (by a reply or a close) after its threshold, or still running past it
        _Figure("waited", and_(late_in_period, or_(and_(s.c.ends_wait == 1, s.c.at > late_at), s.c.still_waiting == 1)),
                distinct_chats=True),
        _Figure("reply", and_(k == REPLY, in_period), per_agent=True, distinct_chats=True),
        _Figure("note", and_(k == NOTE, in_period), per_agent=True),
        _Figure("response", response, s.c.at - s.c.wait_start, per_agent=True),
        _Figure("first_join", and_(k == JOINED, s.c.joins_before == 0, in_period), s.c.at - s.c.created_at,
                per_agent=True),
    ]


def _summaries(conn, q: Query) -> dict:
    """{(metric, agent): {"count", "chats", "median", "p90"}} of every figure (agent ALL
    for the figures over everyone): from the kept samples of the closed days and a walk
    of the rest (server.analytics_days). With chat filters the kept days give the
    samples of the chats the filters keep now, and the rest is walked for those chats."""
    return _summarized(analytics_days.samples(conn, q, live=_samples, begin=_tune, chats=_chat_filter(q)))


def _samples(conn, q: Query, by_chat: dict | None = None) -> dict:
    """{(metric, agent): Samples} of every figure over the period of ``q``: one walk of
    the stream, each sample row fetched (chat ids only for the figures counted in chats,
    unless ``by_chat`` is given); and the chats escalated (``("escalated", ALL)``, from
    the notifications). ``by_chat`` ({}), if given, gets each chat's own samples:
    {chat_id: {(metric, agent): [count, [values]]}}."""
    s = _stream(q, conn.dialect.name == "postgresql")
    figures = _figures(s, q)
    none = null()
    per_chat = by_chat is not None
    parts = [select(literal(i).label("figure"), (s.c.agent_id if fig.per_agent else literal(ALL)).label("agent"),
                    (s.c.chat_id if fig.distinct_chats or per_chat else none).label("chat_id"),
                    (fig.value if fig.value is not None else none).label("value")).where(fig.where)
             for i, fig in enumerate(figures)]
    out: dict = {}
    for i, agent, chat_id, value in conn.execute(union_all(*parts)).all():  # (all at once: cheaper per row)
        fig = figures[i]
        key = (fig.metric, agent)
        g = out.get(key)
        if g is None:
            g = out[key] = Samples(0, set() if fig.distinct_chats else None)
        g.count += 1
        if fig.distinct_chats:
            g.chats.add(chat_id)
        if value is not None:
            g.values.append(value)
        if per_chat:
            mine = by_chat.get(chat_id)
            if mine is None:
                mine = by_chat[chat_id] = {}
            e = mine.get(key)
            if e is None:
                e = mine[key] = [0, []]
            e[0] += 1
            if value is not None:
                e[1].append(value)
    out[("escalated", ALL)] = _escalated_chats(conn, q, by_chat)
    return out


def _summarized(samples: dict) -> dict:
    out = {}
    for key, s in samples.items():
        v = sorted(s.values)  # once for both: the kept days' values are sorted runs, which sort fast
        out[key] = {"count": s.count, "chats": None if s.chats is None else len(s.chats),
                    "median": _ranked(v, 0.5), "p90": _ranked(v, 0.9)}
    return out


# ------------------------------------------------------------------ the other tables

def _escalations(q: Query):
    """The escalation notifications of the period (each subscriber gets one)."""
    n = S.notifications
    # the template inline, not a parameter: PostgreSQL then proves the partial index
    # ix_notifications_escalations (migration 0003) applies whatever the plan
    template = bindparam("template", ESCALATION_TEMPLATE, literal_execute=True)
    where = and_(n.c.template == template, n.c.at >= q.start, n.c.at < q.end)
    keep = _chat_filter(q)
    return where if keep is None else and_(where, n.c.chat_id.in_(keep))


def _escalated_chats(conn, q: Query, by_chat: dict | None = None) -> Samples:
    """The escalations of the period as samples: their number and their chats (and
    each chat's number in ``by_chat``, as :func:`_samples`)."""
    n = S.notifications
    found = Samples(0, set())
    for chat_id, times in conn.execute(select(n.c.chat_id, func.count()).where(_escalations(q)).group_by(n.c.chat_id)):
        found.count += times
        found.chats.add(chat_id)
        if by_chat is not None:
            by_chat.setdefault(chat_id, {})[("escalated", ALL)] = [times, []]
    return found


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
    """Per rule, for the period: times evaluated, fired, effects produced (notifications,
    emails, replies), the last time it fired. ``rule_ids`` (the active rule set) are
    listed even when they never ran. Without chat filters the counts come from
    ``rule_runs`` (kept by the workers per minute: the period's edges count by the
    minute); with filters, from the traces of the chats they keep."""
    if _chat_filter(q) is None:
        found = _rule_runs(conn, q)
    else:
        found = _rule_traces(conn, q)
    for r in rule_ids:
        found.setdefault(r, {"rule": r, "evaluated": 0, "fired": 0, "effects": 0, "last_fired": None})
    return sorted(found.values(), key=lambda d: (-d["fired"], -d["evaluated"], d["rule"]))


def _rule_runs(conn, q: Query) -> dict:
    t = S.rule_runs
    first, end = math.ceil(q.start / 60), math.ceil(q.end / 60)  # minutes starting in [start, end)
    stmt = (select(t.c.rule, func.sum(t.c.evaluated), func.sum(t.c.fired), func.sum(t.c.effects),
                   func.max(t.c.last_fired))
            .where(and_(t.c.minute >= first, t.c.minute < end)).group_by(t.c.rule))
    return {r: {"rule": r, "evaluated": int(ev or 0), "fired": int(fi or 0), "effects": int(ef or 0),
                "last_fired": last} for r, ev, fi, ef, last in conn.execute(stmt)}


def _rule_traces(conn, q: Query) -> dict:
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
    return {r: {"rule": r, "evaluated": int(ev or 0), "fired": int(fi or 0), "effects": int(ef or 0),
                "last_fired": last} for r, ev, fi, ef, last in conn.execute(stmt) if r is not None}


# ------------------------------------------------------------------ the reports

def _times(summary: dict) -> dict:
    return {"count": summary["count"], "median": summary["median"], "p90": summary["p90"]}


def _empty() -> dict:
    return {"count": 0, "chats": 0, "median": None, "p90": None}


def _overview(conn, q: Query, sums: dict) -> dict:
    get = lambda metric: sums.get((metric, ALL), _empty())  # noqa: E731
    return {
        "chats": {
            "started": get("started")["count"],
            "answered": get("first_response")["count"],
            "closed": get("closed")["chats"],
            "escalated_unread": get("escalated")["chats"],
            "waited_longer": get("waited")["chats"],
        },
        "first_response_time": _times(get("first_response")),
        "response_time": _times(get("response")),
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


def _tune(conn) -> None:
    """Settings of the report's transaction (call at its start). PostgreSQL's JIT
    compiles a plan this size with LLVM once its estimated cost is high: on a month of a
    million messages the compiling took 5 s of a 10 s report, the query itself half
    that. The sorts of the stream fit in memory with a little more than the default 4 MB."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL jit = off")
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")


def report(db, q: Query, parts=("overview", "agents", "rules"), rule_ids=()) -> dict:
    """The report of ``q``: ``overview`` (chats started, answered, closed, escalated,
    waited longer; first response, response and resolution times; email), ``agents``
    and ``rules``, as JSON-able data (times in seconds)."""
    out = {}
    with db.connect() as conn:
        _tune(conn)
        if "overview" in parts or "agents" in parts:
            sums = _summaries(conn, q)
            if "overview" in parts:
                out["overview"] = _overview(conn, q, sums)
            if "agents" in parts:
                out["agents"] = _agents(conn, q, sums)
        if "rules" in parts:
            out["rules"] = rule_figures(conn, q, rule_ids)
    return out
