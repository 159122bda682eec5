"""Scaled mode end to end on real PostgreSQL and Redis: the web process commits commands
to the outbox, RQ workers run the rules, the scheduler claims deadlines with a lease and
relays what the web could not enqueue."""
from __future__ import annotations

import json
import secrets
import time

import pytest
from sqlalchemy import select

from server import jobs
from server import store as S
from server.app import create_app
from server.scheduler import Scheduler

from scaled_mode import T0, work


@pytest.fixture
def scaled(start_scaled, clock):
    s = start_scaled()
    return s.app, s.runtime, s.worker_runtime, s.queue, clock


def _agent(client, agent_id):
    r = client.post("/api/admin/agents", json={"id": agent_id}, headers={"Authorization": "Bearer admintok"})
    assert r.status_code == 201, r.json
    return {"Authorization": "Bearer " + r.json["token"]}


def _unprocessed(runtime):
    with runtime.db.connect() as conn:
        return conn.execute(select(S.events.c.type).where(S.events.c.processed_at.is_(None))).scalars().all()


def _notes(runtime, agent):
    with runtime.db.connect() as conn:
        return conn.execute(select(S.notifications.c.template).where(S.notifications.c.agent_id == agent)
                            .order_by(S.notifications.c.id)).scalars().all()


def test_workers_run_the_rules_the_web_only_commits(scaled):
    app, runtime, _, queue, clock = scaled
    c = app.test_client()
    alice = _agent(c, "alice")
    r = c.post("/api/widget/chats", json={"text": "Hi", "customer": {"name": "Ann"}})
    assert r.status_code == 201
    chat_id = r.json["chat"]["id"]
    assert _unprocessed(runtime) == ["chat.created"]  # committed, not yet evaluated
    jobs.flush_dispatchers()  # the web hands chats to the queue in the background
    assert len(queue) == 1
    work(queue)
    assert _unprocessed(runtime) == []
    assert _notes(runtime, "alice") == ["new_chat"]
    assert c.post(f"/api/chats/{chat_id}/join", headers=alice).status_code == 200
    work(queue)
    # nobody reads the customer for 10 minutes: the scheduler hands the deadline out
    sched = Scheduler(runtime, queue, clock)
    clock.now = T0 + 599
    assert sched.tick() == (0, 0)
    clock.now = T0 + 600
    assert sched.tick()[0] == 1
    work(queue)
    assert _notes(runtime, "alice") == ["new_chat", "unread_messages"]
    clock.now = T0 + 700
    assert sched.tick() == (0, 0)  # fired once; no deadline left for it


def test_a_claimed_deadline_is_leased_and_reclaimed_after_a_crash(scaled):
    app, runtime, _, queue, clock = scaled
    c = app.test_client()
    carol = _agent(c, "carol")
    chat_id = c.post("/api/widget/chats", json={"text": "Hi"}).json["chat"]["id"]
    clock.now = T0 + 1
    c.post(f"/api/chats/{chat_id}/join", headers=carol)  # carol never reads: escalation at +10m
    work(queue)
    sched = Scheduler(runtime, queue, clock)
    clock.now = T0 + 601
    first = sched.claim_due(clock.now)
    assert first == [chat_id]
    assert sched.claim_due(clock.now) == []  # leased: a second scheduler round leaves it
    # the worker that took it died: nothing ran; after the lease the deadline is claimed again
    clock.now = T0 + 601 + 61
    assert sched.claim_due(clock.now) == [chat_id]
    jobs.run_due_chats([chat_id], clock.now)
    assert _notes(runtime, "carol")[-1] == "unread_messages"
    jobs.run_due_chats([chat_id], clock.now)  # redelivered job: no second notification
    assert _notes(runtime, "carol").count("unread_messages") == 1


