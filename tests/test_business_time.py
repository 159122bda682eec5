"""Business time (``STATE for D within "schedule"``, SLA targets counted in a schedule):
the deadline has exactly the time inside the schedule that was asked for, and is never
early, in any timezone and across DST changes.

The oracle walks minute by minute and asks only ``CompiledSchedule.contains`` (what
``in_schedule`` answers), so it shares nothing with the cut computation it checks.
"""
from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import assume, given, settings, strategies as st

from dsl import ast
from dsl.schedule import MAX_WEEKS, WEEK, business_deadline, business_seconds, compile_schedule

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
         "America/Santiago", "Europe/London", "Pacific/Chatham"]
# around the DST changes of 2026 (Berlin/London/New York in March, October, November;
# Lord Howe, Santiago, Chatham in April and September)
DST_DAYS = [datetime(2026, m, d, tzinfo=timezone.utc).timestamp()
            for m, d in ((3, 8), (3, 29), (4, 5), (9, 6), (9, 27), (10, 25), (11, 1))]


def _schedule(tz, lines):
    return compile_schedule(ast.Schedule("s", None, tz, tuple(
        ast.ScheduleLine(a, b, s, e) for a, b, s, e in lines)))


minute_of_day = st.integers(0, 24 * 60 - 1)


@st.composite
def lines(draw):
    out = []
    for _ in range(draw(st.integers(1, 4))):
        first = draw(st.integers(0, 6))
        last = draw(st.integers(0, 6))
        # whole quarter hours some of the time, so ranges meet DST changes (01:00-03:00) often
        start = draw(st.one_of(minute_of_day, st.integers(0, 95).map(lambda q: q * 15)))
        end = draw(st.one_of(st.integers(1, 24 * 60), st.integers(1, 96).map(lambda q: q * 15)))
        if end == start:
            end = start + 1 if start < 24 * 60 - 1 else 1
        out.append((first, last, start, end))
    return out


starts = st.one_of(
    st.integers(int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()),
                int(datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp())),
    st.tuples(st.sampled_from(DST_DAYS), st.integers(-3 * 86400, 3 * 86400)).map(lambda p: int(p[0] + p[1])),
)


def _due(sched, start, seconds):
    """The deadline; when there is none (not that much time inside within MAX_WEEKS), check
    that there indeed is not and skip the example."""
    due = business_deadline(sched, start, seconds)
    if due is None:
        assert business_seconds(sched, start, start + MAX_WEEKS * WEEK) < seconds
    assume(due is not None)
    return due


def _oracle(sched, start, seconds):
    """Minute by minute from a whole minute: the end of the minute that completes it."""
    assert start % 60 == 0 and seconds % 60 == 0
    t, got = start, 0
    while True:
        if sched.contains(t):
            got += 60
            if got == seconds:
                return t + 60
        t += 60


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(ZONES), lines(), starts, st.integers(1, 600))
def test_deadline_matches_the_minute_by_minute_count(tz, ls, start, minutes):
    sched = _schedule(tz, ls)
    start -= start % 60
    seconds = minutes * 60
    due = _due(sched, float(start), seconds)
    assume(due - start <= 3 * WEEK)  # the oracle walks every minute
    assert due == _oracle(sched, start, seconds)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ZONES), lines(), starts, st.integers(1, 5 * 86400))
def test_deadline_has_exactly_the_time_asked_and_is_never_early(tz, ls, start, seconds):
    sched = _schedule(tz, ls)
    due = _due(sched, float(start), seconds)
    assert due >= start + seconds  # business time never runs faster than the clock
    assert business_seconds(sched, float(start), due) == seconds
    assert business_seconds(sched, float(start), due - 1) < seconds  # one second earlier is too early
    assert sched.contains(due - 1)  # the last second counted was inside


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ZONES), lines(), starts, st.integers(1, 86400), st.floats(0, 0.999))
def test_a_fractional_start_is_never_early(tz, ls, start, seconds, frac):
    sched = _schedule(tz, ls)
    begin = start + frac
    due = _due(sched, begin, seconds)
    assert business_seconds(sched, begin, due) >= seconds - 1e-6
    assert business_seconds(sched, begin, due - 0.01) < seconds


