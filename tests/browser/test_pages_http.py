"""The pages as HTTP answers: each HTML page carries the strict Content-Security-Policy,
the widget script is served at /widget.js, and only the customer API answers other
origins (CORS) — the agent and admin APIs do not."""
from __future__ import annotations

import urllib.error
import urllib.request


def _get(url, method="GET", headers=None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def test_pages_headers_and_cors(live):
    for path in ("/", "/rules", "/demo", "/demo/pricing"):
        status, headers, body = _get(live.url + path)
        assert status == 200, path
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert "onclick=" not in body and "<script>" not in body and "style=" not in body  # nothing inline
    status, _, body = _get(live.url + "/demo/nope")
    assert status == 404 and "Page not found" in body
    status, headers, body = _get(live.url + "/widget.js")
    assert status == 200 and "javascript" in headers["Content-Type"] and "ChatflowWidget" in body

    preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    status, headers, _ = _get(live.url + "/api/widget/chats", "OPTIONS", preflight)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    assert "Last-Event-ID" in headers["Access-Control-Allow-Headers"]
    for path in ("/api/chats", "/api/admin/agents", "/api/me"):
        _, headers, _ = _get(live.url + path, "OPTIONS", preflight)
        assert "Access-Control-Allow-Origin" not in headers, path
