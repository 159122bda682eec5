"""Keeps each UTC day's analytics samples in the background, soon after the day is over,
so that no report walks a whole past day (the first report of a month walked its 30
days: 17 s of CPU over a million messages).

A :class:`DayKeeper` runs on its own thread — beside the deadline thread in embedded
mode, beside the deadline ticks in ``chatflow scheduler`` — so a day's walk (a second or
so of database time for 35,000 messages) never delays a deadline: the two share no lock
(a fill marks its day and walks it without holding the ``analytics_state`` row or
SQLite's writer; see ``server.analytics_days.fill``) and the keeper sleeps between days
as long as its last day took. Each round it keeps the newest day that is missing: the
day that just ended (KEEP_AFTER past midnight), then, at start, the ``days`` before it
not kept yet (ANALYTICS_KEEP_DAYS, default 31), and any day a late write forgot since.

Several schedulers (or web processes in embedded mode) may each run one: a day another
is walking is marked, and skipped (server.analytics_days: "busy").
"""
from __future__ import annotations

import logging
import math
import threading
import time

from sqlalchemy import and_, select

from . import analytics as A
from . import analytics_days
from . import store as S

log = logging.getLogger("chatflow.analytics")

DAY = analytics_days.DAY
DEFAULT_DAYS = 31  # how far back missing days are kept (ANALYTICS_KEEP_DAYS; 0: no keeper)
KEEP_AFTER = 120.0  # seconds past midnight before the day is kept: commits straddling it land first
LOOK_EVERY = 300.0  # seconds between looks for days a late write forgot
RETRY_AFTER = 600.0  # seconds before a day that could not be kept is tried again
MAX_PAUSE = 5.0  # seconds at most between two days kept in a row


class DayKeeper:
    """Keeps the days that are over and missing, one per :meth:`step`."""

    def __init__(self, db, clock=time.time, days: int = DEFAULT_DAYS,
                 wait_minutes: tuple = (A.DEFAULT_WAIT_MINUTES,)):
        self.db = db
        self.clock = clock
        self.days = days
        self.wait_minutes = tuple(wait_minutes)
        self._tried: dict = {}  # (day, wait_minutes) -> when it could not be kept

    def missing(self, now: float) -> list[tuple[int, float]]:
        """(day, wait_minutes) of the days over by ``now - KEEP_AFTER``, at most
        ``days`` back and none before the first stored event, not kept: newest first."""
        end = math.floor((now - KEEP_AFTER) / DAY)  # the days before this one are over
        first = end - self.days
        d = S.analytics_days
        with self.db.connect() as conn:
            first_event = conn.execute(select(S.events.c.at).order_by(S.events.c.at).limit(1)).scalar()
            if first_event is None:
                return []
            first = max(first, math.floor(first_event / DAY))
            kept = set(conn.execute(select(d.c.day, d.c.wait_minutes).where(
                and_(d.c.day >= first, d.c.day < end, d.c.filling.is_(None)))).all())
        return [(day, w) for day in range(end - 1, first - 1, -1) for w in self.wait_minutes
                if (day, w) not in kept]

    def step(self) -> tuple[int, bool] | None:
        """Tries to keep the newest missing day not tried lately: (day, whether it was
        kept), or None when none is missing. A day is not kept when another fill has
        it, a late write came during the walk, or writes in flight did not end; it is
        tried again after RETRY_AFTER."""
        now = self.clock()
        self._tried = {k: t for k, t in self._tried.items() if now - t < RETRY_AFTER}
        for day, w in self.missing(now):
            if (day, w) in self._tried:
                continue
            q = A.Query(day * DAY, (day + 1) * DAY, now=now, wait_minutes=w)
            with self.db.connect() as conn:
                A._tune(conn)
                kept = day in analytics_days.fill(conn, [day], q, live=A._samples, begin=A._tune)
                conn.commit()
                if kept and conn.dialect.name == "postgresql":
                    # the filtered reports' join is planned from these statistics: without
                    # them (a new table) PostgreSQL looked up each kept row's chat one by one
                    conn.exec_driver_sql("ANALYZE analytics_days, analytics_day_chats")
                    conn.commit()
            if not kept:
                self._tried[(day, w)] = now
            return day, kept
        return None

    def pause(self, now: float) -> float:
        """Seconds to sleep when nothing is missing: until the next day is over (and
        KEEP_AFTER), at most LOOK_EVERY, at least 1."""
        next_due = (math.floor((now - KEEP_AFTER) / DAY) + 1) * DAY + KEEP_AFTER
        return min(LOOK_EVERY, max(1.0, next_due - now))

    def run(self, stop: threading.Event) -> None:
        """Steps until ``stop`` is set; after a day tried, sleeps as long as it took
        (at most MAX_PAUSE): the keeper takes at most half of a core when catching up."""
        while not stop.is_set():
            began = time.monotonic()
            try:
                tried = self.step()
                wait = min(MAX_PAUSE, time.monotonic() - began) if tried is not None else self.pause(self.clock())
            except Exception:  # the database away, or a bug: logged; tried again later
                log.exception("keeping the analytics' days failed")
                wait = LOOK_EVERY
            stop.wait(wait)


def start_keeper(db, settings: dict, clock, stop: threading.Event) -> DayKeeper | None:
    """A DayKeeper on its own daemon thread until ``stop``, keeping ANALYTICS_KEEP_DAYS
    days back (None, and no thread, when that is 0)."""
    days = int(settings.get("ANALYTICS_KEEP_DAYS", DEFAULT_DAYS))
    if days <= 0:
        return None
    keeper = DayKeeper(db, clock, days)
    threading.Thread(target=keeper.run, args=(stop,), name="chatflow-analytics-days", daemon=True).start()
    return keeper
