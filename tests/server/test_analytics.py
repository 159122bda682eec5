"""Analytics on generated histories, on SQLite and on PostgreSQL (the ``backend`` fixture).

A seeded random history of chats is played through the real Runtime on a virtual clock,
deadlines fired at their exact instants as the deadline thread does. The test keeps its
own log of what it did and computes every expected figure from that log in plain Python
(its own walk of the waits, its own model of when the default rules escalate and email,
``statistics`` for medians and percentiles) — never with server.analytics.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import random
import statistics
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
from sqlalchemy import insert, select

from server import analytics as A
from server import analytics_daily, analytics_days
from server import store as S

START = datetime(2026, 1, 5, 9, 0, 0, tzinfo=timezone.utc).timestamp()  # the clock fixture's start (conftest)

AGENTS = {"alice": ["sales"], "bob": ["support"], "carol": ["sales", "support"]}
MIN = 60.0
ESCALATE_AFTER = 10 * MIN  # default.escalate_unread
EMAIL_AFTER = 10 * MIN  # default.email_unread_replies


@dataclass
class ChatLog:
    id: str
    start: float
    channel: str
    department: str | None
    items: list = field(default_factory=list)  # (t, kind, agent): created customer reply note join close leave email_reply

    @property
    def assignee(self):
        return next((a for _, k, a in self.items if k == "join"), None)


def generate(seed: int, n_chats: int = 36, span: float = 36 * 3600.0):
    """(actions, logs): actions are (t, chat id, command, args) to play in time order."""
    rnd = random.Random(seed)
    actions, logs = [], []
    for i in range(n_chats):
        cid = f"c{i}"
        t0 = START + rnd.uniform(0, span)
        log = ChatLog(cid, t0, rnd.choice(["widget", "telegram", "email"]), rnd.choice(["sales", "support", None]))
        logs.append(log)

        def act(t, command, kind=None, who=None, **args):
            actions.append((t, cid, command, args))
            if kind:
                log.items.append((t, kind, who))

        with_text = rnd.random() < 0.9
        act(t0, "start_chat", "created", customer={"id": f"u{i}", "name": f"U{i}", "email": f"u{i}@example.com"},
            channel=log.channel, department=log.department, **({"text": "Hello"} if with_text else {}))
        if with_text:
            log.items.append((t0, "customer", None))
        t = t0
        agent = rnd.choice(sorted(AGENTS)) if rnd.random() < 0.85 else None
        joined = None
        for r in range(rnd.randint(1, 4)):
            if r > 0 or not with_text:
                t += rnd.uniform(20, 400)
                act(t, "customer_message", "customer", text="more")
            for _ in range(rnd.choice([0, 0, 1, 2])):  # more customer messages in the same wait
                t += rnd.uniform(5, 120)
                act(t, "customer_message", "customer", text="and")
            if rnd.random() < 0.3:  # a colleague's note neither answers nor ends the wait
                t += rnd.uniform(5, 60)
                other = rnd.choice([a for a in sorted(AGENTS) if a != agent])
                act(t, "note", "note", other, agent=other, text=f"@{agent or 'alice'} look")
            if agent is None:
                continue
            gap = rnd.uniform(20, 500) if rnd.random() < 0.7 else rnd.uniform(700, 1500)
            if joined is None:
                joined = t0 + rnd.uniform(5, min(400.0, t + gap - t0 - 1))
                act(joined, "join", "join", agent, agent=agent)
            t = max(t + gap, joined + 1)
            act(t, "reply", "reply", agent, agent=agent, text="answer")
        ending = rnd.random()
        if ending < 0.45:  # closed; sometimes after a last customer message nobody answers
            if rnd.random() < 0.3:
                t += rnd.uniform(10, 200)
                act(t, "customer_message", "customer", text="thanks")
            t += rnd.uniform(60, 900)
            closer = agent or rnd.choice(sorted(AGENTS))
            act(t, "close", "close", closer, agent=closer)
        elif ending < 0.8 and agent is not None:  # the customer leaves with an unread reply
            t += rnd.uniform(10, 300)
            act(t, "customer_leaves", "leave")
            if rnd.random() < 0.6:
                last_reply = max(x for x, k, _ in log.items if k == "reply")
                t = last_reply + EMAIL_AFTER + rnd.uniform(60, 1800)
                act(t, "email_reply", "email_reply", text="answer by email")
                if rnd.random() < 0.5:
                    t += rnd.uniform(30, 900)
                    act(t, "reply", "reply", agent, agent=agent, text="got it")
                    if rnd.random() < 0.5:
                        t += rnd.uniform(60, 500)
                        act(t, "close", "close", agent, agent=agent)
        log.items.sort(key=lambda item: item[0])
    actions.sort(key=lambda a: a[0])
    return actions, logs


def play(runtime, clock, actions, horizon: float) -> None:
    """Apply the actions in time order, firing each deadline at its own instant first."""

    def deadlines_until(t):
        while (due := runtime.next_due()) is not None and due < t:
            clock.now = due
            runtime.run_due(due)

    for t, cid, command, args in actions:
        deadlines_until(t)
        clock.now = t
        if command == "start_chat":
            runtime.start_chat(cid, None, **args)
        else:
            runtime.command(command, cid, **args)
    deadlines_until(horizon)
    clock.now = horizon


# ------------------------------------------------------------------ the expected figures, from the log

def p50(values):
    return statistics.median(values) if values else None


def p90(values):
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def waits(log: ChatLog):
    """(start, end, how, agent): from a customer message with no wait running to the next
    agent reply ('reply') or close ('close'); end None while still waiting."""
    out, running = [], None
    for t, kind, agent in log.items:
        if kind in ("customer", "email_reply") and running is None:
            running = t
        elif kind in ("reply", "close") and running is not None:
            out.append((running, t, kind, agent))
            running = None
    if running is not None:
        out.append((running, None, None, None))
    return out


def escalations(log: ChatLog, horizon: float) -> list:
    """When default.escalate_unread fires: the assignee (the one agent who joined; only it
    replies, and its reply reads what came before) has left a customer message unread
    for 10 minutes — from the oldest unread one, once per unread run."""
    join = next((t for t, k, _ in log.items if k == "join"), None)
    if join is None:
        return []
    out, anchor, fired = [], None, False
    for t, kind, _ in log.items + [(float("inf"), "end", None)]:
        if anchor is not None and not fired:
            fire = max(anchor + ESCALATE_AFTER, join)
            if fire < t and fire < horizon:
                out.append(fire)
                fired = True  # once per episode: until the assignee's reply ends it
        if kind in ("customer", "email_reply") and anchor is None:
            anchor = t
        elif kind == "reply":
            anchor, fired = None, False
    return out


def emails(log: ChatLog, horizon: float) -> list:
    """When default.email_unread_replies fires: the customer is offline and has not read
    an agent reply for 10 minutes (a customer message reads the replies before it; the
    customers here never come back online)."""
    leave = next((t for t, k, _ in log.items if k == "leave"), None)
    if leave is None:
        return []
    out, anchor, fired = [], None, False
    for t, kind, _ in log.items + [(float("inf"), "end", None)]:
        if anchor is not None and not fired:
            fire = max(anchor + EMAIL_AFTER, leave)
            if fire < t and fire < horizon:
                out.append(fire)
                fired = True  # once per episode: until a customer message reads the replies
        if kind == "reply" and anchor is None:
            anchor = t
        elif kind in ("customer", "email_reply"):
            anchor, fired = None, False
    return out


def expected(logs, lo, hi, now, horizon, wait_minutes=10.0, channel=None, department=None, agent=None):
    keep = [c for c in logs if (channel is None or c.channel == channel)
            and (department is None or c.department == department) and (agent is None or c.assignee == agent)]
    inside = lambda t: lo <= t < hi  # noqa: E731
    started = [c for c in keep if inside(c.start)]
    closed, resolution, responses, first, waited = set(), [], [], [], set()
    per_agent = {a: {"replies": 0, "notes": 0, "chats": set(), "joins": [], "responses": []} for a in AGENTS}
    escalated, sent, emailed, answers, answered_by_email = set(), 0, set(), 0, set()
    for c in keep:
        opened = c.start
        for t, kind, who in c.items:
            if kind == "close" and inside(t):
                closed.add(c.id)
                resolution.append(t - opened)
            if kind == "reply" and inside(t):
                per_agent[who]["replies"] += 1
                per_agent[who]["chats"].add(c.id)
            if kind == "note" and inside(t):
                per_agent[who]["notes"] += 1
            if kind == "join" and inside(t):  # one join per chat here: it is the first
                per_agent[who]["joins"].append(t - c.start)
            if kind == "email_reply" and inside(t):
                answers += 1
                answered_by_email.add(c.id)
        ws = waits(c)
        for start, end, how, who in ws:
            if how == "reply" and inside(end):
                responses.append(end - start)
                per_agent[who]["responses"].append(end - start)
            late = start + wait_minutes * MIN
            if lo <= late < min(hi, now) and (end is None or end > late):
                waited.add(c.id)
        answered = [w for w in ws if w[2] == "reply"]
        if answered and inside(answered[0][1]):
            first_customer = min(w[0] for w in ws)
            first.append(answered[0][1] - first_customer)
        if any(inside(t) for t in escalations(c, horizon)):
            escalated.add(c.id)
        mails = [t for t in emails(c, horizon) if inside(t)]
        sent += len(mails)
        if mails:
            emailed.add(c.id)
    agents = {a: v for a, v in per_agent.items() if agent is None or a == agent}
    return {
        "chats": {"started": len(started), "answered": len(first), "closed": len(closed),
                  "escalated_unread": len(escalated), "waited_longer": len(waited)},
        "first_response_time": {"count": len(first), "median": p50(first), "p90": p90(first)},
        "response_time": {"count": len(responses), "median": p50(responses), "p90": p90(responses)},
        "resolution_time": {"count": len(resolution), "median": p50(resolution), "p90": p90(resolution)},
        "email": {"emails_sent": sent, "customers_emailed": len(emailed), "answers_received": answers,
                  "customers_answered": len(answered_by_email)},
        "agents": {a: {"chats_handled": len(v["chats"]), "replies": v["replies"], "notes": v["notes"],
                       "responses": len(v["responses"]), "response_time_median": p50(v["responses"]),
                       "joins": len(v["joins"]),
                       "time_to_join": {"median": p50(v["joins"]), "p90": p90(v["joins"])}}
                   for a, v in agents.items()},
    }


def approx(value):
    """Times are float sums of epoch seconds: equal to a microsecond."""
    if isinstance(value, dict):
        return {k: approx(v) for k, v in value.items()}
    if isinstance(value, float):
        return pytest.approx(value, abs=1e-6)
    return value


# ------------------------------------------------------------------ the tests

@pytest.fixture
def history(api, runtime, clock):
    api.agents(*((a, {"departments": d}) for a, d in AGENTS.items()))
    actions, logs = generate(seed=20261125)
    horizon = max(t for t, *_ in actions) + 3600
    play(runtime, clock, actions, horizon)
    return logs, horizon


PERIODS = {"everything": (0, None), "a day in the middle": (10 * 3600, 30 * 3600),
           "half an hour": (5 * 3600, 5 * 3600 + 1800), "the week before": (-7 * 86400, -86400)}


def _by_agent(rows):
    return {a["agent"]: {k: v for k, v in a.items() if k != "agent"} for a in rows}


# Each test replays the history (a few seconds on PostgreSQL): the cases of one kind share a test.

def test_overview_and_agents_match_the_figures_computed_from_the_log(runtime, history):
    logs, horizon = history
    for name, (lo_h, hi_h) in PERIODS.items():
        lo = START + lo_h
        hi = horizon + 1 if hi_h is None else START + hi_h
        got = A.report(runtime.db, A.Query(lo, hi, now=horizon), parts=("overview", "agents"))
        want = expected(logs, lo, hi, horizon, horizon)
        overview = got["overview"]
        assert overview["chats"] == want["chats"], name
        for figure in ("first_response_time", "response_time", "resolution_time"):
            assert overview[figure] == approx(want[figure]), (name, figure)
        assert overview["email"] == want["email"], name
        assert _by_agent(got["agents"]) == approx(want["agents"]), name
        if hi_h is None:  # the generated history does exercise every figure
            assert all(want["chats"].values()) and all(want["email"].values())
            assert all(v["notes"] for v in want["agents"].values())
        if lo_h < 0:
            assert not any(want["chats"].values()) and overview["response_time"]["median"] is None


def test_filters_keep_only_the_matching_chats(runtime, history):
    logs, horizon = history
    lo, hi = START, horizon + 1
    for filters in ({"channel": "telegram"}, {"department": "sales"}, {"agent": "bob"},
                    {"channel": "widget", "department": "support"}):
        got = A.report(runtime.db, A.Query(lo, hi, now=horizon, **filters), parts=("overview", "agents"))
        want = expected(logs, lo, hi, horizon, horizon, **filters)
        assert got["overview"]["chats"] == want["chats"], filters
        assert got["overview"]["response_time"] == approx(want["response_time"]), filters
        assert got["overview"]["resolution_time"] == approx(want["resolution_time"]), filters
        assert got["overview"]["email"] == want["email"], filters
        assert _by_agent(got["agents"]) == approx(want["agents"]), filters


def test_waited_longer_counts_the_chats_whose_customer_waited_past_the_threshold(runtime, history):
    logs, horizon = history
    for minutes in (1, 5, 20):
        # the whole history as of its end; and a period still running at "now"
        for lo, hi, now in ((START, horizon + 1, horizon), (START, START + 20 * 3600, START + 12 * 3600)):
            got = A.report(runtime.db, A.Query(lo, hi, now=now, wait_minutes=minutes), parts=("overview",))
            want = expected(logs, lo, hi, now, horizon, wait_minutes=minutes)
            assert got["overview"]["chats"]["waited_longer"] == want["chats"]["waited_longer"], (minutes, now)


def test_rule_figures_come_from_the_traces(runtime, history):
    logs, horizon = history
    lo, hi = START + 6 * 3600, START + 30 * 3600
    rules = {r["rule"]: r for r in A.report(runtime.db, A.Query(lo, hi, now=horizon), parts=("rules",),
                                            rule_ids=["never.ran"])["rules"]}
    fires = sorted(t for c in logs for t in escalations(c, horizon) if lo <= t < hi)
    mails = sorted(t for c in logs for t in emails(c, horizon) if lo <= t < hi)
    started = [c for c in logs if lo <= c.start < hi]
    esc = rules["default.escalate_unread"]
    assert esc["fired"] == len(fires) and esc["last_fired"] == pytest.approx(fires[-1])
    # every subscriber is told: the three operators subscribed when the chat started
    assert esc["effects"] == 3 * len(fires)
    mail = rules["default.email_unread_replies"]
    assert (mail["fired"], mail["effects"]) == (len(mails), len(mails))
    new = rules["default.subscribe_operators"]
    assert (new["fired"], new["evaluated"], new["effects"]) == (len(started), len(started), 3 * len(started))
    for r in rules.values():
        assert r["evaluated"] >= r["fired"]
    assert rules["never.ran"] == {"rule": "never.ran", "evaluated": 0, "fired": 0, "effects": 0, "last_fired": None}


def test_percentile_interpolates_like_percentile_cont():
    assert A.percentile([], 0.5) is None
    assert A.percentile([7.0], 0.9) == 7.0
    assert A.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert A.percentile(list(range(11)), 0.9) == pytest.approx(9.0)
    assert A.percentile([10.0, 0.0], 0.9) == pytest.approx(9.0)


# ------------------------------------------------------------------ the HTTP API

def test_the_api_reports_a_small_history_played_through_http(api, client, clock):
    team = api.agents(("alice", {"departments": ["sales"]}), "bob")
    clock.at(0)
    c1, cust1 = api.start_chat("I need help")
    clock.at(2 * MIN)
    api.post(f"/api/chats/{c1}/join", team["alice"], status=200)
    api.post(f"/api/chats/{c1}/assign", team["alice"], {"department": "sales"}, status=200)  # alice stays
    clock.at(3 * MIN)
    api.post(f"/api/chats/{c1}/note", team["bob"], {"text": "VIP customer"}, status=201)
    clock.at(5 * MIN)
    api.post(f"/api/chats/{c1}/reply", team["alice"], {"text": "Hello!"}, status=201)
    clock.at(6 * MIN)
    api.post(f"/api/widget/chats/{c1}/messages", cust1, {"text": "Thanks, one more thing"}, status=201)
    clock.at(8 * MIN)
    api.post(f"/api/chats/{c1}/reply", team["alice"], {"text": "Sure"}, status=201)
    clock.at(20 * MIN)
    api.post(f"/api/chats/{c1}/close", team["alice"], status=200)
    clock.at(30 * MIN)
    c2, _ = api.start_chat("Anyone?", channel="telegram")  # nobody answers
    clock.at(60 * MIN)

    r = client.get("/api/analytics/report?from=2026-01-05&to=2026-01-05&wait_minutes=15", headers=api.admin)
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    assert data["period"] == {"from": "2026-01-05T00:00:00Z", "to": "2026-01-06T00:00:00Z"}
    assert data["wait_minutes"] == 15
    ov = data["overview"]
    assert ov["chats"] == {"started": 2, "answered": 1, "closed": 1, "escalated_unread": 0, "waited_longer": 1}
    assert ov["first_response_time"] == {"count": 1, "median": 5 * MIN, "p90": 5 * MIN}
    assert ov["response_time"] == {"count": 2, "median": 3.5 * MIN, "p90": pytest.approx(4.7 * MIN)}
    assert ov["resolution_time"] == {"count": 1, "median": 20 * MIN, "p90": 20 * MIN}
    agents = _by_agent(data["agents"])
    assert agents["alice"] == {"chats_handled": 1, "replies": 2, "notes": 0, "responses": 2,
                               "response_time_median": 3.5 * MIN, "joins": 1,
                               "time_to_join": {"median": 2 * MIN, "p90": 2 * MIN}}
    assert agents["bob"]["notes"] == 1 and agents["bob"]["replies"] == 0
    rules = {x["rule"]: x for x in data["rules"]}
    assert rules["default.subscribe_operators"]["fired"] == 2
    assert rules["default.escalate_unread"]["fired"] == 0 and rules["default.escalate_unread"]["evaluated"] > 0

    r = client.get("/api/analytics/overview?from=2026-01-05T09:00:00Z&to=2026-01-05T10:00:00Z&channel=telegram",
                   headers=api.admin)
    assert r.get_json()["overview"]["chats"]["started"] == 1 and set(r.get_json()) >= {"overview", "period"}
    r = client.get("/api/analytics/agents?from=2026-01-05&agent=alice", headers=api.admin)
    assert [a["agent"] for a in r.get_json()["agents"]] == ["alice"]
    r = client.get("/api/analytics/rules?from=2026-01-05&department=sales", headers=api.admin)
    assert {x["rule"]: x["fired"] for x in r.get_json()["rules"]}["default.subscribe_operators"] == 1


@pytest.mark.parametrize("query, parameter", [
    ("from=yesterday", "from"),
    ("from=2026-13-01", "from"),
    ("to=2026-01-05T25:00", "to"),
    ("from=2026-01-06&to=2026-01-05", "from"),
    ("channel=pigeon", "channel"),
    ("agent=nobody", "agent"),
    ("wait_minutes=0", "wait_minutes"),
    ("wait_minutes=ten", "wait_minutes"),
    ("wait_minutes=nan", "wait_minutes"),
    ("chanel=widget", "chanel"),
])
def test_bad_parameters_are_400_naming_the_parameter(api, client, query, parameter):
    r = client.get(f"/api/analytics/report?{query}", headers=api.admin)
    assert r.status_code == 400
    body = r.get_json()
    assert body["error"] == "invalid_request" and body["details"] == {"parameter": parameter}
    assert parameter in body["message"]


def test_analytics_are_for_admins_only(api, client):
    team = api.agents("alice")
    assert client.get("/api/analytics/report").status_code == 401
    r = client.get("/api/analytics/overview", headers=team["alice"])
    assert r.status_code == 403 and r.get_json()["error"] == "forbidden"


def test_the_daily_series_counts_each_utc_day_from_the_log(api, client, history):
    logs, horizon = history
    day_of = lambda t: datetime.fromtimestamp(t, timezone.utc).date().isoformat()  # noqa: E731
    want = {}

    def on(t):
        """The expected figures of the day of ``t``."""
        return want.setdefault(day_of(t), {"started": 0, "answered": set(), "closed": set()})

    for c in logs:
        on(c.start)["started"] += 1
        answered = [w for w in waits(c) if w[2] == "reply"]
        if answered:
            on(answered[0][1])["answered"].add(c.id)
        for t, kind, _ in c.items:
            if kind == "close":
                on(t)["closed"].add(c.id)
    period = f"from={day_of(START)}&to={day_of(horizon)}"
    r = client.get(f"/api/analytics/daily?{period}", headers=api.admin)
    assert r.status_code == 200, r.get_json()
    got = r.get_json()["daily"]
    assert len(want) >= 2 and len(got) == len(want)  # the history spans days; each is listed
    assert {d["day"]: {k: v for k, v in d.items() if k != "day"} for d in got} == {
        day: {"started": w["started"], "answered": len(w["answered"]), "closed": len(w["closed"])}
        for day, w in want.items()}
    # the days sum to the overview's figures (a chat closed on two days would count twice)
    whole = client.get(f"/api/analytics/overview?{period}", headers=api.admin).get_json()["overview"]["chats"]
    assert sum(d["started"] for d in got) == whole["started"]
    assert sum(d["answered"] for d in got) == whole["answered"]

    # a filter applies; a period of hours lists the days it touches, zeros included
    r = client.get("/api/analytics/daily?from=2026-01-04T23:00:00Z&to=2026-01-05T20:00:00Z&channel=telegram",
                   headers=api.admin)
    got = r.get_json()["daily"]
    early = [c for c in logs if c.channel == "telegram" and c.start < START + 11 * 3600]
    assert [d["day"] for d in got] == ["2026-01-04", "2026-01-05"]
    assert got[0]["started"] == 0 and got[1]["started"] == len(early) > 0


def test_per_rule_counts_kept_by_the_workers_agree_with_the_traces(runtime, history):
    """rule_runs (kept per minute by the workers, read without chat filters) and the
    stored traces (read with filters) give the same per-rule figures."""
    logs, horizon = history
    with runtime.db.connect() as conn:
        for lo, hi in ((START, horizon + 60), (START + 6 * 3600, START + 30 * 3600)):
            q = A.Query(lo, hi, now=horizon)
            assert A._rule_runs(conn, q) == A._rule_traces(conn, q)
            assert A._rule_runs(conn, q)  # something ran


# ------------------------------------------------------------------ the kept days (server.analytics_days)

DAY = 86400
FIRST_DAY = math.floor(START / DAY)  # the history spans this day from 09:00 and the next
LATER = (FIRST_DAY + 2) * DAY + 3600  # "now" for these tests: both days are over


def _kept_days(runtime, wait_minutes=10.0) -> list[int]:
    t = S.analytics_days
    with runtime.db.connect() as conn:
        return sorted(conn.execute(select(t.c.day).where(t.c.wait_minutes == wait_minutes)).scalars())


def _walked(runtime, q):
    """The figures of one walk of the whole period, as before the days were kept."""
    with runtime.db.connect() as conn:
        A._tune(conn)
        return A._summarized(A._samples(conn, q))


def test_kept_days_give_the_figures_of_one_walk_of_the_period(runtime, history, monkeypatch):
    logs, horizon = history
    first_day = FIRST_DAY
    periods = [(START, horizon + 1), (first_day * DAY, horizon + 1), ((first_day - 2) * DAY, (first_day + 3) * DAY),
               (START + 3600, START + 30 * 3600)]
    answers = {}
    for lo, hi in periods:
        for minutes in (10.0, 3.0):
            q = A.Query(lo, hi, now=LATER, wait_minutes=minutes)
            with runtime.db.connect() as conn:
                A._tune(conn)
                answers[q] = A._summaries(conn, q)
            assert answers[q] == _walked(runtime, q), (lo - START, hi - START, minutes)
    assert _kept_days(runtime) == [first_day, first_day + 1] == _kept_days(runtime, 3.0)

    # asked again, the kept days are read, not walked
    def no_walk(*args, **kwargs):
        raise AssertionError("a kept day was walked again")
    monkeypatch.setattr(analytics_days, "fill", no_walk)
    for q, answer in answers.items():
        with runtime.db.connect() as conn:
            assert A._summaries(conn, q) == answer
    # the daily series reads them too
    q = A.Query(first_day * DAY, (first_day + 2) * DAY, now=LATER)
    with runtime.db.connect() as conn:
        walked = analytics_daily._walked(conn, q)
    series = {datetime.fromisoformat(d["day"]).replace(tzinfo=timezone.utc).timestamp() // DAY:
              {k: v for k, v in d.items() if k != "day"} for d in analytics_daily.daily(runtime.db, q)}
    assert len(walked) == 2 and series == {
        day: {name: walked[day].get(name, 0) for name in ("started", "answered", "closed")} for day in walked}


def test_a_late_write_into_a_kept_day_is_counted(runtime, history, clock):
    logs, horizon = history
    first_day = FIRST_DAY
    lo, hi = first_day * DAY, (first_day + 2) * DAY
    A.report(runtime.db, A.Query(lo, hi, now=LATER), parts=("overview",))
    assert _kept_days(runtime) == [first_day, first_day + 1]

    # a chat started, joined, answered and closed in the second kept day, written now
    t0 = (first_day + 1) * DAY + 600.0
    log = ChatLog("late", t0, "widget", None, [(t0, "created", None), (t0, "customer", None), (t0 + 120, "join", "bob"),
                                              (t0 + 300, "reply", "bob"), (t0 + 2000, "close", "bob")])
    clock.now = t0
    runtime.start_chat("late", None, customer={"id": "ul", "name": "L", "email": "l@example.com"}, channel="widget",
                       text="Hello")
    for t, kind, who in log.items[2:]:
        clock.now = t
        runtime.command(kind, "late", agent=who, **({"text": "answer"} if kind == "reply" else {}))
    clock.now = horizon
    assert _kept_days(runtime) == [first_day]  # that day on is forgotten; the day before stays

    got = A.report(runtime.db, A.Query(lo, hi, now=LATER), parts=("overview", "agents"))
    want = expected(logs + [log], lo, hi, LATER, horizon)
    assert got["overview"]["chats"] == want["chats"]
    for figure in ("first_response_time", "response_time", "resolution_time"):
        assert got["overview"][figure] == approx(want[figure]), figure
    assert _by_agent(got["agents"]) == approx(want["agents"])
    assert want["chats"] != expected(logs, lo, hi, LATER, horizon)["chats"]  # the late chat shows
    assert _kept_days(runtime) == [first_day, first_day + 1]


def test_a_late_escalation_into_a_kept_day_is_counted(runtime, history):
    logs, horizon = history
    q = A.Query(FIRST_DAY * DAY, (FIRST_DAY + 2) * DAY, now=LATER)
    before = A.report(runtime.db, q, parts=("overview",))["overview"]["chats"]["escalated_unread"]
    assert _kept_days(runtime) == [FIRST_DAY, FIRST_DAY + 1]
    with runtime.db.begin() as conn:
        conn.execute(insert(S.notifications).values(key="late-escalation", agent_id="alice", chat_id="never-escalated",
                                                    rule="default.escalate_unread", template=A.ESCALATION_TEMPLATE,
                                                    text="", at=(FIRST_DAY + 1) * DAY + 60))
    assert _kept_days(runtime) == [FIRST_DAY]
    assert A.report(runtime.db, q, parts=("overview",))["overview"]["chats"]["escalated_unread"] == before + 1
    with runtime.db.begin() as conn:  # an ordinary notification forgets nothing
        conn.execute(insert(S.notifications).values(key="late-new-message", agent_id="alice", chat_id="c1",
                                                    template="new_message", text="", at=FIRST_DAY * DAY + 60))
    assert _kept_days(runtime) == [FIRST_DAY, FIRST_DAY + 1]


def _late_event(conn, at: float, chat_id: str = "late") -> None:
    """A chat.created event as the runtime stores it, written straight into the table."""
    conn.execute(insert(S.events).values(id=f"{chat_id}:1", chat_id=chat_id, type="chat.created", at=at, payload={
        "id": f"{chat_id}:1", "type": "chat.created", "chat_id": chat_id, "at": at, "actor": "customer",
        "agent_id": None, "rule": None, "message_id": None, "data": {}}))


def _started(runtime, q) -> int:
    return A.report(runtime.db, q, parts=("overview",))["overview"]["chats"]["started"]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_write_in_flight_when_a_day_is_first_kept_is_waited_for(runtime, history):
    """The write read the old ``until`` (the day was not kept yet), so the trigger let it
    pass; the fill must not walk the day before it commits."""
    logs, horizon = history
    day = FIRST_DAY + 1
    q = A.Query(day * DAY, (day + 1) * DAY, now=LATER)
    before = sum(1 for c in logs if q.start <= c.start < q.end)
    writer = runtime.db.connect()
    _late_event(writer, day * DAY + 60)
    commit = threading.Timer(0.5, writer.commit)
    commit.start()
    try:
        assert _started(runtime, q) == before + 1
    finally:
        commit.join()
        writer.close()
    assert _kept_days(runtime) == [day] and _started(runtime, q) == before + 1


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_late_write_while_a_day_is_kept_forgets_it_after(runtime, history):
    """A late write that comes after the fill walked the day, before it kept it: the
    write deletes the fill's mark of the day, and the fill keeps nothing."""
    logs, horizon = history
    day = FIRST_DAY + 1
    q = A.Query(day * DAY, (day + 1) * DAY, now=LATER)
    before = _started(runtime, q)  # the day is kept: until covers it
    assert _kept_days(runtime) == [day]

    def write():
        with runtime.db.connect() as w:
            _late_event(w, day * DAY + 60)
            w.commit()

    writer = threading.Thread(target=write)

    def walk_then_write(conn, q, by_chat):
        found = A._samples(conn, q, by_chat)
        assert found[("started", A.ALL)].count == before  # walked before the write
        writer.start()
        writer.join()  # the walk holds no lock: the write commits at once, and deletes the fill's mark
        return found

    with runtime.db.connect() as conn:
        kept = analytics_days.fill(conn, [day], dataclasses.replace(q, wait_minutes=5.0), walk_then_write)
    assert kept == {}  # so what the walk found is not kept
    assert _kept_days(runtime, 5.0) == [] and _kept_days(runtime) == []
    assert _started(runtime, dataclasses.replace(q, wait_minutes=5.0)) == before + 1


