"""``/metrics`` in Prometheus' text format: HTTP traffic, rule firings, effects, and the
state of the outbox and deadlines read from the database at scrape time."""
from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from . import store as S

bp = Blueprint("metrics", __name__)


class _RuntimeCollector:
    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self):
        stats = dict(self.runtime.stats)
        fired = CounterMetricFamily("chatflow_rule_fired", "Rule firings", labels=["rule"])
        effects = CounterMetricFamily("chatflow_effects", "Effects produced by rules", labels=["kind"])
        for key, n in stats.items():
            if key[0] == "fired":
                fired.add_metric([key[1]], n)
            elif key[0] == "effect":
                effects.add_metric([key[1]], n)
        yield fired
        yield effects
        yield CounterMetricFamily("chatflow_events_processed", "Events the rules ran on",
                                  value=stats.get(("events",), 0))
        yield CounterMetricFamily("chatflow_cascade_limit", "Event chains cut at depth 10",
                                  value=stats.get(("cascade_limit",), 0))
        with self.runtime.db.connect() as conn:
            open_chats = conn.execute(select(func.count()).where(S.chats.c.status == "open")).scalar()
            timers = conn.execute(select(func.count()).select_from(S.timers)).scalar()
            backlog = conn.execute(select(func.count()).where(S.events.c.processed_at.is_(None))).scalar()
            oldest = conn.execute(select(func.min(S.events.c.at)).where(S.events.c.processed_at.is_(None))).scalar()
            unsent = conn.execute(select(func.count()).where(S.emails.c.sent_at.is_(None))).scalar()
        yield GaugeMetricFamily("chatflow_open_chats", "Open chats", value=open_chats)
        yield GaugeMetricFamily("chatflow_pending_deadlines", "Armed state-rule deadlines", value=timers)
        yield GaugeMetricFamily("chatflow_outbox_backlog", "Events not yet processed", value=backlog)
        yield GaugeMetricFamily("chatflow_outbox_lag_seconds", "Age of the oldest unprocessed event",
                                value=(self.runtime.clock() - oldest) if oldest else 0.0)
        yield GaugeMetricFamily("chatflow_emails_unsent", "Emails not yet delivered", value=unsent)


def init_metrics(app, runtime) -> None:
    registry = CollectorRegistry()
    requests = Counter("chatflow_http_requests", "HTTP requests", ["method", "endpoint", "status"], registry=registry)
    latency = Histogram("chatflow_http_request_seconds", "HTTP request latency", ["endpoint"], registry=registry)
    registry.register(_RuntimeCollector(runtime))
    app.extensions["chatflow_metrics"] = registry

    @app.before_request
    def _start():
        g._started = time.perf_counter()

    @app.after_request
    def _count(response):
        endpoint = request.endpoint or "unknown"
        if endpoint.startswith("live."):  # streams last minutes: count, don't time
            requests.labels(request.method, endpoint, response.status_code).inc()
            return response
        requests.labels(request.method, endpoint, response.status_code).inc()
        if hasattr(g, "_started"):
            latency.labels(endpoint).observe(time.perf_counter() - g._started)
        return response


@bp.get("/metrics")
def metrics():
    registry = current_app.extensions["chatflow_metrics"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
