"""Schedules (``schedule support_hours { timezone "…" mon-fri 09:00-18:00 }``) resolved to
something the engine can ask: is an instant inside, and when does that next change.

Times are seconds since the Unix epoch (UTC); the engine passes its injected clock in.
"""
from __future__ import annotations

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
