"""The HTTP API fuzzed from its own OpenAPI document (schemathesis, through the WSGI app):
whatever the request, the answer is never a 500, always within a bound, and every error
is a JSON ``{error, message, details}`` whose message explains it.

The app runs embedded (SQLite in a temporary folder, deadlines off, streams cut after
half a second so an event stream cannot hang the run). Requests carry the token the
path needs: the admin's for /api/admin, a chat's customer token for the widget, an
agent's elsewhere; half of the generated chat ids are replaced by a real chat's, so
commands reach the engine instead of stopping at 404. CHATFLOW_FUZZ_EXAMPLES (default 12)
is the number of examples per operation.
"""
from __future__ import annotations

import os
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from server.app import create_app

EXAMPLES = int(os.environ.get("CHATFLOW_FUZZ_EXAMPLES", "12"))
SLOWEST = 10.0  # seconds: an answer slower than this counts as a hang


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz-api")
    app = create_app({"DATA_DIR": str(data), "TIMERS": False, "ADMIN_TOKEN": "fuzz-admin", "SECRET_KEY": "fuzz",
                      "STREAM_SECONDS": 0.5, "RATE_LIMITS": "off"})
    app.config["TESTING"] = True
    c = app.test_client()
    admin = {"Authorization": "Bearer fuzz-admin"}
    agent = c.post("/api/admin/agents", json={"id": "alice"}, headers=admin).get_json()["token"]
    started = c.post("/api/widget/chats", json={"text": "Hello", "customer": {"email": "ann@example.com"}}).get_json()
    chat_id = started["chat"]["id"]
    c.post(f"/api/chats/{chat_id}/join", headers={"Authorization": "Bearer " + agent})
    app.fuzz = {"admin": admin, "agent": {"Authorization": "Bearer " + agent},
                "customer": {"Authorization": "Bearer " + started["token"]}, "chat_id": chat_id}
    yield app
    app.extensions["chatflow"].db.dispose()


@schemathesis.serializer("message/rfc822")
def _rfc822(ctx, value) -> bytes:
    """The inbound-email body: raw bytes as generated (a string is sent UTF-8 encoded)."""
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else repr(value)).encode("utf-8", "surrogatepass")


def _operations(app):
    """Every operation of the document the app serves, as schemathesis APIOperations."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def _headers(app, path: str) -> dict:
    if path.startswith("/api/admin"):
        return app.fuzz["admin"]
    if path.startswith("/api/widget/chats/"):
        return app.fuzz["customer"]
    return app.fuzz["agent"]


def test_no_request_gets_a_500_or_hangs_and_every_error_explains_itself(fuzz_app):
    # schemathesis' own pytest plugin does not run under pytest 9 (it reads Function._nodeid):
    # each operation's strategy is driven by hypothesis directly instead
    operations = _operations(fuzz_app)
    assert len(operations) >= 30
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case):
            check(case, fuzz_app)
        fuzz()


def check(case, fuzz_app) -> None:
    if "chat_id" in (case.path_parameters or {}) and hash(repr(case.body)) % 2:
        case.path_parameters["chat_id"] = fuzz_app.fuzz["chat_id"]
    t0 = time.monotonic()
    response = case.call(headers=_headers(fuzz_app, case.path))
    took = time.monotonic() - t0
    where = f"{case.method} {case.formatted_path} body={case.body!r:.300}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
    assert took < SLOWEST, f"{where}: answered after {took:.1f} s"
    if response.status_code >= 400:
        err = response.json()
        assert set(err) >= {"error", "message", "details"}, f"{where}: {err}"
        assert isinstance(err["error"], str) and err["error"], f"{where}: {err}"
        assert isinstance(err["message"], str) and len(err["message"]) > 5, f"{where}: {err}"
        assert isinstance(err["details"], dict), f"{where}: {err}"


def test_a_scenario_with_a_control_character_is_a_located_error(fuzz_app):
    """Found by this fuzzing as a 500; now refused like any invalid scenario: 422 with the
    diagnostic at the character's line and column."""
    c = fuzz_app.test_client()
    r = c.post("/api/admin/dry-run", json={"scenario": "tests: []\nname: a\x1fb\n"}, headers=fuzz_app.fuzz["admin"])
    assert r.status_code == 422, r.get_json()
    data = r.get_json()
    assert data["error"] == "scenario_invalid" and "not allowed in YAML" in data["message"]
    [d] = data["details"]["diagnostics"]
    assert (d["code"], d["line"], d["column"]) == ("yaml_error", 2, 8)
