"""The admin API: agents, rule sets (validate, upload as a new version, activate,
roll back), per-chat traces of rule runs, canned responses, articles and the webhooks'
delivery log."""
from __future__ import annotations

import secrets

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import func, select, update

from dsl.loader import load_rule_set

from . import store as S
from .http import ApiError, body, require_admin

bp = Blueprint("admin", __name__, url_prefix="/api/admin")


def _runtime():
    return current_app.extensions["chatflow"]


@bp.post("/agents")
def create_agent():
    require_admin()
    data = body("AgentCreate")
    token = secrets.token_urlsafe(32)
    values = {"id": data["id"], "name": data.get("name"), "departments": data.get("departments") or [],
              "access_chats": data.get("access_chats", True), "channels": data.get("channels"),
              "status": data.get("status", "online"), "max_chats": data.get("max_chats"),
              "capacity": data.get("capacity"),
              "is_admin": data.get("is_admin", False), "email": data.get("email"), "token_hash": S.token_hash(token)}
    with _runtime().db.begin() as conn:
        if conn.execute(select(S.agents.c.id).where(S.agents.c.id == data["id"])).first():
            raise ApiError(409, "agent_exists", f"agent {data['id']!r} already exists")
        conn.execute(S.agents.insert().values(**values))
    values.pop("token_hash")
    return jsonify({"agent": values, "token": token}), 201


@bp.get("/agents")
def list_agents():
    require_admin()
    with _runtime().db.connect() as conn:
        rows = conn.execute(select(S.agents).order_by(S.agents.c.id)).mappings().all()
    return jsonify({"agents": [{k: v for k, v in r.items() if k != "token_hash"} for r in rows]})


def _check(data) -> tuple:
    loaded = load_rule_set([], defaults=data.get("defaults", True), texts=data["files"])
    diagnostics = [d.as_json() for d in loaded.diagnostics]
    return loaded, diagnostics


def _undeclared_webhooks(loaded) -> list:
    """Errors at each `webhook` action naming a webhook this server does not declare:
    `chatflow check` cannot know the settings; the service can."""
    from .webhooks import undeclared

    return [d.as_json() for d in undeclared(loaded.ruleset, current_app.config)]


def _refuse_undeclared(loaded, what: str) -> None:
    missing = _undeclared_webhooks(loaded)
    if missing:
        raise ApiError(422, "unknown_webhook", f"{missing[0]['message']}; {what}", {"diagnostics": missing})


@bp.post("/rulesets/validate")
def validate_ruleset():
    require_admin()
    data = body("RulesetUpload")
    loaded, diagnostics = _check(data)
    missing = _undeclared_webhooks(loaded) if loaded.result.ok else []
    return jsonify({"ok": loaded.result.ok and not missing,
                    "rules": len(loaded.ruleset.rules) if loaded.ruleset else None,
                    "diagnostics": diagnostics + missing})


@bp.post("/rulesets")
def upload_ruleset():
    me = require_admin()
    data = body("RulesetUpload")
    loaded, diagnostics = _check(data)
    if not loaded.result.ok:
        raise ApiError(422, "rules_invalid", "the rule set does not compile; nothing was stored",
                       {"diagnostics": diagnostics})
    activate = data.get("activate", True)
    if activate:
        _refuse_undeclared(loaded, "nothing was stored")
    version = _runtime().store_ruleset(data["files"], data.get("defaults", True), activate, me["id"])
    return jsonify({"version": version, "active": activate, "rules": len(loaded.ruleset.rules),
                    "diagnostics": diagnostics}), 201


@bp.get("/rulesets")
def list_rulesets():
    require_admin()
    with _runtime().db.connect() as conn:
        rows = conn.execute(select(S.rulesets).order_by(S.rulesets.c.version.desc())).mappings().all()
    return jsonify({"rulesets": [{"version": r["version"], "active": r["active"], "files": sorted(r["files"]),
                                  "defaults": r["defaults"], "created_at": r["created_at"],
                                  "created_by": r["created_by"]} for r in rows]})


@bp.get("/rulesets/<int(max=2147483647):version>")
def get_ruleset(version):
    require_admin()
    with _runtime().db.connect() as conn:
        row = conn.execute(select(S.rulesets).where(S.rulesets.c.version == version)).mappings().first()
    if row is None:
        raise ApiError(404, "not_found", f"no rule set version {version}")
    return jsonify(dict(row))


