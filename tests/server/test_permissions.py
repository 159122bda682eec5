"""The permission matrix: every endpoint × every role, with the status each must get.

Roles: anonymous; the customer of this chat; the customer of another chat; an agent
without access_chats; an agent without the chat's channel; an operator who sees the chat;
the responsible operator; the admin. Each row is one request on chat A; the test runs the
whole table and lists every cell that differs, so a failure reads as a matrix.
"""
from __future__ import annotations

import pytest


@pytest.fixture
def app_config():
    # the matrix sends hundreds of refused tokens from one address on purpose; past the
    # default limit they would be 429s (tests/server/test_ratelimit.py tests that)
    return {"RATE_LIMITS": {"bad_token": "100000/minute"}}


ROLES = ("anonymous", "customer", "other_customer", "no_access", "other_channel", "operator",
         "responsible", "admin")

# (method, path, body, expected status per role in ROLES order). Reads come first, then
# writes, so the state each row sees is the one the table describes.
MATRIX = [
    ("get", "/healthz", None, (200, 200, 200, 200, 200, 200, 200, 200)),
    ("get", "/api/openapi.json", None, (200, 200, 200, 200, 200, 200, 200, 200)),
    ("get", "/api/widget/chats/{A}", None, (401, 200, 404, 404, 404, 404, 404, 404)),
    ("get", "/api/widget/chats/{A}/messages", None, (401, 200, 404, 404, 404, 404, 404, 404)),
    ("get", "/api/chats", None, (401, 401, 401, 200, 200, 200, 200, 200)),
    ("get", "/api/chats/{A}", None, (401, 401, 401, 404, 404, 200, 200, 404)),
    ("get", "/api/notifications", None, (401, 401, 401, 200, 200, 200, 200, 200)),
    ("get", "/api/me", None, (401, 401, 401, 200, 200, 200, 200, 200)),
    ("get", "/api/canned", None, (401, 401, 401, 200, 200, 200, 200, 200)),
    ("get", "/api/me/preferences", None, (401, 401, 401, 200, 200, 200, 200, 200)),
    ("get", "/api/admin/agents", None, (401, 401, 401, 403, 403, 403, 403, 200)),
    ("get", "/api/admin/rulesets", None, (401, 401, 401, 403, 403, 403, 403, 200)),
    ("get", "/api/admin/chats/{A}/trace", None, (401, 401, 401, 403, 403, 403, 403, 200)),
    ("post", "/api/admin/rulesets/validate", {"files": {"x.rules": "rule r { then stop }"}},
     (401, 401, 401, 403, 403, 403, 403, 200)),
    ("get", "/api/agents", None, (401, 401, 401, 200, 200, 200, 200, 200)),
    ("get", "/api/articles?q=refund", None, (401, 401, 401, 200, 200, 200, 200, 200)),
    ("get", "/api/analytics/report", None, (401, 401, 401, 403, 403, 403, 403, 200)),
    ("get", "/api/analytics/overview", None, (401, 401, 401, 403, 403, 403, 403, 200)),
    ("get", "/api/analytics/agents", None, (401, 401, 401, 403, 403, 403, 403, 200)),
    ("get", "/api/analytics/rules", None, (401, 401, 401, 403, 403, 403, 403, 200)),
    ("get", "/api/analytics/daily", None, (401, 401, 401, 403, 403, 403, 403, 200)),
    ("get", "/api/admin/webhooks", None, (401, 401, 401, 403, 403, 403, 403, 200)),
    ("get", "/api/admin/webhooks/deliveries", None, (401, 401, 401, 403, 403, 403, 403, 200)),
    ("get", "/api/admin/webhooks/deliveries/1", None, (401, 401, 401, 403, 403, 403, 403, 404)),
    ("post", "/api/admin/webhooks/deliveries/1/retry", None, (401, 401, 401, 403, 403, 403, 403, 404)),
    ("post", "/api/admin/dry-run", {"scenario": "tests:\n  - name: t\n    steps: []\n"},
     (401, 401, 401, 403, 403, 403, 403, 200)),
    ("put", "/api/admin/canned/thanks", {"shortcut": "thanks", "text": "Thanks!"}, (401, 401, 401, 403, 403, 403, 403, 200)),
    ("put", "/api/admin/articles/refunds", {"slug": "refunds", "title": "Refunds", "body": "Within 30 days."},
     (401, 401, 401, 403, 403, 403, 403, 200)),
    ("patch", "/api/me", {"reply_shortcut": "ctrl_enter"}, (401, 401, 401, 200, 200, 200, 200, 200)),
    ("patch", "/api/me/preferences", {"notifications": {"unattended": "off"}},
     (401, 401, 401, 200, 200, 200, 200, 200)),
    ("post", "/api/chats/{A}/subscribe", None, (401, 401, 401, 404, 404, 200, 200, 404)),
    ("post", "/api/widget/chats/{A}/presence", {"online": True}, (401, 200, 404, 404, 404, 404, 404, 404)),
    ("post", "/api/chats/{A}/note", {"text": "internal"}, (401, 401, 401, 404, 404, 201, 201, 404)),
    ("post", "/api/chats/{A}/reply", {"text": "hello"}, (401, 401, 401, 404, 404, 403, 201, 404)),
    ("post", "/api/chats/{A}/read", None, (401, 401, 401, 404, 404, 200, 200, 404)),
    # issue 8.10: anyone who sees the chat (snooze and status stop at another's lock)
    ("post", "/api/chats/{A}/tag", {"tag": "vip"}, (401, 401, 401, 404, 404, 200, 200, 404)),
    ("post", "/api/chats/{A}/untag", {"tag": "vip"}, (401, 401, 401, 404, 404, 200, 200, 404)),
    ("post", "/api/chats/{A}/priority", {"priority": 2}, (401, 401, 401, 404, 404, 200, 200, 404)),
    ("post", "/api/chats/{A}/snooze", {"for": "1h"}, (401, 401, 401, 404, 404, 200, 200, 404)),
    ("post", "/api/chats/{A}/status", {"status": "pending"}, (401, 401, 401, 404, 404, 200, 200, 404)),
    ("post", "/api/chats/{A}/lock", None, (401, 401, 401, 404, 404, 403, 200, 404)),
    ("post", "/api/widget/chats/{A}/messages", {"text": "more"}, (401, 201, 404, 404, 404, 404, 404, 404)),
    ("post", "/api/widget/chats/{A}/read", None, (401, 200, 404, 404, 404, 404, 404, 404)),
]


