"""The Flask application factory: ``create_app(config)`` wires storage, the runtime, the
blueprints and JSON errors; nothing happens at import time."""
from __future__ import annotations

import gc
import json
import logging
import os
import secrets
import threading
import time

from flask import Flask, jsonify, request
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from engine.model import CommandRefused

from . import store as S
from .http import ApiError, error_response, refused
from .runtime import Runtime

log = logging.getLogger("chatflow")

DEFAULTS = {
    "DATABASE_URL": None,  # None: a SQLite file in DATA_DIR
    "DATA_DIR": "var",
    "RULES": (),  # rule files/folders added to rules/default.rules
    "RULE_DEFAULTS": True,
    "CLOCK": time.time,  # tests inject a virtual clock
    "TIMERS": True,  # run deadlines on a background thread (embedded mode)
    "SECRET_KEY": None,
    "ADMIN_TOKEN": None,
    "MAILDIR": None,  # default: DATA_DIR/maildir when no SMTP_URL
    "SMTP_URL": None,
    "REDIS_URL": None,  # set: scaled mode (RQ workers + scheduler)
    "QUEUE": "chatflow",  # the RQ queue name (CHATFLOW_QUEUE); also names the live-update channel
    "EMAIL_DOMAIN": "chatflow.localhost",
    "EMAIL_FROM": "chatflow <support@chatflow.localhost>",
    "MAX_CONTENT_LENGTH": 4 * 1024 * 1024,
    "INBOUND_TOKEN": None,  # if set, /api/inbound-email needs it as a bearer token
    "RATE_LIMITS": None,  # None: server.ratelimit.DEFAULTS; "off"; or {name: "N/minute;M/hour"}
    "PROXY_COUNT": 0,  # reverse proxies in front: trust that many X-Forwarded-For hops for client addresses
    "STREAM_SECONDS": 300,  # an SSE response ends after this; clients reconnect with Last-Event-ID
    "GROUP_COMMIT": True,  # PostgreSQL: chat commands arriving together share one transaction
    "DISPATCH_LINGER": 0.02,  # scaled mode: seconds a web process collects chats before one job
    # webhooks (server.webhooks): {name: {"url": …, "secret": …}} that rules name; the hosts
    # they may post to; how long to wait; how often and how far apart to try
    "WEBHOOKS": {},
    "WEBHOOK_HOSTS": (),
    "WEBHOOK_CONNECT_TIMEOUT": 3.0,
    "WEBHOOK_READ_TIMEOUT": 10.0,
    "WEBHOOK_MAX_ATTEMPTS": 8,
    "WEBHOOK_BACKOFF": 30.0,  # seconds before the 2nd attempt; doubled each time
    "WEBHOOK_BACKOFF_MAX": 3600.0,
    # agents' notifications by email: at most one email per agent and chat in this many seconds
    "AGENT_EMAIL_WINDOW": 300.0,
    # the analytics' days kept in the background (server.analytics_keeper): how many days back; 0: none
    "ANALYTICS_KEEP_DAYS": 31,
}


def settings_from_env(environ=os.environ) -> dict:
    """Settings read once at the edge, from the environment."""
    out = {}
    for key in ("DATABASE_URL", "REDIS_URL", "SMTP_URL", "SECRET_KEY", "EMAIL_DOMAIN", "EMAIL_FROM"):
        if environ.get(key):
            out[key] = environ[key]
    if environ.get("CHATFLOW_ADMIN_TOKEN"):
        out["ADMIN_TOKEN"] = environ["CHATFLOW_ADMIN_TOKEN"]
    if environ.get("CHATFLOW_DATA_DIR"):
        out["DATA_DIR"] = environ["CHATFLOW_DATA_DIR"]
    if environ.get("CHATFLOW_QUEUE"):
        out["QUEUE"] = environ["CHATFLOW_QUEUE"]
    if environ.get("CHATFLOW_RATE_LIMITS"):  # "off", or JSON: {"start_chat": "10/minute"}
        raw = environ["CHATFLOW_RATE_LIMITS"].strip()
        out["RATE_LIMITS"] = "off" if raw == "off" else json.loads(raw)
    if environ.get("CHATFLOW_WEBHOOKS"):  # JSON: {"crm": {"url": "https://…", "secret": "…"}}
        out["WEBHOOKS"] = json.loads(environ["CHATFLOW_WEBHOOKS"])
    if environ.get("CHATFLOW_WEBHOOK_HOSTS"):  # comma-separated: "crm.example.com,*.hooks.example.com"
        out["WEBHOOK_HOSTS"] = tuple(h.strip() for h in environ["CHATFLOW_WEBHOOK_HOSTS"].split(",") if h.strip())
    if environ.get("CHATFLOW_PROXY_COUNT"):
        out["PROXY_COUNT"] = int(environ["CHATFLOW_PROXY_COUNT"])
    if environ.get("CHATFLOW_GROUP_COMMIT"):
        out["GROUP_COMMIT"] = environ["CHATFLOW_GROUP_COMMIT"].strip().lower() not in ("0", "off", "false", "no")
    if environ.get("CHATFLOW_DISPATCH_LINGER"):
        out["DISPATCH_LINGER"] = float(environ["CHATFLOW_DISPATCH_LINGER"])
    if environ.get("CHATFLOW_ANALYTICS_KEEP_DAYS"):
        out["ANALYTICS_KEEP_DAYS"] = int(environ["CHATFLOW_ANALYTICS_KEEP_DAYS"])
    return out