def test_the_triggers_watch_the_event_types_the_reports_read():
    path = os.path.join(os.path.dirname(S.__file__), "migrations", "versions", "0010_analytics_days.py")
    spec = importlib.util.spec_from_file_location("migration_0010", path)
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.STREAM_TYPES == A.STREAM_TYPES
    assert migration.ESCALATION_TEMPLATE == A.ESCALATION_TEMPLATE


def test_a_period_splits_into_kept_days_and_pieces_walked():
    d = 20_000 * DAY
    q = A.Query(d + 3600, d + 3 * DAY + 7200, now=d + 10 * DAY)
    assert analytics_days.split(q, first_event=d) == ([20_001, 20_002], [(d + 3600, d + DAY), (d + 3 * DAY, d + 3 * DAY + 7200)])
    # days not over by now are walked, as are days before the first event
    assert analytics_days.split(dataclasses.replace(q, now=d + 2 * DAY + 5), first_event=d) == (
        [20_001], [(d + 3600, d + DAY), (d + 2 * DAY, d + 3 * DAY + 7200)])
    assert analytics_days.split(q, first_event=d + 2 * DAY + 1) == ([20_002], [(d + 3600, d + 2 * DAY),
                                                                            (d + 3 * DAY, d + 3 * DAY + 7200)])
    assert analytics_days.split(q, first_event=None) == ([], [(q.start, q.end)])
    assert analytics_days.split(A.Query(d, d + DAY, now=d + DAY), first_event=d) == ([20_000], [])


def test_a_wait_turning_long_in_a_period_without_a_row_there_counts(runtime, history):
    """The chat's last message is before the period, its threshold passes in it: the
    chat has no row in the period, yet its customer waited longer there."""
    logs, horizon = history
    minutes = 20
    found = []
    for c in logs:
        start, end, _, _ = waits(c)[-1]
        late = start + minutes * MIN
        if end is None and max(t for t, *_ in c.items) < late - 1 and late < horizon:
            found.append(late)
    assert found  # the generated history has such a chat
    for late in found[:3]:
        lo, hi = late - 1, late + 3600
        got = A.report(runtime.db, A.Query(lo, hi, now=horizon, wait_minutes=minutes), parts=("overview",))
        want = expected(logs, lo, hi, horizon, horizon, wait_minutes=minutes)
        assert got["overview"]["chats"]["waited_longer"] == want["chats"]["waited_longer"] >= 1
