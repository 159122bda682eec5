"""The analytics' days kept in the background (server.analytics_keeper), and the reports
with chat filters that read them — on SQLite and PostgreSQL, on the generated history of
test_analytics.py, against figures computed independently from its log (``expected``)
and against one live walk of the period."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import update

from server import analytics as A
from server import analytics_daily, analytics_days
from server import store as S
from server.analytics_keeper import KEEP_AFTER, DayKeeper
from server.scheduler import Scheduler

from test_analytics import (DAY, FIRST_DAY, LATER, ChatLog, _by_agent, _kept_days, _late_event, _walked, approx,
                            expected, history)  # noqa: F401  (history: the fixture)

TWO_DAYS = (FIRST_DAY * DAY, (FIRST_DAY + 2) * DAY)  # the history's two days, whole
FILTERS = ({"channel": "telegram"}, {"department": "sales"}, {"agent": "bob"},
           {"channel": "widget", "department": "support"})


def _keep_all(runtime, clock) -> list:
    keeper = DayKeeper(runtime.db, clock)
    steps = []
    while (step := keeper.step()) is not None:
        steps.append(step)
    return steps


def _summaries(runtime, q):
    with runtime.db.connect() as conn:
        A._tune(conn)
        return A._summaries(conn, q)


def _no_walk(*args, **kwargs):
    raise AssertionError("a kept day was walked")


def test_the_keeper_keeps_each_day_once_it_is_over_newest_first(runtime, history, clock):
    keeper = DayKeeper(runtime.db, clock)
    clock.now = (FIRST_DAY + 1) * DAY + KEEP_AFTER - 1  # the first day just ended: not yet
    assert keeper.missing(clock.now) == [] and keeper.step() is None
    clock.now = (FIRST_DAY + 1) * DAY + KEEP_AFTER
    assert keeper.missing(clock.now) == [(FIRST_DAY, A.DEFAULT_WAIT_MINUTES)]
    clock.now = LATER
    assert keeper.missing(clock.now) == [(FIRST_DAY + 1, 10.0), (FIRST_DAY, 10.0)]  # none before the first event
    assert _keep_all(runtime, clock) == [(FIRST_DAY + 1, True), (FIRST_DAY, True)]
    assert _kept_days(runtime) == [FIRST_DAY, FIRST_DAY + 1] and keeper.missing(clock.now) == []
    # a bounded catch-up: one day back keeps only yesterday
    with runtime.db.begin() as conn:
        conn.execute(S.analytics_days.delete())
    assert DayKeeper(runtime.db, clock, days=1).missing(clock.now) == [(FIRST_DAY + 1, 10.0)]
    clock.now += DAY  # a day without events is kept too (a report then reads it)
    assert DayKeeper(runtime.db, clock, days=2).missing(clock.now) == [(FIRST_DAY + 2, 10.0), (FIRST_DAY + 1, 10.0)]


def test_days_kept_by_the_keeper_give_the_figures_of_a_live_walk(runtime, history, clock, monkeypatch):
    logs, horizon = history
    clock.now = LATER
    periods = [TWO_DAYS, (FIRST_DAY * DAY, (FIRST_DAY + 1) * DAY), (TWO_DAYS[0] - DAY, TWO_DAYS[1] + DAY)]
    queries = [A.Query(lo, hi, now=LATER, **filters) for lo, hi in periods for filters in ({},) + FILTERS]
    walked = {q: _walked(runtime, q) for q in queries}
    _keep_all(runtime, clock)

    monkeypatch.setattr(analytics_days, "fill", _no_walk)  # every whole day is read, none walked
    for q in queries:
        if q.start < TWO_DAYS[0]:  # the parts before the first event and not over are walked
            assert _summaries(runtime, q) == walked[q], q
    monkeypatch.setattr(A, "_samples", _no_walk)
    for q in queries:
        if q.start >= TWO_DAYS[0]:
            assert _summaries(runtime, q) == walked[q], q
    # … and they are the figures computed from the log
    for filters in ({},) + FILTERS:
        got = A.report(runtime.db, A.Query(*TWO_DAYS, now=LATER, **filters), parts=("overview", "agents"))
        want = expected(logs, *TWO_DAYS, LATER, horizon, **filters)
        assert got["overview"]["chats"] == want["chats"], filters
        for figure in ("first_response_time", "response_time", "resolution_time"):
            assert got["overview"][figure] == approx(want[figure]), (filters, figure)
        assert _by_agent(got["agents"]) == approx(want["agents"]), filters
    # the daily series with filters reads them too
    series = analytics_daily.daily(runtime.db, A.Query(*TWO_DAYS, now=LATER, department="sales"))
    want = expected(logs, *TWO_DAYS, LATER, horizon, department="sales")["chats"]
    assert sum(d["started"] for d in series) == want["started"] and sum(d["answered"] for d in series) == want["answered"]


def test_a_filtered_report_reads_the_chats_as_they_are_now(runtime, history, clock):
    """The filters are the chats' values now: a chat reassigned after its day was kept
    counts for its new assignee, for its whole history, as a walk counts it."""
    clock.now = LATER
    _keep_all(runtime, clock)
    q = A.Query(*TWO_DAYS, now=LATER, agent="bob")
    before = _summaries(runtime, q)
    with runtime.db.begin() as conn:
        moved = conn.execute(update(S.chats).where(S.chats.c.assignee == "alice").values(assignee="bob")).rowcount
    assert moved
    after = _summaries(runtime, q)
    assert after == _walked(runtime, q) and after != before
    assert after[("started", A.ALL)]["count"] > before[("started", A.ALL)]["count"]


def test_a_late_write_after_the_keeper_kept_a_day_is_forgotten_and_kept_again(runtime, history, clock):
    logs, horizon = history
    clock.now = LATER
    _keep_all(runtime, clock)
    t0 = (FIRST_DAY + 1) * DAY + 600.0
    log = ChatLog("late", t0, "telegram", None, [(t0, "created", None), (t0, "customer", None),
                                                 (t0 + 120, "join", "bob"), (t0 + 300, "reply", "bob")])
    clock.now = t0
    runtime.start_chat("late", None, customer={"id": "ul", "name": "L", "email": "l@example.com"}, channel="telegram",
                       text="Hello")
    for t, kind, who in log.items[2:]:
        clock.now = t
        runtime.command(kind, "late", agent=who, **({"text": "answer"} if kind == "reply" else {}))
    clock.now = LATER
    assert _kept_days(runtime) == [FIRST_DAY]  # that day on is forgotten

    for filters in ({}, {"channel": "telegram"}, {"agent": "bob"}):
        got = A.report(runtime.db, A.Query(*TWO_DAYS, now=LATER, **filters), parts=("overview", "agents"))
        want = expected(logs + [log], *TWO_DAYS, LATER, horizon, **filters)
        assert got["overview"]["chats"] == want["chats"], filters
        assert got["overview"]["response_time"] == approx(want["response_time"]), filters
        assert _by_agent(got["agents"]) == approx(want["agents"]), filters
    # (the report above kept the day again; forgotten once more, the keeper keeps it)
    with runtime.db.begin() as conn:
        _late_event(conn, (FIRST_DAY + 1) * DAY + 700.0, chat_id="late2")
    assert _kept_days(runtime) == [FIRST_DAY]
    assert DayKeeper(runtime.db, clock).step() == (FIRST_DAY + 1, True)
    q = A.Query(*TWO_DAYS, now=LATER, channel="telegram")
    assert _summaries(runtime, q) == _walked(runtime, q)


def _held_walk(monkeypatch):
    """Makes the day's walk wait, once done, until ``release`` is set; ``walking`` is set then."""
    walking, release = threading.Event(), threading.Event()
    walk = A._samples

    def held(conn, q, by_chat=None):
        found = walk(conn, q, by_chat)
        if by_chat is not None:  # a fill's walk of a day
            walking.set()
            assert release.wait(60)
        return found

    monkeypatch.setattr(A, "_samples", held)
    return walking, release