def test_events_the_web_could_not_enqueue_are_relayed(scaled, pg_url):
    app, runtime, _, queue, clock = scaled
    c = app.test_client()
    _agent(c, "alice")
    # Redis unreachable for the web process: the command still commits to the outbox
    runtime.dispatch = jobs.enqueue_dispatch(jobs.make_queue({"REDIS_URL": "redis://127.0.0.1:1/0"}))
    r = c.post("/api/widget/chats", json={"text": "Hi"})
    assert r.status_code == 201
    assert _unprocessed(runtime) == ["chat.created"]
    assert len(queue) == 0
    sched = Scheduler(runtime, queue, clock)
    assert sched.tick() == (0, 0)  # too fresh: the web may still enqueue it
    clock.now += 3
    assert sched.tick() == (0, 1)
    work(queue)
    assert _unprocessed(runtime) == []
    assert _notes(runtime, "alice") == ["new_chat"]


def test_the_web_dispatcher_batches_chats_that_arrive_while_it_enqueues(redis_url):
    """Commands hand chat ids over and answer; ids arriving while a job is being enqueued
    share the next job, each id reaches a job, and flush() waits for all of them."""
    import threading

    queue = jobs.make_queue({"REDIS_URL": redis_url, "QUEUE": f"chatflow-test-{secrets.token_hex(4)}"})
    first_enqueue = threading.Event()
    release = threading.Event()

    class SlowFirst:  # the real queue, with its first enqueue held until released
        connection, key = queue.connection, queue.key

        def __init__(self):
            self.calls = 0

        def enqueue(self, *args, **kwargs):
            self.calls += 1
            if self.calls == 1:
                first_enqueue.set()
                release.wait(10)
            return queue.enqueue(*args, **kwargs)

    dispatcher = jobs.Dispatcher(SlowFirst(), max_batch=50)
    try:
        dispatcher(["c_first"])
        assert first_enqueue.wait(10)
        for i in range(120):  # all arrive while the first job is being enqueued
            dispatcher([f"c_{i:03d}"])
        dispatcher(["c_005", "c_006"])  # a chat already waiting is not added twice
        release.set()
        assert dispatcher.flush(10)
        batches = [job.args[0] for job in queue.get_jobs()]
        assert batches[0] == ["c_first"]
        assert [len(b) for b in batches[1:]] == [50, 50, 20]
        assert sorted(c for b in batches[1:] for c in b) == [f"c_{i:03d}" for i in range(120)]
    finally:
        release.set()
        queue.delete(delete_jobs=True)


def test_the_web_dispatcher_lets_a_batch_grow_while_the_workers_are_behind(redis_url):
    """With a job already waiting in the queue, ids handed over one by one go out as one
    job (up to max_batch, or after max_wait), not as one job each."""
    import threading
    import time

    queue = jobs.make_queue({"REDIS_URL": redis_url, "QUEUE": f"chatflow-test-{secrets.token_hex(4)}"})
    try:
        queue.enqueue("server.jobs.process_chats", ["c_waiting"])  # no worker runs: it stays
        dispatcher = jobs.Dispatcher(queue, max_batch=30, max_wait=5.0, poll=0.005)

        def commands():
            for i in range(30):
                dispatcher([f"c_{i:02d}"])
                time.sleep(0.002)

        t = threading.Thread(target=commands)
        t.start()
        t.join()
        assert dispatcher.flush(10)
        batches = [job.args[0] for job in queue.get_jobs()]
        assert batches == [["c_waiting"], [f"c_{i:02d}" for i in range(30)]]

        queue.empty()  # the workers caught up: the next command goes out at once
        t0 = time.monotonic()
        dispatcher(["c_alone"])
        assert dispatcher.flush(10) and time.monotonic() - t0 < 1.0
        assert [job.args[0] for job in queue.get_jobs()] == [["c_alone"]]
    finally:
        queue.delete(delete_jobs=True)


