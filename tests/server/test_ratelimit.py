"""Rate limits on the public widget endpoints and on token guessing (issue 6: abuse):
each refusal is a 429 `rate_limited` JSON error with Retry-After, counted per client
address (chat starts, refused tokens) or per chat (a customer's commands)."""
from __future__ import annotations

import pytest

from server.app import create_app

ADMIN_TOKEN = "ratelimit-admin-token"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def make_app(tmp_path):
    made = []

    def make(limits):
        app = create_app({"DATA_DIR": str(tmp_path / f"data{len(made)}"), "TIMERS": False,
                          "ADMIN_TOKEN": ADMIN_TOKEN, "SECRET_KEY": "test-secret", "RATE_LIMITS": limits})
        made.append(app)
        return app.test_client()

    yield make
    for app in made:
        app.extensions["chatflow"].db.dispose()


def start(client, addr="10.0.0.1"):
    return client.post("/api/widget/chats", json={"text": "Hi"}, environ_base={"REMOTE_ADDR": addr})


def assert_limited(r):
    assert r.status_code == 429, (r.status_code, r.get_json())
    data = r.get_json()
    assert data["error"] == "rate_limited" and "too many" in data["message"]
    assert int(r.headers["Retry-After"]) >= 1 and data["details"]["retry_after"] >= 1


def test_chat_starts_are_limited_per_client_address(make_app):
    client = make_app({"start_chat": "3/minute"})
    assert [start(client).status_code for _ in range(3)] == [201, 201, 201]
    assert_limited(start(client))
    assert start(client, addr="10.0.0.2").status_code == 201  # another address is not held back


def test_a_chats_customer_commands_are_limited_per_chat(make_app):
    client = make_app({"customer": "4/minute"})
    chats = [start(client).get_json() for _ in range(2)]
    (a, ta), (b, tb) = [(c["chat"]["id"], bearer(c["token"])) for c in chats]
    for i in range(4):
        assert client.post(f"/api/widget/chats/{a}/messages", json={"text": f"m{i}"}, headers=ta).status_code == 201
    assert_limited(client.post(f"/api/widget/chats/{a}/messages", json={"text": "spam"}, headers=ta))
    assert_limited(client.post(f"/api/widget/chats/{a}/read", headers=ta))
    assert client.post(f"/api/widget/chats/{b}/messages", json={"text": "hello"}, headers=tb).status_code == 201
    # nothing of the refused ones was stored
    texts = [m["text"] for m in client.get(f"/api/widget/chats/{a}/messages", headers=ta).get_json()["messages"]]
    assert texts == ["Hi", "m0", "m1", "m2", "m3"]


def test_guessing_tokens_gets_429s_from_that_address_while_right_tokens_work(make_app):
    client = make_app({"bad_token": "3/minute"})
    chat = start(client).get_json()
    cid, right = chat["chat"]["id"], bearer(chat["token"])
    guess = {"environ_base": {"REMOTE_ADDR": "10.6.6.6"}}
    for i in range(3):
        r = client.get(f"/api/widget/chats/{cid}", headers=bearer(f"guess-{i}"), **guess)
        assert r.status_code == 404
    assert_limited(client.get(f"/api/widget/chats/{cid}", headers=bearer("guess-3"), **guess))
    assert_limited(client.get("/api/chats", headers=bearer("agent-guess"), **guess))
    assert_limited(client.post(f"/api/widget/chats/{cid}/messages", json={"text": "x"}, headers=bearer("g"), **guess))
    # a right token from the same address (an office behind one address) still works
    assert client.get(f"/api/widget/chats/{cid}", headers=right, **guess).status_code == 200


def test_agent_token_guesses_count_too(make_app):
    client = make_app({"bad_token": "2/minute"})
    guess = {"environ_base": {"REMOTE_ADDR": "10.6.6.7"}}
    assert [client.get("/api/chats", headers=bearer(f"x{i}"), **guess).status_code for i in range(2)] == [401, 401]
    assert_limited(client.get("/api/chats", headers=bearer("x2"), **guess))
    assert client.get("/api/chats", headers=bearer(ADMIN_TOKEN), **guess).status_code == 200


def test_limits_can_be_turned_off_and_unknown_ones_are_refused(make_app):
    client = make_app("off")
    assert all(start(client).status_code == 201 for _ in range(40))
    with pytest.raises(ValueError, match="unknown limit 'start_chats'"):
        make_app({"start_chats": "1/minute"})