def _roles(api):
    agents = api.agents("operator", "responsible", ("no_access", {"access_chats": False}),
                        ("other_channel", {"channels": ["telegram"]}))
    chat_a, customer = api.start_chat("Hi from A")
    _, other_customer = api.start_chat("Hi from B")
    api.post(f"/api/chats/{chat_a}/join", agents["responsible"], status=200)
    headers = {"anonymous": {}, "customer": customer, "other_customer": other_customer, "admin": api.admin, **agents}
    return chat_a, headers


def test_every_endpoint_for_every_role(api, client):
    chat_a, headers = _roles(api)
    wrong = []
    for method, path, body, expected in MATRIX:
        url = path.format(A=chat_a)
        for role, want in zip(ROLES, expected):
            r = getattr(client, method)(url, json=body, headers=headers[role])
            if r.status_code != want:
                wrong.append(f"{method.upper()} {path} as {role}: {r.status_code}, expected {want}")
            if r.status_code >= 400:
                assert r.is_json and {"error", "message", "details"} <= set(r.get_json()), (url, role)
    assert not wrong, "\n".join(wrong)


def test_what_each_agent_lists(api, client):
    chat_a, headers = _roles(api)
    listed = {role: [c["id"] for c in client.get("/api/chats", headers=headers[role]).get_json()["chats"]]
              for role in ("no_access", "other_channel", "operator", "responsible", "admin")}
    assert listed["no_access"] == [] and listed["other_channel"] == [] and listed["admin"] == []
    assert chat_a in listed["operator"] and chat_a in listed["responsible"]


def test_a_note_never_reaches_the_customer(api, client):
    chat_a, headers = _roles(api)
    secret = "NOTE-4f1c: refund approved internally"
    api.post(f"/api/chats/{chat_a}/note", headers["operator"], {"text": secret}, status=201)
    api.post(f"/api/chats/{chat_a}/reply", headers["responsible"], {"text": "Looking into it"}, status=201)
    for url in (f"/api/widget/chats/{chat_a}", f"/api/widget/chats/{chat_a}/messages"):
        body = client.get(url, headers=headers["customer"]).get_data(as_text=True)
        assert "NOTE-4f1c" not in body and "Looking into it" in body
    # agents do see it
    assert secret in client.get(f"/api/chats/{chat_a}", headers=headers["operator"]).get_data(as_text=True)
