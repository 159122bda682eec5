"""The OpenAPI 3.1 document served at ``/api/openapi.json``, built from the request-body
schemas in ``schemas/api.schema.json`` and the route table below (a test checks that
every Flask route is in the table, so the document cannot drift from the app)."""
from __future__ import annotations

from .http import _schema

AGENT, CUSTOMER, ADMIN, NONE = "agent", "customer", "admin", None

# (method, path, summary, request body schema or None, who may call it)
ROUTES = [
    ("get", "/healthz", "Liveness and database check", None, NONE),
    ("get", "/metrics", "Prometheus metrics", None, NONE),
    ("get", "/api/openapi.json", "This document", None, NONE),
    ("post", "/api/widget/chats", "Start a chat; returns the chat and its customer token", "StartChat", NONE),
    ("get", "/api/widget/chats/{chat_id}", "The chat as the customer sees it", None, CUSTOMER),
    ("get", "/api/widget/chats/{chat_id}/messages", "Public messages of the chat", None, CUSTOMER),
    ("post", "/api/widget/chats/{chat_id}/messages", "Send a customer message", "CustomerMessage", CUSTOMER),
    ("post", "/api/widget/chats/{chat_id}/read", "Mark everything so far as read by the customer", None, CUSTOMER),
    ("post", "/api/widget/chats/{chat_id}/presence", "Report the customer online or offline", "Presence", CUSTOMER),
    ("get", "/api/widget/chats/{chat_id}/stream", "Server-Sent Events of the customer's chat", None, CUSTOMER),
    ("get", "/api/chats", "Chats the agent sees (none without access_chats)", None, AGENT),
    ("get", "/api/chats/{chat_id}", "A chat with all its messages, notes included", None, AGENT),
    ("post", "/api/chats/{chat_id}/{command}",
     "join, read, subscribe, unsubscribe, lock, unlock, close or reopen", None, AGENT),
    ("post", "/api/chats/{chat_id}/reply", "A public reply (the agent must be responsible)", "Reply", AGENT),
    ("post", "/api/chats/{chat_id}/note", "A private note; @AGENT_ID mentions", "Note", AGENT),
    ("post", "/api/chats/{chat_id}/assign", "Assign to an agent or a department", "Assign", AGENT),
    ("post", "/api/chats/{chat_id}/tag", "Tag the chat (any agent who sees it)", "Tag", AGENT),
    ("post", "/api/chats/{chat_id}/untag", "Remove a tag", "Tag", AGENT),
    ("post", "/api/chats/{chat_id}/priority", "Set the priority 0-4", "SetPriority", AGENT),
    ("post", "/api/chats/{chat_id}/snooze",
     "Snooze for a duration, until an instant or until a schedule next opens; it reopens by itself", "Snooze", AGENT),
    ("post", "/api/chats/{chat_id}/status", "Set the status pending (waits until reopened)", "SetStatus", AGENT),
    ("patch", "/api/chats/{chat_id}/messages/{position}", "Edit an own message (1-based position)", "EditMessage", AGENT),
    ("delete", "/api/chats/{chat_id}/messages/{position}", "Delete an own message", None, AGENT),
    ("get", "/api/notifications", "The agent's notifications (?unread=1, ?after=ID)", None, AGENT),
    ("post", "/api/notifications/read", "Mark all notifications read", None, AGENT),
    ("get", "/api/stream", "Server-Sent Events of the agent's notifications", None, AGENT),
    ("get", "/api/me", "The agent's own settings", None, AGENT),
    ("patch", "/api/me", "Set own status, reply shortcut (Enter or Ctrl+Enter) and email address", "Me", AGENT),
    ("get", "/api/me/preferences", "How each notification template reaches the agent (in_app, email, off)", None,
     AGENT),
    ("patch", "/api/me/preferences", "Set how notification templates reach the agent (null removes one)",
     "Preferences", AGENT),
    ("get", "/api/agents", "The operators: ids, names, departments, status (for @mentions and assignment)", None, AGENT),
    ("get", "/api/canned", "Canned responses", None, AGENT),
    ("get", "/api/articles", "Search help-center articles (?q=)", None, AGENT),
    ("post", "/api/admin/agents", "Create an agent; returns its token once", "AgentCreate", ADMIN),
    ("get", "/api/admin/agents", "List agents", None, ADMIN),
    ("post", "/api/admin/rulesets/validate", "Check a rule set without storing it", "RulesetUpload", ADMIN),
    ("post", "/api/admin/rulesets", "Upload a rule set: checked, stored as a new version, activated", "RulesetUpload", ADMIN),
    ("get", "/api/admin/rulesets", "Rule set versions", None, ADMIN),
    ("get", "/api/admin/rulesets/{version}", "One rule set version with its files", None, ADMIN),
    ("post", "/api/admin/rulesets/{version}/activate", "Activate a version (rollback)", None, ADMIN),
    ("post", "/api/admin/dry-run", "Run a scenario (YAML) on a virtual clock against the active or given rules; the timeline", "DryRun", ADMIN),
    ("get", "/api/admin/chats/{chat_id}/trace", "Why each rule fired or not, per run", None, ADMIN),
    ("put", "/api/admin/canned/{shortcut}", "Create or replace a canned response", "Canned", ADMIN),
    ("put", "/api/admin/articles/{slug}", "Create or replace a help-center article", "Article", ADMIN),
    ("get", "/api/admin/webhooks", "The declared webhooks (no secrets), their hosts and deliveries by status", None,
     ADMIN),
    ("get", "/api/admin/webhooks/deliveries",
     "The webhook delivery log, newest first (?webhook, status, chat_id, before, limit)", None, ADMIN),
    ("get", "/api/admin/webhooks/deliveries/{delivery_id}", "One delivery with the body it posts", None, ADMIN),
    ("post", "/api/admin/webhooks/deliveries/{delivery_id}/retry", "Try a failed or refused delivery again", None,
     ADMIN),
    ("post", "/api/inbound-email", "An inbound email (raw RFC 822) answering a chat email", None, NONE),
    ("get", "/api/analytics/report", "Every figure of a period (?from, to, channel, department, agent, wait_minutes)",
     None, ADMIN),
    ("get", "/api/analytics/overview", "Chats, response and resolution times, escalations, emails of a period", None,
     ADMIN),
    ("get", "/api/analytics/agents", "Per agent: chats handled, replies, notes, time to join", None, ADMIN),
    ("get", "/api/analytics/rules", "Per rule: times evaluated, fired, effects, last fired", None, ADMIN),
    ("get", "/api/analytics/daily", "Chats started, answered and closed per UTC day", None, ADMIN),
    ("get", "/api/analytics/sla", "Per SLA policy and target: cycles achieved and breached in the period", None, ADMIN),
]

