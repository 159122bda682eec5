"""What every command reads besides its chat: the agents (kept per process while their
revision counter stays put) and the round robin's last pick (stored, so the rotation goes
on across commands and processes)."""
from __future__ import annotations

import pytest

from server.app import create_app

ROUTING = '''
rule route "New chats go to support" {
  on chat.created
  then assign department "support"
}
'''


def upload(api, text: str) -> None:
    api.upload_rules({"team/extra.rules": text})


def assignee(api, cid, headers) -> str | None:
    return api.agent_chat(cid, headers)["assignee"]


def test_the_round_robin_goes_on_from_one_command_to_the_next(api):
    team = api.agents(("alice", {"departments": ["support"]}), ("bob", {"departments": ["support"]}),
                      ("carol", {"departments": ["support"]}))
    upload(api, ROUTING)
    picked = [assignee(api, api.start_chat(f"Hi {i}")[0], team["alice"]) for i in range(4)]
    assert picked == ["alice", "bob", "carol", "alice"]


@pytest.fixture
def second_process(app, api, tmp_path):
    """Another web process on the same PostgreSQL database (the same admin token)."""
    other = create_app({**{k: app.config[k] for k in ("DATABASE_URL", "CLOCK", "SECRET_KEY", "ADMIN_TOKEN")},
                        "DATA_DIR": str(tmp_path / "other"), "TIMERS": False})
    yield type(api)(other.test_client(), other)
    other.extensions["chatflow"].db.dispose()


@pytest.mark.parametrize("backend", ["postgresql"])  # processes share a database on PostgreSQL
def test_agents_changed_by_another_process_are_seen_by_the_next_command(api, second_process):
    team = api.agents(("alice", {"departments": ["support"]}))
    upload(api, ROUTING)
    first, _ = api.start_chat("Hi")
    assert assignee(api, first, team["alice"]) == "alice"  # this process now holds the agents

    # the other process adds bob and takes alice offline
    bob = second_process.agents(("bob", {"departments": ["support"]}))["bob"]
    r = second_process.client.patch("/api/me", json={"status": "offline"}, headers=team["alice"])
    assert r.status_code == 200, r.get_json()

    second, _ = api.start_chat("Hello")
    assert assignee(api, second, bob) == "bob"
    # and the round robin both processes share goes on from bob
    r = second_process.client.patch("/api/me", json={"status": "online"}, headers=team["alice"])
    assert r.status_code == 200
    third, _ = second_process.start_chat("Hey")
    assert assignee(second_process, third, bob) == "alice"
