"""Routing through the service (issue 8.7; README "Routing"): the backlog when an agent
comes online or frees capacity, capacity per channel, the fair-distribution limit and
`set department` — on SQLite and PostgreSQL, embedded and with several processes sharing
one PostgreSQL database, where the limits must hold for all of them together."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from server import store as S
from server.runtime import Runtime

RULES = '''
routing {
  backlog skip idle over 1h
  at most 2 per 10m
  capacity widget 2
}

rule queue_sales "Sales pages wait in the sales queue" {
  on chat.created
  when chat.page_url contains "/sales"
  then set department "sales"
}

rule route_support "Support pages go to support" {
  on chat.created
  when chat.page_url contains "/support"
  then assign department "support"
}

disable default.escalate_unread
'''


@pytest.fixture
def app_config():
    return {"RATE_LIMITS": "off"}  # 40 chats from one test address


def upload(api, text: str) -> None:
    api.upload_rules({"team/routing.rules": text})


def status(api, headers, value: str) -> None:
    r = api.client.patch("/api/me", json={"status": value}, headers=headers)
    assert r.status_code == 200, r.get_json()


def chat_fields(runtime, chat_id):
    chat = runtime.load_chat(chat_id)
    return chat.assignee, chat.department, chat.status


def sales_chat(api, clock, text="Hi"):
    cid, _ = api.start_chat(text, page_url="https://shop.example/sales")
    clock.advance(60)
    return cid


def test_set_department_queues_and_an_agent_coming_online_takes_the_longest_waiting(api, client, runtime, clock):
    team = api.agents(("sam", {"departments": ["sales"], "status": "offline"}), "boss")
    upload(api, RULES)
    chats = [sales_chat(api, clock) for _ in range(3)]
    assert [chat_fields(runtime, c) for c in chats] == [(None, "sales", "open")] * 3

    status(api, team["sam"], "online")
    # capacity widget 2: the two that waited longest
    assert [chat_fields(runtime, c)[0] for c in chats] == ["sam", "sam", None]
    assert api.templates(team["sam"]).count("assigned") == 2
    trace = client.get(f"/api/admin/chats/{chats[0]}/trace", headers=api.admin).get_json()
    assert "default.notify_assigned" in str(trace)

    # sam closes one: the third comes to sam (the window allows 2 per 10m: 10 minutes on)
    clock.advance(600)
    api.post(f"/api/chats/{chats[0]}/close", team["sam"], status=200)
    assert chat_fields(runtime, chats[2])[0] == "sam"


def test_a_transfer_frees_capacity_and_the_fair_limit_holds(api, runtime, clock):
    team = api.agents(("sam", {"departments": ["sales"]}), "boss")
    upload(api, RULES)
    chats = [sales_chat(api, clock) for _ in range(3)]
    status(api, team["sam"], "away")
    status(api, team["sam"], "online")
    assert [chat_fields(runtime, c)[0] for c in chats] == ["sam", "sam", None]
    # boss takes one over: sam has room, but was picked twice in the last 10 minutes
    api.post(f"/api/chats/{chats[0]}/join", team["boss"], status=200)
    assert chat_fields(runtime, chats[2])[0] is None
    # later, room again and the window passed: the next change of hands gives it
    clock.advance(600)
    api.post(f"/api/chats/{chats[1]}/join", team["boss"], status=200)
    assert chat_fields(runtime, chats[2])[0] == "sam"


def test_chats_idle_beyond_the_limit_stay_waiting(api, runtime, clock):
    team = api.agents(("sam", {"departments": ["sales"], "status": "offline"}))
    upload(api, RULES)
    old = sales_chat(api, clock)
    clock.advance(3600)
    new = sales_chat(api, clock)
    status(api, team["sam"], "online")
    assert (chat_fields(runtime, old)[0], chat_fields(runtime, new)[0]) == (None, "sam")


def test_department_assignment_honours_channel_capacity_and_the_window(api, runtime, clock):
    team = api.agents(("pat", {"departments": ["support"]}))
    upload(api, RULES)
    picked = []
    for _ in range(3):
        cid, _ = api.start_chat("Hi", page_url="https://shop.example/support")
        picked.append(chat_fields(runtime, cid)[0])
    assert picked == ["pat", "pat", None]  # widget capacity 2 (and 2 per 10m)
    with runtime.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(S.routing_picks)).scalar() == 2


def test_a_deadline_that_closes_chats_hands_out_the_next_ones(api, runtime, clock):
    team = api.agents(("sam", {"departments": ["sales"], "status": "offline"}))
    upload(api, RULES + '''
rule wrap_up "Assigned chats close after 15 minutes" {
  when chat.assigned for 15m
  then close
}
''')
    chats = [sales_chat(api, clock) for _ in range(4)]
    status(api, team["sam"], "online")
    assert [chat_fields(runtime, c)[0] for c in chats] == ["sam", "sam", None, None]
    clock.advance(15 * 60)
    runtime.run_due(clock())
    # both close at the deadline; sam has room for two again, and the window has passed
    assert [chat_fields(runtime, c)[2] for c in chats[:2]] == ["closed", "closed"]
    assert [chat_fields(runtime, c)[0] for c in chats[2:]] == ["sam", "sam"]
    assert api.templates(team["sam"]).count("assigned") == 4


# ---------------------------------------------------------------- several processes

LIMITED = '''
routing { at most 3 per 1h }
rule route "Every chat goes to support" { on chat.created then assign department "support" }
disable default.subscribe_operators
'''


@pytest.mark.parametrize("backend", ["postgresql"])  # processes share a database on PostgreSQL
def test_workers_picking_at_once_keep_the_fair_limit_together(api, runtime, app, clock):
    """Four workers (each its own Runtime and connection pool, as `chatflow worker`
    processes are) run the rules of 40 new chats at once: the two agents get 3 each in
    the window, never more, however the picks interleave."""
    api.agents(("pat", {"departments": ["support"]}), ("sue", {"departments": ["support"]}))
    upload(api, LIMITED)
    held = []
    runtime.dispatch = held.extend  # the web process only commits (scaled mode)
    for i in range(40):
        api.start_chat(f"Hi {i}")
    assert len(held) == 40
    workers = [Runtime(S.make_db(app.config["DATABASE_URL"]), clock=clock) for _ in range(4)]
    for w in workers:
        w.dispatch = lambda ids: None
    barrier = threading.Barrier(len(workers))
    errors = []

    def work(w, ids):
        try:
            barrier.wait()
            for cid in ids:  # one chat per transaction: the most interleaving
                w.process_pending(cid)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w, held[i::4])) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for w in workers:
        w.db.dispose()
    assert not errors, errors
    with runtime.db.connect() as conn:
        rows = conn.execute(select(S.chats.c.assignee, func.count()).group_by(S.chats.c.assignee)).all()
        left = conn.execute(select(func.count()).where(S.events.c.processed_at.is_(None))).scalar()
    assert dict(rows) == {"pat": 3, "sue": 3, None: 34}
    assert left == 0


@pytest.mark.parametrize("backend", ["postgresql"])
def test_two_agents_online_at_once_share_the_backlog_without_a_chat_twice(api, client, runtime, app, clock):
    """Two web processes take two agents online at the same moment: each waiting chat
    goes to one of them, within each one's capacity."""
    team = api.agents(("sam", {"departments": ["sales"], "status": "offline"}),
                      ("sia", {"departments": ["sales"], "status": "offline"}))
    upload(api, RULES)
    chats = [sales_chat(api, clock) for _ in range(5)]
    from server.app import create_app

    other = create_app({**{k: app.config[k] for k in ("DATABASE_URL", "CLOCK", "SECRET_KEY", "ADMIN_TOKEN")},
                        "DATA_DIR": app.config["DATA_DIR"] + "-other", "TIMERS": False})
    try:
        barrier = threading.Barrier(2)
        results = []

        def online(test_client, who):
            barrier.wait()
            results.append(test_client.patch("/api/me", json={"status": "online"}, headers=team[who]).status_code)

        threads = [threading.Thread(target=online, args=(client, "sam")),
                   threading.Thread(target=online, args=(other.test_client(), "sia"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        other.extensions["chatflow"].db.dispose()
    assert results == [200, 200]
    got = [chat_fields(runtime, c)[0] for c in chats]
    assert got.count("sam") == 2 and got.count("sia") == 2 and got.count(None) == 1, got
    assert got[4] is None  # the one that waited least


def test_an_agents_own_capacity_per_channel(api, client, runtime, clock):
    r = client.post("/api/admin/agents", json={"id": "x", "capacity": {"sms": 3}}, headers=api.admin)
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request", r.get_json()
    r = client.post("/api/admin/agents", json={"id": "x", "capacity": {"email": -1}}, headers=api.admin)
    assert r.status_code == 400, r.get_json()
    api.agents(("pat", {"departments": ["support"], "capacity": {"widget": 1}}))
    listed = client.get("/api/admin/agents", headers=api.admin).get_json()["agents"]
    assert [a["capacity"] for a in listed if a["id"] == "pat"] == [{"widget": 1}]
    upload(api, RULES)
    picked = []
    for _ in range(2):
        cid, _ = api.start_chat("Hi", page_url="https://shop.example/support")
        picked.append(chat_fields(runtime, cid)[0])
    assert picked == ["pat", None]  # its own widget 1, not the rule set's 2


def test_a_batch_hands_a_chat_it_holds_to_an_agent_it_frees(api, runtime, clock):
    """A worker's batch holds both a new chat (it joins the sales queue when its rules
    run) and the close of another: the closing agent takes the new chat, whichever of
    the two ids sorts first, as the simulator would (events run in commit order)."""
    team = api.agents(("sam", {"departments": ["sales"], "status": "offline"}))
    upload(api, RULES)
    first = [sales_chat(api, clock) for _ in range(2)]
    status(api, team["sam"], "online")
    assert [chat_fields(runtime, c)[0] for c in first] == ["sam", "sam"]
    clock.advance(600)
    held = []
    runtime.dispatch = held.extend  # the web process commits; a worker runs the rules later
    new = sales_chat(api, clock)
    api.post(f"/api/chats/{first[0]}/close", team["sam"], status=200)
    assert chat_fields(runtime, new) == (None, None, "open")  # its rules have not run yet
    del runtime.dispatch
    runtime.process_chats(held)
    assert chat_fields(runtime, new) == ("sam", "sales", "open")
    assert ("assigned" in api.templates(team["sam"], new))
