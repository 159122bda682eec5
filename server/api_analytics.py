"""The analytics API (admin): ``GET /api/analytics/report`` (everything), ``/overview``,
``/agents``, ``/rules``, ``/daily`` (the chats started, answered and closed per UTC
day, for the analytics page's chart) and ``/sla`` (per SLA policy and target, cycles
achieved and breached), each for a period and optional chat filters given
as query parameters. What each figure means is in the README ("Analytics")."""
from __future__ import annotations

import math
from datetime import datetime, time, timedelta, timezone

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select

from dsl.vocabulary import CHANNELS

from . import analytics, analytics_daily, analytics_sla
from . import store as S
from .http import ApiError, require_admin

bp = Blueprint("analytics", __name__, url_prefix="/api/analytics")

PARAMETERS = ("from", "to", "channel", "department", "agent", "wait_minutes")
DEFAULT_DAYS = 7
MAX_WAIT_MINUTES = 7 * 24 * 60


def _bad(name: str, message: str):
    return ApiError(400, "invalid_request", f"{name}: {message}", {"parameter": name})


def parse_instant(raw: str, name: str, end: bool = False) -> float:
    """An ISO 8601 date or date-time as epoch seconds. Without a zone it is UTC. A bare
    date is its midnight; as the end of a period (``end``) it is the midnight after it, so
    ``to=2026-11-30`` includes the 30th."""
    text = raw.strip()
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").date()
            if end:
                day += timedelta(days=1)
            moment = datetime.combine(day, time(0), tzinfo=timezone.utc)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError):
        raise _bad(name, f"{raw!r} is not an ISO 8601 date (2026-11-01) or date-time (2026-11-01T09:00:00Z)") from None
    return moment.timestamp()


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def query_from(args, now: float, known_agent=None) -> analytics.Query:
    """A Query from request (or command line) parameters, or ApiError 400 naming the
    parameter. ``known_agent(id)`` says whether an agent exists."""
    unknown = sorted(set(args) - set(PARAMETERS))
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown parameter {unknown[0]!r} (known: {', '.join(PARAMETERS)})",
                       {"parameter": unknown[0]})
    end = parse_instant(args["to"], "to", end=True) if args.get("to") else now
    start = parse_instant(args["from"], "from") if args.get("from") else end - DEFAULT_DAYS * 86400
    if start >= end:
        raise _bad("from", f"the period is empty: from ({iso(start)}) must be before to ({iso(end)})")
    channel = args.get("channel") or None
    if channel is not None and channel not in CHANNELS:
        raise _bad("channel", f"{channel!r} is not one of {', '.join(CHANNELS)}")
    department = args.get("department") or None
    if department is not None and len(department) > 200:
        raise _bad("department", "at most 200 characters")
    agent = args.get("agent") or None
    if agent is not None and known_agent is not None and not known_agent(agent):
        raise _bad("agent", f"no agent {agent!r}")
    wait = args.get("wait_minutes")
    minutes = 10.0
    if wait not in (None, ""):
        try:
            minutes = float(wait)
        except ValueError:
            minutes = math.nan
        if not (0 < minutes <= MAX_WAIT_MINUTES):
            raise _bad("wait_minutes", f"{wait!r} is not a number of minutes above 0 and at most {MAX_WAIT_MINUTES}")
    return analytics.Query(start, end, now, channel=channel, department=department, agent=agent, wait_minutes=minutes)


def _known_agent(db):
    def known(agent_id: str) -> bool:
        with db.connect() as conn:
            return conn.execute(select(S.agents.c.id).where(S.agents.c.id == agent_id)).first() is not None
    return known


def build_report(runtime, q: analytics.Query, parts, rule_ids=()) -> dict:
    """The JSON answer: the period and filters asked for, then the parts."""
    out = {"period": {"from": iso(q.start), "to": iso(q.end)},
           "filters": {"channel": q.channel, "department": q.department, "agent": q.agent},
           "wait_minutes": q.wait_minutes}
    out.update(analytics.report(runtime.db, q, parts=parts, rule_ids=rule_ids))
    if "daily" in parts:
        out["daily"] = analytics_daily.daily(runtime.db, q)
    if "sla" in parts:
        out["sla"] = analytics_sla.sla_figures(runtime.db, q, runtime.ruleset())
    return out


def _answer(parts):
    require_admin()
    runtime = current_app.extensions["chatflow"]
    q = query_from(request.args, runtime.clock(), _known_agent(runtime.db))
    rule_ids = [r.id for r in runtime.ruleset().rules] if "rules" in parts else ()
    return jsonify(build_report(runtime, q, parts, rule_ids))


@bp.get("/report")
def report():
    return _answer(("overview", "agents", "rules", "sla"))


@bp.get("/overview")
def overview():
    return _answer(("overview",))


@bp.get("/agents")
def agents():
    return _answer(("agents",))


@bp.get("/rules")
def rules():
    return _answer(("rules",))


@bp.get("/daily")
def daily():
    return _answer(("daily",))


@bp.get("/sla")
def sla():
    return _answer(("sla",))