def make_settings(config: dict | None = None) -> dict:
    """DEFAULTS overlaid with ``config``, with the derived values filled in."""
    settings = dict(DEFAULTS)
    settings.update(config or {})
    os.makedirs(settings["DATA_DIR"], exist_ok=True)
    if not settings["SECRET_KEY"]:
        settings["SECRET_KEY"] = _secret(settings["DATA_DIR"])
    if not settings["MAILDIR"] and not settings["SMTP_URL"]:
        settings["MAILDIR"] = os.path.join(settings["DATA_DIR"], "maildir")
    from .webhooks import WebhookSettingsError, check_settings

    try:
        check_settings(settings)
    except WebhookSettingsError as e:
        raise SystemExit(f"chatflow: {e}") from None
    return settings


def tune_gc() -> None:
    """For a long-running process, once it has started (web, worker, scheduler): the
    objects made so far (modules, the app, compiled rules) move out of the collector's
    reach, and young collections run less often. A full collection kept re-scanning them:
    measured, the collector took 40 % of a worker's time per event."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def make_runtime(settings: dict) -> Runtime:
    """Storage and the engine runtime, as web processes, workers and the scheduler use it."""
    db = S.make_db(S.database_url(settings["DATABASE_URL"], settings["DATA_DIR"]))
    return Runtime(db, clock=settings["CLOCK"], rules_paths=settings["RULES"],
                   defaults=settings["RULE_DEFAULTS"], settings=settings)


def create_app(config: dict | None = None) -> Flask:
    """The application. With no ``config`` (as ``gunicorn 'server.app:create_app()'`` calls
    it) the settings come from the environment; tests pass their own."""
    app = Flask(__name__)
    from .http import JSONProvider

    app.json = JSONProvider(app)
    settings = make_settings(settings_from_env() if config is None else config)
    app.config.update(settings)
    runtime = make_runtime(settings)
    db = runtime.db
    app.extensions["chatflow"] = runtime
    from .ratelimit import RateLimits

    app.extensions["chatflow_limits"] = RateLimits(settings["RATE_LIMITS"], settings.get("REDIS_URL"),
                                                   prefix=settings["QUEUE"])
    if settings["PROXY_COUNT"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings["PROXY_COUNT"])
    app.config["ADMIN_TOKEN_CREATED"] = _bootstrap_admin(db, settings["ADMIN_TOKEN"])

    from . import api_admin, api_agent, api_inbound, api_widget, live, metrics, openapi, pages

    broker = live.Broker()
    app.extensions["chatflow_broker"] = broker
    runtime.listeners.append(broker.listener)
    app.register_blueprint(api_widget.bp)
    app.register_blueprint(api_agent.bp)
    app.register_blueprint(api_admin.bp)
    app.register_blueprint(live.bp)
    app.register_blueprint(api_inbound.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(__import__("server.api_analytics", fromlist=["bp"]).bp)
    metrics.init_metrics(app, runtime)
    _register_errors(app)

    @app.before_request
    def _refuse_nul():
        # PostgreSQL text cannot hold NUL: such an id names nothing
        if "\x00" in request.path or any("\x00" in v for v in request.args.values()):
            code = "unknown_chat" if "/chats/" in request.path else "not_found"
            raise ApiError(404, code, "no such resource")

    @app.get("/api/openapi.json")
    def openapi_json():
        return jsonify(openapi.document())

    @app.get("/healthz")
    def healthz():
        try:
            with db.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as e:  # the database is down: say so, as a 503
            return error_response(503, "unavailable", f"database: {type(e).__name__}")
        return jsonify({"status": "ok"})

    if settings.get("REDIS_URL"):
        _scaled(app, runtime, broker, settings)
    else:
        if settings["TIMERS"]:
            _start_timer_thread(app, runtime)
            from .analytics_keeper import start_keeper

            start_keeper(db, settings, runtime.clock, app.extensions["chatflow_stop"])
        if settings["WEBHOOKS"]:  # none declared: no rule set naming one can be activated
            from .webhooks import Sender

            # embedded: a thread of this process posts webhooks, woken when rules stored some
            sender = Sender(db, settings, clock=settings["CLOCK"])
            app.extensions["chatflow_webhooks"] = sender
            runtime.webhooks_stored = sender.wake
    if config is None:  # a server process (gunicorn 'server.app:create_app()'), not a test
        runtime.ruleset()
        tune_gc()
    return app


def _scaled(app: Flask, runtime: Runtime, broker, settings: dict) -> None:
    """Scaled mode: rules run on RQ workers, deadlines in `chatflow scheduler`; this
    process only commits commands and forwards live wake-ups from Redis to its streams."""
    from . import jobs

    redis = jobs.make_redis(settings["REDIS_URL"])
    runtime.dispatch = jobs.enqueue_dispatch(jobs.make_queue(settings, redis), linger=settings["DISPATCH_LINGER"])
    stop = threading.Event()
    app.extensions["chatflow_stop"] = stop
    jobs.start_redis_subscriber(redis, broker, stop, jobs.live_channel(settings))


def _secret(data_dir: str) -> str:
    """A per-installation secret kept in DATA_DIR, so reply addresses survive restarts."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "secret_key")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    key = secrets.token_hex(32)
    with open(path, "w", encoding="utf-8") as f:
        f.write(key)
    os.chmod(path, 0o600)
    return key


