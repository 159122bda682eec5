"""SPEC §5: "a Redis outage loses no event and repeats no effect".

The tests' own ``redis-server`` is killed while customers keep sending messages for
30 s (10 s by default; CHATFLOW_FULL_FAULTS=1 for 30 s), then started again, empty, as a
restarted Redis without persistence would be. Commands keep committing to the outbox
meanwhile; the scheduler relays what was never enqueued.

``chatflow worker`` lives through the outage (the second test): RQ's work loop ends
with Redis's ConnectionError, and the worker waits and starts a new one (it was found
exiting, and fixed). The first test still restarts a worker that died, as a process
supervisor would, and checks that nothing was lost or repeated. It runs with the rate
limits off (all its customers share one address); with them on, customers are answered
while Redis is away (the third test: the limiter let its ConnectionError through as a
500, and now lets the request through and logs it).
"""
from __future__ import annotations

import time

from sqlalchemy import text

from scaled_service import FULL
from scaled_service import ADMIN, Http, wait_until
from workload import run_under_fault

OUTAGE, RATE = (30.0, 30.0) if FULL else (10.0, 30.0)
MESSAGES = int((OUTAGE + 12) * RATE) // 10 * 10


def test_a_redis_outage_while_messages_arrive_loses_nothing_and_repeats_nothing(service, smtp, own_redis):
    during = {}

    def outage(load):
        time.sleep(4)
        own_redis.stop()
        sent = load.sent
        time.sleep(OUTAGE)
        during["messages sent while Redis was down"] = load.sent - sent
        own_redis.start()
        dead = [name for name, p in service.procs.items() if name.startswith("worker") and p.poll() is not None]
        during["workers that exited"] = dead
        for i, name in enumerate(dead):  # the supervisor's part
            service.procs.pop(name)
            service.worker(f"worker{2 + i}")

    load, found, figures = run_under_fault(service, smtp, MESSAGES, RATE, outage, settle_seconds=150)
    print(f"redis outage {OUTAGE:.0f} s: {during} {figures}")
    assert during["messages sent while Redis was down"] >= OUTAGE * RATE * 0.5
    assert load.errors == []
    assert not found, "\n".join(found)
    assert figures["dead processes"] == []  # web and scheduler lived through it


def test_a_worker_lives_through_a_redis_outage_that_starts_during_a_job(service, own_redis):
    """Deterministic: the worker's job waits on a chat row this test has locked; Redis
    goes away; the lock is released, the job ends; Redis comes back."""
    port = service.web()
    c = Http(port)
    try:
        assert c.call("POST", "/api/admin/agents", {"id": "alice"}, ADMIN)[0] == 201
        status, body = c.call("POST", "/api/widget/chats", {"text": "hello"})
        assert status == 201
        chat_id = body["chat"]["id"]
    finally:
        c.close()
    with service.db().connect() as lock:
        tx = lock.begin()
        lock.execute(text("SELECT id FROM chats WHERE id = :c FOR UPDATE"), {"c": chat_id})
        worker = service.worker("worker0")
        wait_until(service.busy_worker, 30, "the worker to take the job")
        own_redis.stop()
        tx.rollback()
    wait_until(lambda: not service.scalar("SELECT count(*) FROM events WHERE processed_at IS NULL"), 30,
               "the job to end")
    time.sleep(2)
    own_redis.start()
    time.sleep(3)
    assert worker.poll() is None, "the worker exited:\n" + service.log_tail("worker0", 5)


def test_customers_are_answered_while_redis_is_away_with_the_rate_limits_on(own_redis, smtp):
    from scaled_service import Service

    service = Service(own_redis.url, smtp.url, rate_limits="")  # "": the defaults
    try:
        service.prepare()
        port = service.web()
        c = Http(port)
        try:
            status, body = c.call("POST", "/api/widget/chats", {"text": "hello"})
            assert status == 201
            chat_id, token = body["chat"]["id"], {"Authorization": "Bearer " + body["token"]}
            own_redis.stop()
            try:
                status, body = c.call("POST", f"/api/widget/chats/{chat_id}/messages", {"text": "still there?"},
                                      token)
            finally:
                own_redis.start()
        finally:
            c.close()
        assert (status, body.get("error")) == (201, None), body
    finally:
        service.close()
