"""Group commit: chat commands that arrive together share one transaction, and each
still gets its own answer, its own refusal, and its place in the chat's order."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from engine.model import CommandRefused
from server import store as S
from server.group_commit import GroupCommit
from server.runtime import _Command


# ---------------------------------------------------------------- the leader/follower queue

def test_commands_waiting_while_a_batch_runs_go_together_in_the_next():
    first_started, release = threading.Event(), threading.Event()
    batches = []

    def run_batch(items):
        batches.append(list(items))
        if items == [0]:
            first_started.set()
            assert release.wait(10)
        return [f"done {i}" for i in items]

    group = GroupCommit(run_batch)
    results = {}

    def submit(i):
        results[i] = group.submit(i)

    threads = [threading.Thread(target=submit, args=(0,))]
    threads[0].start()
    assert first_started.wait(10)
    for i in range(1, 9):  # all queued while batch [0] is running
        t = threading.Thread(target=submit, args=(i,))
        t.start()
        threads.append(t)
    while len(group._queue) < 8:
        threading.Event().wait(0.001)
    release.set()
    for t in threads:
        t.join(10)
    assert results == {i: f"done {i}" for i in range(9)}
    assert batches[0] == [0]
    assert sorted(batches[1]) == list(range(1, 9)) and len(batches) == 2


def test_each_caller_gets_its_own_exception_and_a_broken_batch_reaches_all():
    def run_batch(items):
        if "crash" in items:
            raise RuntimeError("batch broke")
        return [ValueError(i) if i.startswith("bad") else i.upper() for i in items]

    group = GroupCommit(run_batch)
    assert group.submit("ok") == "OK"
    with pytest.raises(ValueError, match="bad1"):
        group.submit("bad1")
    with pytest.raises(RuntimeError, match="batch broke"):
        group.submit("crash")
    assert group.submit("again") == "AGAIN"  # the queue is not stuck after a failure


def test_a_batch_takes_at_most_max_batch_items():
    sizes, gate = [], threading.Event()

    def run_batch(items):
        sizes.append(len(items))
        gate.wait(10)
        return items

    group = GroupCommit(run_batch, max_batch=3)
    threads = [threading.Thread(target=group.submit, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert sum(sizes) == 10 and max(sizes) <= 3


# ---------------------------------------------------------------- the runtime's batches

def _texts(runtime, chat_id):
    return [m.text for m in runtime.load_chat(chat_id).messages]


def _events(runtime, chat_id):
    with runtime.db.connect() as conn:
        return conn.execute(select(S.events.c.id, S.events.c.type).where(S.events.c.chat_id == chat_id)
                            .order_by(S.events.c.seq)).all()


def test_one_transaction_applies_each_command_on_what_the_ones_before_left(api, runtime, caplog):
    a, a_cust = api.start_chat("first")
    b, b_cust = api.start_chat("other")
    hash_a = S.token_hash(a_cust["Authorization"].split()[1])
    hash_b = S.token_hash(b_cust["Authorization"].split()[1])
    events_b = _events(runtime, b)
    cmds = [
        _Command("customer_message", a, hash_a, {"text": "second", "via": "widget"}),
        _Command("customer_message", b, hash_a, {"text": "forged", "via": "widget"}),  # a's token on b
        _Command("customer_message", a, hash_a, {"text": "third", "via": "widget"}),
        _Command("customer_message", a, hash_a, {"text": "bad", "via": "pigeon"}),  # refused by the engine
        _Command("customer_message", "c_nope", None, {"text": "x", "via": "widget"}),
        _Command("customer_leaves", b, hash_b, {}),
    ]
    out = runtime._run_commands(cmds)
    assert "one by one" not in caplog.text  # one transaction, not the fallback
    assert [type(o).__name__ for o in out] == ["tuple", "CommandRefused", "tuple", "CommandRefused",
                                               "CommandRefused", "tuple"]
    assert [o.code for o in out if isinstance(o, CommandRefused)] == ["unknown_chat", "bad_request", "unknown_chat"]
    assert _texts(runtime, a)[-3:] == ["first", "second", "third"]
    assert _texts(runtime, b) == ["other"]  # the forged message left no trace
    # each command's answer is the chat as that command left it
    assert [m.text for m in out[0][1].messages][-1] == "second"
    assert [m.text for m in out[2][1].messages][-1] == "third"
    # events in command order, with distinct ids continuing the chat's sequence
    ids = [e.id for e in _events(runtime, a)]
    assert len(ids) == len(set(ids))
    created = [t for _, t in _events(runtime, a)].count("message.created")
    assert created == 2  # "first" came with chat.started
    assert [t for _, t in _events(runtime, b)] == [t for _, t in events_b] + ["customer.left"]


def test_a_failing_transaction_is_retried_command_by_command(api, runtime, monkeypatch):
    a, a_cust = api.start_chat("first")
    b, b_cust = api.start_chat("other")
    real = runtime._apply_commands
    calls = []

    def flaky(conn, cmds):
        calls.append(len(cmds))
        if len(cmds) > 1:
            raise RuntimeError("a constraint broke")
        return real(conn, cmds)

    monkeypatch.setattr(runtime, "_apply_commands", flaky)
    hash_a = S.token_hash(a_cust["Authorization"].split()[1])
    hash_b = S.token_hash(b_cust["Authorization"].split()[1])
    out = runtime._run_commands([_Command("customer_message", a, hash_a, {"text": "to a", "via": "widget"}),
                                 _Command("customer_message", b, hash_b, {"text": "to b", "via": "widget"})])
    assert calls == [2, 1, 1]
    assert all(isinstance(o, tuple) for o in out)
    assert _texts(runtime, a)[-1] == "to a" and _texts(runtime, b)[-1] == "to b"


@pytest.mark.parametrize("backend", ["postgresql"])
def test_concurrent_customers_through_http_share_transactions(app, runtime, monkeypatch):
    """Eight customers post at once while a transaction is held open: their messages go in
    one group, every one is stored once, and each gets its own 201."""
    assert runtime._group is not None
    clients = [app.test_client() for _ in range(9)]
    chats = []
    for c in clients:
        data = c.post("/api/widget/chats", json={"text": "hi"}).get_json()
        chats.append((data["chat"]["id"], {"Authorization": f"Bearer {data['token']}"}))
    sizes, hold, held = [], threading.Event(), threading.Event()
    real = runtime._run_commands

    def run_commands(cmds, single=False):
        sizes.append(len(cmds))
        if len(sizes) == 1:
            held.set()
            assert hold.wait(10)
        return real(cmds, single)

    monkeypatch.setattr(runtime._group, "run_batch", run_commands)
    statuses = {}

    def send(i):
        cid, headers = chats[i]
        r = clients[i].post(f"/api/widget/chats/{cid}/messages", json={"text": f"message {i}"}, headers=headers)
        statuses[i] = (r.status_code, r.get_json()["messages"][-1]["text"])

    threads = [threading.Thread(target=send, args=(0,))]
    threads[0].start()
    assert held.wait(10)
    for i in range(1, 9):
        threads.append(threading.Thread(target=send, args=(i,)))
        threads[-1].start()
    while len(runtime._group._queue) < 8:
        threading.Event().wait(0.001)
    hold.set()
    for t in threads:
        t.join(20)
    assert statuses == {i: (201, f"message {i}") for i in range(9)}
    assert sizes == [1, 8]
    for i, (cid, _) in enumerate(chats):
        assert _texts(runtime, cid) == ["hi", f"message {i}"]