def test_rate_limits_are_counted_in_redis_across_web_processes(pg_url, redis_url, tmp_path):
    """Two web processes of one installation share the widget limits (kept in Redis,
    under the installation's queue name); the refusal is a 429 with Retry-After."""
    config = {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, "QUEUE": f"chatflow-test-{secrets.token_hex(4)}",
              "ADMIN_TOKEN": "admintok", "RATE_LIMITS": {"start_chat": "3/minute"}}
    apps = [create_app({**config, "DATA_DIR": str(tmp_path / name)}) for name in ("web1", "web2")]
    try:
        one, two = (a.test_client() for a in apps)
        addr = {"environ_base": {"REMOTE_ADDR": "10.9.9.9"}}
        got = [c.post("/api/widget/chats", json={"text": "Hi"}, **addr).status_code for c in (one, one, two)]
        assert got == [201, 201, 201]
        r = two.post("/api/widget/chats", json={"text": "Hi"}, **addr)
        assert (r.status_code, r.get_json()["error"]) == (429, "rate_limited") and int(r.headers["Retry-After"]) >= 1
        assert one.post("/api/widget/chats", json={"text": "Hi"}, environ_base={"REMOTE_ADDR": "10.9.9.8"}).status_code == 201
    finally:
        for a in apps:
            a.extensions["chatflow_stop"].set()
            jobs.flush_dispatchers()
            a.extensions["chatflow"].db.dispose()
        jobs.make_queue(config).delete(delete_jobs=True)


def test_a_worker_batch_wakes_the_live_streams_with_one_message(scaled, redis_url):
    """Processing many chats publishes one Redis message for the batch, each signal in it
    once (a chat's several notifications of one agent wake that agent's stream once)."""
    app, runtime, worker_runtime, queue, clock = scaled
    c = app.test_client()
    _agent(c, "alice")
    _agent(c, "bob")
    runtime.dispatch = lambda ids: None  # held: the worker takes them in one batch below
    chats = []
    for i in range(3):
        r = c.post("/api/widget/chats", json={"text": f"Hi {i}"})
        chats.append(r.json["chat"]["id"])
        token = {"Authorization": "Bearer " + r.json["token"]}
        assert c.post(f"/api/widget/chats/{chats[-1]}/messages", json={"text": "hello?"}, headers=token).status_code == 201
    redis = jobs.make_redis(redis_url)
    channel = jobs.live_channel(app.config)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    worker_runtime.listeners.append(jobs.redis_publisher(redis, channel))
    try:
        assert worker_runtime.process_chats(chats) == 6
        messages = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(messages) < 2:
            msg = pubsub.get_message(timeout=0.2)
            if msg:
                messages.append(json.loads(msg["data"]))
        assert len(messages) == 1, messages
        signals = [tuple(sorted(p.items())) + (k,) for k, p in messages[0]["signals"]]
        assert len(signals) == len(set(signals)) == 3 * 2 + 3  # alice and bob of each chat, each chat
    finally:
        worker_runtime.listeners.pop()
        pubsub.close()


def test_the_web_dispatcher_lingers_so_chats_arriving_together_share_a_job(redis_url):
    """With ``linger``, the first id waits that long for others even when the workers keep
    up: three commands 30 ms apart go out as one job, and a lone one after the linger."""
    import time

    queue = jobs.make_queue({"REDIS_URL": redis_url, "QUEUE": f"chatflow-test-{secrets.token_hex(4)}"})
    try:
        dispatcher = jobs.Dispatcher(queue, linger=0.3, poll=0.005)
        t0 = time.monotonic()
        for cid in ("c_1", "c_2", "c_3"):
            dispatcher([cid])
            time.sleep(0.03)
        assert dispatcher.flush(10)
        waited = time.monotonic() - t0
        assert [job.args[0] for job in queue.get_jobs()] == [["c_1", "c_2", "c_3"]]
        assert 0.25 < waited < 2.0  # it did linger, and not for long

        no_linger = jobs.Dispatcher(queue, poll=0.005)
        queue.empty()
        for cid in ("c_4", "c_5"):
            no_linger([cid])
            time.sleep(0.05)
        assert no_linger.flush(10)
        assert [job.args[0] for job in queue.get_jobs()] == [["c_4"], ["c_5"]]
    finally:
        queue.delete(delete_jobs=True)