def _waiting_chat(runtime, clock) -> float:
    """A chat whose assignee has not read the customer: its escalation deadline, 10 minutes on."""
    runtime.start_chat("waiting", None, customer={"id": "uw", "name": "W", "email": "w@example.com"},
                       channel="widget", text="Hello?")
    runtime.command("join", "waiting", agent="bob")
    runtime.command("customer_message", "waiting", text="anyone?")
    due = runtime.next_due()
    assert due is not None and due > clock.now
    return due


def test_a_day_being_walked_holds_up_no_deadline_and_no_late_write(runtime, history, clock, monkeypatch):
    """The mechanism that keeps deadlines on time while a day is kept: the fill holds no
    lock during its walk (PostgreSQL: not the analytics_state row; SQLite: not the one
    writer), so the deadline thread fires and commits, and a late write into the day
    commits at once — and the fill then keeps nothing of that day."""
    clock.now = LATER
    due = _waiting_chat(runtime, clock)
    walking, release = _held_walk(monkeypatch)
    keeper, result = DayKeeper(runtime.db, clock), {}
    thread = threading.Thread(target=lambda: result.update(step=keeper.step()))
    thread.start()
    try:
        assert walking.wait(60)
        clock.now = due
        assert runtime.run_due(due) == 1  # fired and committed while the day is walked
        with runtime.db.connect() as w:
            _late_event(w, (FIRST_DAY + 1) * DAY + 60)
            w.commit()
    finally:
        release.set()
        thread.join(60)
    assert result["step"] == (FIRST_DAY + 1, False)  # the late write came during the walk
    assert _kept_days(runtime) == []
    clock.now = LATER + 60
    assert keeper.step() == (FIRST_DAY, True)  # the day that failed waits RETRY_AFTER; the next one is kept


class _Enqueued(list):
    def enqueue(self, fn, *args, **kwargs):
        self.append((fn, args))


def test_the_scheduler_keeps_days_on_a_thread_beside_its_ticks(runtime, history, clock, monkeypatch):
    clock.now = LATER
    due = _waiting_chat(runtime, clock)
    walking, release = _held_walk(monkeypatch)
    queue, stop = _Enqueued(), threading.Event()
    thread = threading.Thread(target=Scheduler(runtime, queue, clock=clock).run, kwargs={"interval": 0.01, "stop": stop})
    thread.start()
    try:
        assert walking.wait(60)  # run() started the keeper: it is walking a day
        clock.now = due
        for _ in range(6000):  # the next ticks hand the deadline out while the walk is held
            if any(fn == "server.jobs.run_due_chats" for fn, _ in queue):
                break
            time.sleep(0.01)
        assert [args[0] for fn, args in queue if fn == "server.jobs.run_due_chats"] == [["waiting"]]
    finally:
        release.set()
        stop.set()
        thread.join(60)
    for _ in range(6000):  # the keeper's thread finishes the day it walked
        if _kept_days(runtime):
            break
        time.sleep(0.01)
    assert _kept_days(runtime) == [FIRST_DAY + 1]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_kept_figures_counted_in_chats_are_the_walks(backend):
    s = A._stream(A.Query(0, 1, now=1), postgres=False)
    assert {f.metric for f in A._figures(s, A.Query(0, 1, now=1)) if f.distinct_chats} | {"escalated"} \
        == analytics_days.COUNTED_IN_CHATS