def _bootstrap_admin(db, token: str | None) -> str | None:
    """Make sure an admin exists; returns a newly made token to show once, else None."""
    with db.begin() as conn:
        if conn.execute(select(S.agents.c.id).where(S.agents.c.is_admin.is_(True))).first():
            if token:  # the configured token always works for the admin
                conn.execute(S.agents.update().where(S.agents.c.id == "admin").values(token_hash=S.token_hash(token)))
            return None
        created = token or secrets.token_urlsafe(32)
        conn.execute(S.agents.insert().values(id="admin", name="Administrator", departments=[], access_chats=False,
                                              status="offline", is_admin=True, token_hash=S.token_hash(created)))
        return None if token else created


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(e: ApiError):
        resp = error_response(e.status, e.code, e.message, e.details)
        if e.status == 429 and isinstance(e.details, dict) and "retry_after" in e.details:
            resp.headers["Retry-After"] = str(e.details["retry_after"])
        return resp

    @app.errorhandler(CommandRefused)
    def command_refused(e: CommandRefused):
        return refused(e)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        code = (e.name or "error").lower().replace(" ", "_")
        return error_response(e.code or 400, code, e.description or e.name)

    @app.errorhandler(DBAPIError)
    def database_error(e: DBAPIError):
        if e.connection_invalidated or isinstance(e, OperationalError):  # the database went away
            log.warning("database unavailable: %s", type(e.orig).__name__ if e.orig else type(e).__name__)
            resp = error_response(503, "unavailable", "the database is not reachable; try again shortly")
            resp.headers["Retry-After"] = "1"
            return resp
        return unexpected(e)

    @app.errorhandler(Exception)
    def unexpected(e: Exception):  # a bug: log it with its traceback, answer without one
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error happened; it was logged")


def _start_timer_thread(app: Flask, runtime: Runtime) -> None:
    """Embedded mode: fire deadlines on time, sleeping until the next one (at most 1 s)."""
    stop = threading.Event()
    app.extensions["chatflow_stop"] = stop

    def loop():
        while not stop.is_set():
            try:
                if runtime.run_due():
                    runtime.after_change()
                runtime.send_agent_mail()  # a batch whose window ended
                due = runtime.next_due()
                wait = 1.0 if due is None else min(1.0, max(0.0, due - runtime.clock()))
            except Exception:  # keep ticking; the error is logged
                log.exception("deadline tick failed")
                wait = 1.0
            stop.wait(wait)

    threading.Thread(target=loop, name="chatflow-deadlines", daemon=True).start()