# routes that are pages, not API operations (server/pages.py, Flask's static files)
PAGES = ("/", "/analytics", "/rules", "/demo", "/demo/{page}", "/widget.js", "/static/{filename}")

# the query of every /api/analytics/ endpoint (server/api_analytics.py: PARAMETERS)
ANALYTICS_QUERY = [
    {"name": "from", "in": "query", "description": "ISO 8601 date or date-time (UTC unless a zone is given)",
     "schema": {"type": "string"}},
    {"name": "to", "in": "query", "description": "ISO 8601 date (that day included) or date-time",
     "schema": {"type": "string"}},
    {"name": "channel", "in": "query", "schema": {"type": "string"}},
    {"name": "department", "in": "query", "schema": {"type": "string"}},
    {"name": "agent", "in": "query", "schema": {"type": "string"}},
    {"name": "wait_minutes", "in": "query", "description": "the 'waited longer than' threshold",
     "schema": {"type": "number"}},
]

DELIVERIES_QUERY = [
    {"name": "webhook", "in": "query", "schema": {"type": "string"}},
    {"name": "status", "in": "query", "schema": {"enum": ["pending", "delivered", "failed", "refused"]}},
    {"name": "chat_id", "in": "query", "schema": {"type": "string"}},
    {"name": "before", "in": "query", "description": "only deliveries with a smaller id (the next page)",
     "schema": {"type": "integer", "minimum": 0}},
    {"name": "limit", "in": "query", "description": "at most this many (default 100, at most 500)",
     "schema": {"type": "integer", "minimum": 1}},
]

ERROR = {
    "type": "object",
    "required": ["error", "message", "details"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}},
}


def document() -> dict:
    schemas = {"Error": ERROR}
    for name, schema in _schema()["$defs"].items():
        schemas[name] = _rebase(schema)
    paths: dict = {}
    for method, path, summary, body, who in ROUTES:
        op = {
            "summary": summary,
            "operationId": _operation_id(method, path),
            "responses": {
                "200": {"description": "OK"},
                "4XX": {"description": "A JSON error", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }
        params = [{"name": p, "in": "path", "required": True,
                   "schema": {"type": "integer"} if p in ("position", "version", "delivery_id") else {"type": "string"}}
                  for p in _path_params(path)]
        if path.startswith("/api/analytics/"):
            params += ANALYTICS_QUERY
        if path == "/api/admin/webhooks/deliveries":
            params += DELIVERIES_QUERY
        if params:
            op["parameters"] = params
        if body:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{body}"}}}}
        if path == "/api/inbound-email":
            op["requestBody"] = {"required": True, "content": {"message/rfc822": {"schema": {"type": "string"}}}}
        if who is not None:
            op["security"] = [{"customerToken": []}] if who == CUSTOMER else [{"agentToken": []}]
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "chatflow", "version": "0.1.0",
                 "description": "Live-chat support whose workflow is written as rules."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "agentToken": {"type": "http", "scheme": "bearer", "description": "an agent's (or admin's) token"},
                "customerToken": {"type": "http", "scheme": "bearer", "description": "the token of one chat"},
            },
        },
    }


def _rebase(schema):
    """$refs inside the request schemas point at #/$defs; in OpenAPI they live in components."""
    if isinstance(schema, dict):
        return {k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" else _rebase(v))
                for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rebase(x) for x in schema]
    return schema


def _path_params(path: str) -> list:
    import re

    return re.findall(r"{(\w+)}", path)


def _operation_id(method: str, path: str) -> str:
    parts = [p.strip("{}") for p in path.strip("/").split("/") if p]
    return method + "_" + "_".join(p.replace(".", "_").replace("-", "_") for p in parts)


def flask_path(rule: str) -> str:
    """A Flask rule (``/api/chats/<chat_id>``) as an OpenAPI path (``/api/chats/{chat_id}``)."""
    import re

    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)