@bp.post("/rulesets/<int(max=2147483647):version>/activate")
def activate_ruleset(version):
    require_admin()
    with _runtime().db.connect() as conn:
        row = conn.execute(select(S.rulesets).where(S.rulesets.c.version == version)).mappings().first()
    if row is not None:
        _refuse_undeclared(load_rule_set([], defaults=row["defaults"], texts=row["files"]),
                           f"version {version} was not activated")
    if not _runtime().activate(version):
        raise ApiError(404, "not_found", f"no rule set version {version}")
    return jsonify({"version": version, "active": True})


@bp.get("/chats/<chat_id>/trace")
def chat_trace(chat_id):
    require_admin()
    with _runtime().db.connect() as conn:
        if not conn.execute(select(S.chats.c.id).where(S.chats.c.id == chat_id)).first():
            raise ApiError(404, "unknown_chat", f"no chat {chat_id!r}")
        rows = conn.execute(select(S.traces).where(S.traces.c.chat_id == chat_id).order_by(S.traces.c.id)).mappings().all()
    return jsonify({"chat_id": chat_id, "runs": [{"at": r["at"], "entries": r["entries"]} for r in rows]})


@bp.post("/dry-run")
def dry_run():
    """A scenario (YAML text) run on a virtual clock against the active rule set, or
    against ``files`` (a draft not yet uploaded): the timeline ``chatflow dry-run
    --format json`` prints, and whether its expectations are met. Sends nothing."""
    require_admin()
    data = body("DryRun")
    if "files" in data:
        loaded, diagnostics = _check({"files": data["files"], "defaults": data.get("defaults", True)})
    else:
        with _runtime().db.connect() as conn:
            row = conn.execute(select(S.rulesets).where(S.rulesets.c.active.is_(True))).mappings().first()
        loaded = load_rule_set([], defaults=row["defaults"], texts=row["files"])
        diagnostics = [d.as_json() for d in loaded.diagnostics]
    if not loaded.result.ok:
        raise ApiError(422, "rules_invalid", "the rule set does not compile", {"diagnostics": diagnostics})
    return jsonify(_run_scenario(data["scenario"], data.get("test"), loaded))


SCENARIO_NAME = "scenario.yaml"


def _run_scenario(text: str, test_name: str | None, loaded) -> dict:
    import json
    import tempfile
    from datetime import datetime, timezone
    from pathlib import Path

    from chatflow.scenario_cli import _entry_json  # the same entries as `chatflow dry-run --format json`
    from dsl.errors import SourceError
    from engine.scenario import load_scenario, run_test

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SCENARIO_NAME
        path.write_text(text, encoding="utf-8")
        try:
            # `rules:` paths are never read here: only the loaded rule set runs
            scenario = load_scenario(path)
        except SourceError as e:
            diagnostics = [{**d.as_json(), "path": SCENARIO_NAME} for d in e.diagnostics]
            raise ApiError(422, "scenario_invalid", diagnostics[0]["message"], {"diagnostics": diagnostics}) from None
    scenario.path = SCENARIO_NAME
    scenario.loaded = loaded
    names = [t.name for t in scenario.tests]
    tests = [t for t in scenario.tests if test_name is None or t.name == test_name]
    if not tests:
        raise ApiError(422, "unknown_test", f"no test named {test_name!r}", {"tests": names})
    result = run_test(scenario, tests[0], tracing=True)
    out = {
        "test": tests[0].name, "tests": names, "passed": result.passed,
        "start": datetime.fromtimestamp(scenario.start, timezone.utc).isoformat().replace("+00:00", "Z"),
        "timeline": [_entry_json(e, scenario.start) for e in result.engine.trace],
        "failures": [{"where": f.where, "expected": f.expected, "got": f.got, "line": f.line} for f in result.failures],
        "notes": ["`rules:` is ignored here: the scenario runs against the rule set of this request"]
        if scenario.rules else [],
    }
    return json.loads(json.dumps(out, default=str))  # values such as sets print as the CLI prints them


def _replace_row(table, key_name: str, key: str, schema_name: str):
    """PUT semantics for a row named in the URL: the body, validated, replaces the row."""
    require_admin()
    data = body(schema_name)
    if data[key_name] != key:
        raise ApiError(400, "invalid_request", f"the {key_name} in the body differs from the URL")
    with _runtime().db.begin() as conn:
        conn.execute(table.delete().where(table.c[key_name] == key))
        conn.execute(table.insert().values(**data))
    return jsonify(data)


@bp.put("/canned/<shortcut>")
def put_canned(shortcut):
    return _replace_row(S.canned, "shortcut", shortcut, "Canned")


