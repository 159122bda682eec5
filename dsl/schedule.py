"""Schedules (``schedule support_hours { timezone "…" mon-fri 09:00-18:00 }``) resolved to
something the engine can ask: is an instant inside, and when does that next change.

Times are seconds since the Unix epoch (UTC); the engine passes its injected clock in.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from . import ast
from .errors import Span

DAY = 24 * 60


@dataclass(frozen=True)
class CompiledSchedule:
    id: str
    title: str | None
    tz: str
    # (weekday 0=mon, start minute, end minute) with end possibly > 1440 when a range
    # passes midnight into the next day
    windows: tuple
    span: Span

    def _zone(self):
        return ZoneInfo(self.tz)

    def contains(self, ts: float) -> bool:
        local = datetime.fromtimestamp(ts, self._zone())
        minute = local.hour * 60 + local.minute + local.second / 60
        wd = local.weekday()
        for day, start, end in self.windows:
            if day == wd and start <= minute < min(end, DAY):
                return True
            if end > DAY and (day + 1) % 7 == wd and minute < end - DAY:
                return True
        return False

    def next_change(self, ts: float) -> float:
        """The first instant after ``ts`` at which ``contains`` changes (within 8 days)."""
        zone = self._zone()
        now_inside = self.contains(ts)
        local = datetime.fromtimestamp(ts, zone)
        base = local.replace(hour=0, minute=0, second=0, microsecond=0)
        candidates = []
        for offset in range(-1, 9):
            day = base + timedelta(days=offset)
            wd = day.weekday()
            for wday, start, end in self.windows:
                if wday != wd:
                    continue
                for minute in (start, end):
                    moment = (day.replace(tzinfo=None) + timedelta(minutes=minute)).replace(tzinfo=zone)
                    candidates.append(moment.astimezone(timezone.utc).timestamp())
        for c in sorted(set(candidates)):
            if c > ts and self.contains(c) != now_inside:
                return c
        return ts + 8 * 86400  # no window at all: check again in a week

    def next_start(self, ts: float) -> float | None:
        """The first instant after ``ts`` at which the schedule opens (outside → inside):
        the start of the next period, also when ``ts`` is inside one. None when it never
        opens or never closes (no window, or every hour of the week)."""
        t, inside = ts, self.contains(ts)
        for _ in range(3):
            nxt = self.next_change(t)
            now_inside = self.contains(nxt)
            if now_inside == inside:
                return None  # next_change found no change within 8 days
            if now_inside:
                return nxt
            t, inside = nxt, now_inside
        return None


def compile_schedule(s: ast.Schedule) -> CompiledSchedule:
    windows = []
    for line in s.lines:
        day = line.first_day
        while True:
            end = line.end if line.end > line.start else line.end + DAY
            windows.append((day, line.start, end))
            if day == line.last_day:
                break
            day = (day + 1) % 7
    return CompiledSchedule(s.id, s.title, s.timezone, tuple(windows), s.span)


def next_hour(ts: float, tz: str) -> float:
    """The next top of the hour in a timezone after ``ts`` (when ``hour()`` changes)."""
    local = datetime.fromtimestamp(ts, ZoneInfo(tz))
    nxt = (local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1))
    return nxt.astimezone(timezone.utc).timestamp()


def next_midnight(ts: float, tz: str) -> float:
    """The next local midnight in a timezone after ``ts`` (when ``weekday()`` changes)."""
    zone = ZoneInfo(tz)
    local = datetime.fromtimestamp(ts, zone)
    nxt = (local.replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)).replace(tzinfo=zone)
    return nxt.astimezone(timezone.utc).timestamp()


# ---------------------------------------------------------------- business time
#
# ``STATE for 2h within "support_hours"`` and SLA targets counted in a schedule need the
# instant at which a given amount of time *inside* the schedule has passed. ``contains``
# reads the local wall time, so the set of instants inside is a union of intervals whose
# ends are window edges (a local time, which a DST change can map to two instants or to
# none) or the zone's offset changes themselves (local time jumps there). Between two
# such cuts ``contains`` cannot change, so summing whole segments is exact.

WEEK = 7 * 86400
_EMPTY_WEEKS = 3  # weeks in a row with no time inside: the schedule has none (left unarmed)
# How far ahead business time is counted: a deadline further away is never armed. Bounds
# the work of one deadline (a week of cuts at a time) whatever the rule text says, e.g.
# a long duration inside a schedule of one minute a week.
MAX_WEEKS = 106
MAX_BUSINESS_SECONDS = 366 * 86400  # the longest duration `within` a schedule (compile check)


def _offset(zone, ts: float):
    return datetime.fromtimestamp(ts, zone).utcoffset()


def _local_midnight(day, zone) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()


def schedule_cuts(sched: CompiledSchedule, lo: float, hi: float) -> list:
    """Sorted instants in ``(lo, hi)`` where ``sched.contains`` may change value."""
    zone = sched._zone()
    day = datetime.fromtimestamp(lo, zone).date() - timedelta(days=1)
    last = datetime.fromtimestamp(hi, zone).date() + timedelta(days=1)
    out = set()
    while day <= last:
        midnight = datetime(day.year, day.month, day.day)
        wd = day.weekday()
        for wday, start, end in sched.windows:
            if wday != wd:
                continue
            for minute in (start, end):
                naive = midnight + timedelta(minutes=minute)
                for fold in (0, 1):  # a repeated local time is two instants; a skipped one maps past the gap
                    out.add(naive.replace(tzinfo=zone, fold=fold).timestamp())
        a = _local_midnight(day, zone)
        b = _local_midnight(day + timedelta(days=1), zone)
        if _offset(zone, a) != _offset(zone, b):  # the offset changes this day: find the instant
            low, high, after = int(a), int(b), _offset(zone, b)
            while high - low > 1:
                mid = (low + high) // 2
                if _offset(zone, mid) == after:
                    high = mid
                else:
                    low = mid
            out.add(float(high))
        day += timedelta(days=1)
    return sorted(c for c in out if lo < c < hi)


def _segments(sched: CompiledSchedule, start: float):
    """(segment start, segment end, inside) from ``start`` on, a week of cuts at a time;
    ends after ``_EMPTY_WEEKS`` weeks in a row with no time inside, or ``MAX_WEEKS``."""
    t, empty, weeks = start, 0, 0
    while empty < _EMPTY_WEEKS and weeks < MAX_WEEKS:
        weeks += 1
        week_end = t + WEEK
        inside_any = False
        seg = t
        for cut in schedule_cuts(sched, t, week_end) + [week_end]:
            inside = sched.contains(seg)
            inside_any = inside_any or inside
            yield seg, cut, inside
            seg = cut
        empty = 0 if inside_any else empty + 1
        t = week_end


@functools.lru_cache(maxsize=65536)
def business_deadline(sched: CompiledSchedule, start: float, seconds: float) -> float | None:
    """The first instant by which ``seconds`` of time inside ``sched`` have passed since
    ``start``, or None if the schedule has no time inside at all (or not that much within
    ``MAX_WEEKS`` weeks).

    Exact: ``business_seconds(sched, start, result) == seconds`` and any earlier instant has
    less. Cached: a state's anchor stays the same through its episode, and the engine
    asks again at every event of the chat."""
    remaining = float(seconds)
    if remaining <= 0:
        return start
    for seg, cut, inside in _segments(sched, start):
        if inside:
            if cut - seg >= remaining:
                return seg + remaining
            remaining -= cut - seg
    return None


def business_seconds(sched: CompiledSchedule, start: float, end: float) -> float:
    """Seconds inside ``sched`` between ``start`` and ``end`` (0 when ``end <= start``)."""
    total = 0.0
    if end <= start:
        return total
    for seg, cut, inside in _segments(sched, start):
        if seg >= end:
            break
        if inside:
            total += min(cut, end) - seg
    return total