def _utc(*args):
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def test_weekend_and_nights_are_skipped():
    sched = _schedule("Europe/Berlin", [(0, 4, 9 * 60, 18 * 60)])
    # Friday 17:00 Berlin (16:00 UTC, winter): one hour left on Friday, one on Monday
    assert business_deadline(sched, _utc(2026, 1, 9, 16), 7200) == _utc(2026, 1, 12, 9)


def test_a_spring_forward_night_is_an_hour_shorter():
    # 22:00-06:00 every night in Berlin; on 2026-03-29 02:00 becomes 03:00: 7 hours that night
    sched = _schedule("Europe/Berlin", [(0, 6, 22 * 60, 6 * 60)])
    night = _utc(2026, 3, 28, 21)  # Sat 22:00 CET
    assert business_seconds(sched, night, _utc(2026, 3, 29, 12)) == 7 * 3600
    assert business_deadline(sched, night, 7 * 3600) == _utc(2026, 3, 29, 4)  # 06:00 CEST


def test_a_fall_back_night_counts_the_repeated_hour():
    sched = _schedule("Europe/Berlin", [(0, 6, 22 * 60, 6 * 60)])
    night = _utc(2026, 10, 24, 20)  # Sat 22:00 CEST
    assert business_seconds(sched, night, _utc(2026, 10, 25, 12)) == 9 * 3600


def test_a_window_inside_the_skipped_hour_never_happens_that_day():
    # Sunday 02:00-03:00 Berlin does not exist on 2026-03-29: the next one is a week later
    sched = _schedule("Europe/Berlin", [(6, 6, 2 * 60, 3 * 60)])
    start = _utc(2026, 3, 28, 12)
    assert business_deadline(sched, start, 60) == _utc(2026, 4, 5, 0, 1)  # 02:01 CEST


def test_a_schedule_with_no_time_gives_none():
    # Sunday 02:00-02:30 only exists in some weeks: a zone where it never exists is rare,
    # so the "no time at all" path is shown with an empty window list instead
    sched = compile_schedule(ast.Schedule("s", None, "UTC", ()))
    assert business_deadline(sched, 0.0, 60) is None
    assert business_seconds(sched, 0.0, 10 * 86400) == 0


def test_a_window_that_ends_in_the_repeated_hour_counts_both_passes():
    # Sunday 00:00-02:30 Berlin on 2026-10-25: 00:00-02:30 CEST, then 02:00-02:30 again in CET
    sched = _schedule("Europe/Berlin", [(6, 6, 0, 150)])
    day = _utc(2026, 10, 24, 12)
    assert business_seconds(sched, day, _utc(2026, 10, 25, 12)) == 3 * 3600
    assert business_deadline(sched, day, 2.5 * 3600) == _utc(2026, 10, 25, 0, 30)
    assert business_deadline(sched, day, 2.5 * 3600 + 1) == _utc(2026, 10, 25, 1, 0, 1)


def test_a_window_cut_by_the_skipped_hour_ends_at_the_change():
    # Sunday 01:00-02:30 Berlin on 2026-03-29: at 02:00 CET the clock jumps to 03:00 CEST
    sched = _schedule("Europe/Berlin", [(6, 6, 60, 150)])
    day = _utc(2026, 3, 28, 12)
    assert business_seconds(sched, day, _utc(2026, 3, 29, 12)) == 3600
    assert business_deadline(sched, day, 3600) == _utc(2026, 3, 29, 1)
    assert business_deadline(sched, day, 3601) == _utc(2026, 4, 4, 23, 0, 1)  # a week later: 01:00:01 CEST


def test_a_deadline_beyond_two_years_is_never_armed_and_costs_little():
    # one minute a week: 366 days of it would take 7,000 years; the count stops at
    # MAX_WEEKS and the deadline is None (the rule is left unarmed), quickly
    import time

    from dsl.schedule import MAX_WEEKS

    sched = _schedule("Europe/Berlin", [(6, 6, 120, 121)])
    t0 = time.perf_counter()
    assert business_deadline(sched, _utc(2026, 1, 1), 366 * 86400) is None
    assert time.perf_counter() - t0 < 5
    assert business_deadline(sched, _utc(2026, 1, 1), (MAX_WEEKS - 2) * 60) is not None