@bp.put("/articles/<slug>")
def put_article(slug):
    return _replace_row(S.articles, "slug", slug, "Article")


# ---------------------------------------------------------------- webhooks

DELIVERY_STATUSES = ("pending", "delivered", "failed", "refused")


@bp.get("/webhooks")
def list_webhooks():
    """The webhooks the settings declare (never their secrets), whether their host is
    allowed, and their deliveries by status."""
    require_admin()
    from urllib.parse import urlsplit

    from .webhooks import host_allowed

    config = current_app.config
    t = S.webhook_deliveries
    with _runtime().db.connect() as conn:
        counts = conn.execute(select(t.c.webhook, t.c.status, func.count()).group_by(t.c.webhook, t.c.status)).all()
    by_name: dict = {}
    for name, status, n in counts:
        by_name.setdefault(name, {})[status] = n
    hooks = []
    for name, spec in sorted((config.get("WEBHOOKS") or {}).items()):
        parts = urlsplit(spec["url"])
        hooks.append({"name": name, "url": f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}",
                      "host_allowed": host_allowed(spec["url"], config.get("WEBHOOK_HOSTS")),
                      "deliveries": {s: by_name.get(name, {}).get(s, 0) for s in DELIVERY_STATUSES}})
    return jsonify({"webhooks": hooks, "hosts": list(config.get("WEBHOOK_HOSTS") or ()),
                    "max_attempts": config["WEBHOOK_MAX_ATTEMPTS"]})


def _delivery_json(r, with_body: bool = False) -> dict:
    out = {k: r[k] for k in ("id", "webhook", "chat_id", "rule", "event", "status", "attempts", "response_code",
                             "last_error", "at", "next_attempt_at", "delivered_at", "updated_at")}
    if out["status"] != "pending":
        out["next_attempt_at"] = None
    if with_body:
        out["body"] = r["body"]
    return out


@bp.get("/webhooks/deliveries")
def list_deliveries():
    """The delivery log, newest first: ?webhook=, ?status=, ?chat_id=, ?before=ID, ?limit= (≤ 500)."""
    require_admin()
    from .http import id_param

    t = S.webhook_deliveries
    q = select(t).order_by(t.c.id.desc())
    status = request.args.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise ApiError(400, "invalid_request", "status is one of " + ", ".join(DELIVERY_STATUSES))
    for name in ("webhook", "status", "chat_id"):
        value = request.args.get(name)
        if value is not None:
            q = q.where(t.c[name] == value)
    before = id_param(request.args.get("before"), "before")
    if before is not None:
        q = q.where(t.c.id < before)
    limit = id_param(request.args.get("limit"), "limit")
    limit = 100 if limit is None else max(1, min(limit, 500))
    with _runtime().db.connect() as conn:
        rows = conn.execute(q.limit(limit)).mappings().all()
    return jsonify({"deliveries": [_delivery_json(r) for r in rows]})


@bp.get("/webhooks/deliveries/<int(max=2147483647):delivery_id>")
def get_delivery(delivery_id):
    require_admin()
    with _runtime().db.connect() as conn:
        row = conn.execute(select(S.webhook_deliveries).where(S.webhook_deliveries.c.id == delivery_id)).mappings().first()
    if row is None:
        raise ApiError(404, "not_found", f"no webhook delivery {delivery_id}")
    return jsonify(_delivery_json(row, with_body=True))


@bp.post("/webhooks/deliveries/<int(max=2147483647):delivery_id>/retry")
def retry_delivery(delivery_id):
    """Try a failed or refused delivery again, from its first attempt (the same body and id)."""
    require_admin()
    runtime = _runtime()
    t = S.webhook_deliveries
    with runtime.db.begin() as conn:
        row = conn.execute(select(t).where(t.c.id == delivery_id)).mappings().first()
        if row is None:
            raise ApiError(404, "not_found", f"no webhook delivery {delivery_id}")
        if row["status"] not in ("failed", "refused"):
            raise ApiError(409, "not_retryable", f"delivery {delivery_id} is {row['status']}; only a failed or "
                           "refused one is tried again")
        now = runtime.clock()
        conn.execute(update(t).where(t.c.id == delivery_id).values(status="pending", attempts=0, next_attempt_at=now,
                                                                   lease_until=None, updated_at=now))
        row = conn.execute(select(t).where(t.c.id == delivery_id)).mappings().first()
    runtime._webhooks_waiting = True
    runtime.after_change()
    return jsonify(_delivery_json(row))
