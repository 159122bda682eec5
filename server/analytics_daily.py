"""The daily series of the analytics page's chart: per UTC day of a period, the chats
started, answered (their first response) and closed.

Each day's figures are the overview's, with the period cut at midnights: the same stream
rows and the same definitions (:func:`server.analytics._figures`), so a day's numbers
cannot drift from the report's. They sum to the period's figures, except ``closed``: a
chat closed on two days counts on each day, and once in the period.

Kept apart from ``server.analytics`` because only the page asks for it: it reads the
kept days (server.analytics_days; with chat filters, the kept samples of the chats they
keep) and walks the rest, a walk ``/report`` and ``chatflow report`` need not pay for.
"""
from __future__ import annotations

import dataclasses
import math
from datetime import date, timedelta

from sqlalchemy import Integer, cast, func, literal, select, union_all

from . import analytics as A
from . import analytics_days

DAY = 86400
SERIES = {"started": ("started", "count"), "first_response": ("answered", "count"), "closed": ("closed", "chats")}
MAX_DAYS = 3660  # ten years of rows; a longer period is answered without the series


def _day_number(at, postgres: bool):
    """Days since 1970-01-01 (UTC) of epoch seconds ``at``. CAST truncates on SQLite but
    rounds on PostgreSQL, hence floor() there (SQLite's floor() is an optional build)."""
    if postgres:
        return cast(func.floor(at / DAY), Integer)
    return cast(at / DAY, Integer)


def days(q: A.Query) -> list[date]:
    """The UTC days the period ``[start, end)`` touches, in order."""
    first, last = math.floor(q.start / DAY), math.ceil(q.end / DAY) - 1
    epoch = date(1970, 1, 1)
    return [epoch + timedelta(days=n) for n in range(first, last + 1)]


def daily(db, q: A.Query) -> list[dict] | None:
    """``[{"day": "2026-11-01", "started": n, "answered": n, "closed": n}, …]`` for every
    UTC day of ``q``'s period (zeros included), with ``q``'s chat filters; None when the
    period is longer than MAX_DAYS. The whole past days come from the kept days
    (server.analytics_days; with filters, the kept samples of the chats they keep) and
    only the rest is walked."""
    every = days(q)
    if len(every) > MAX_DAYS:
        return None
    out = {d: {"day": d.isoformat(), "started": 0, "answered": 0, "closed": 0} for d in every}
    epoch = date(1970, 1, 1)
    with db.connect() as conn:
        A._tune(conn)
        found, pieces = analytics_days.by_day(conn, q, live=A._samples, begin=A._tune, chats=A._chat_filter(q))
        for number, samples in found.items():
            for metric, (name, counted) in SERIES.items():
                s = samples.get((metric, A.ALL))
                if s is not None:
                    out[epoch + timedelta(days=number)][name] = s.count if counted == "count" else len(s.chats)
        for start, end in pieces:
            for number, counts in _walked(conn, dataclasses.replace(q, start=start, end=end)).items():
                for name, n in counts.items():
                    out[epoch + timedelta(days=number)][name] = n
    return list(out.values())


def _walked(conn, q: A.Query) -> dict:
    """{day number: {name: n}} of the series over ``q``'s period, by one walk of it."""
    postgres = conn.dialect.name == "postgresql"
    s = A._stream(q, postgres)
    day = _day_number(s.c.at, postgres)
    parts = [select(literal(fig.metric).label("metric"), day.label("day"), s.c.chat_id).where(fig.where)
             for fig in A._figures(s, q) if fig.metric in SERIES and not fig.per_agent]
    rows = union_all(*parts).subquery("samples")
    stmt = select(rows.c.metric, rows.c.day, func.count(), func.count(rows.c.chat_id.distinct())) \
        .group_by(rows.c.metric, rows.c.day)
    out: dict = {}
    for metric, number, n, chats in conn.execute(stmt):
        name, counted = SERIES[metric]
        out.setdefault(int(number), {})[name] = n if counted == "count" else chats
    return out
