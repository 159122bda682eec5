"""Scaled mode: RQ jobs that run the rules for chats, and the Redis plumbing around them.

Jobs are referenced by import path with JSON arguments (chat ids), so any worker on any
host runs them. A job processes every unprocessed event of each chat it names, in order,
under the chat's row lock; running the same job twice is harmless (the second finds
nothing new), which is what makes redelivery after a killed worker safe.
"""
from __future__ import annotations

import atexit
import contextlib
import gc
import json
import logging
import threading
import time
import weakref

log = logging.getLogger("chatflow.jobs")

QUEUE = "chatflow"


def live_channel(settings: dict) -> str:
    """The Redis pub/sub channel of one installation's live wake-ups (named after its queue,
    so two installations on one Redis do not wake each other's streams)."""
    return f"{settings.get('QUEUE', QUEUE)}:live"

_runtime = None  # the worker process's Runtime, set by `chatflow worker`


def set_runtime(runtime) -> None:
    global _runtime
    _runtime = runtime


def make_redis(url: str):
    from redis import Redis

    return Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


def make_queue(settings: dict, connection=None):
    """The RQ queue jobs go to (JSON-serialised, so no pickles cross the wire)."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    conn = connection or make_redis(settings["REDIS_URL"])
    return Queue(settings.get("QUEUE", QUEUE), connection=conn, serializer=JSONSerializer)


# ---------------------------------------------------------------- jobs (run by workers)

@contextlib.contextmanager
def _collector_paused():
    """The cyclic garbage collector off for one job. A batch keeps its chats' worlds alive
    until it ends (most of what it allocates), so a collection in the middle scans them and
    keeps them: measured, a fifth of a worker's CPU per event. What the batch leaves behind
    goes by reference counting at its end; the few cycles wait for the next collection,
    which the allocations after the job set off as usual. A worker runs one job at a time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def process_chats(chat_ids: list) -> int:
    """Run the rules on the new events of these chats; returns how many events."""
    with _collector_paused():
        total = _runtime.process_chats(chat_ids)
    _runtime.after_change()
    return total


def run_due_chats(chat_ids: list, now: float) -> int:
    """Fire the deadlines due by ``now`` of these chats (claimed by the scheduler)."""
    with _collector_paused():
        n = _runtime.run_due(now, chat_ids=chat_ids)
    _runtime.after_change()
    return n


def deliver_webhooks() -> int:
    """Post the webhook deliveries due now (each claimed by its row's lease); returns how
    many were attempted. Runs on the webhooks queue, so a slow receiver holds back no
    rule job."""
    from .webhooks import deliver_due

    return deliver_due(_runtime.db, _runtime.settings, _runtime.clock)


def send_agent_emails() -> int:
    """Collect and send the agents' batched notification emails whose window has ended
    (enqueued by the scheduler)."""
    _runtime._agent_mail_next = 0.0  # the scheduler saw one due: look, whatever this process thought
    return _runtime.send_agent_mail()


def webhook_queue(settings: dict, connection=None):
    """The queue of webhook deliveries: beside the rules' queue, which workers take first."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    conn = connection or make_redis(settings["REDIS_URL"])
    return Queue(f"{settings.get('QUEUE', QUEUE)}-webhooks", connection=conn, serializer=JSONSerializer)


def hand_webhooks_to(runtime, queue) -> None:
    """A worker's runtime enqueues a delivery job after storing webhook deliveries."""
    runtime.webhooks_stored = lambda: enqueue_webhooks(queue)


def enqueue_webhooks(queue) -> None:
    """One delivery job (the rows wait in the database: if Redis is down the scheduler
    enqueues one when they are due)."""
    try:
        queue.enqueue("server.jobs.deliver_webhooks", job_timeout=600, result_ttl=60, failure_ttl=86400)
    except Exception as e:
        log.warning("webhook enqueue failed (%s); the scheduler will hand them over", type(e).__name__)


# ---------------------------------------------------------------- the web side

def enqueue_dispatch(queue, batching: bool = True, linger: float = 0.0):
    """A Runtime.dispatch that hands chats to the workers: a :class:`Dispatcher`, or with
    ``batching=False`` one job per command, enqueued before the request answers."""
    if batching:
        return Dispatcher(queue, linger=linger)

    def dispatch(chat_ids):
        if chat_ids:
            _enqueue(queue, chat_ids)
    return dispatch


def _enqueue(queue, chat_ids) -> None:
    """One job for these chats. If Redis is down the events stay in the outbox and the
    scheduler relays them when it is back."""
    try:
        queue.enqueue("server.jobs.process_chats", sorted(chat_ids), job_timeout=120, result_ttl=60,
                      failure_ttl=86400)
    except Exception as e:
        log.warning("enqueue failed (%s); the scheduler will relay %s", type(e).__name__, sorted(chat_ids))


class Dispatcher:
    """Hands chats to the workers in batches. A command puts its chat ids here and
    answers; one thread enqueues a job with the ids waiting (at most ``max_batch``).
    The first id of a batch waits ``linger`` seconds for others (Kafka's ``linger.ms``):
    a job costs a worker about a millisecond of RQ bookkeeping whatever its size, so at
    1,000 messages a second 20 ms make jobs of ~10 chats instead of 1 (measured: worker CPU
    per message 2.8 → 1.2–1.7 ms) for 20 ms more latency. When the workers fall behind (a
    job already waits in the queue), the thread lets the batch grow for up to
    ``max_wait`` seconds more: the job would wait anyway. Requests never wait on Redis.
    Ids lost with the process are in the outbox: the scheduler relays them."""

    def __init__(self, queue, max_batch: int = 100, max_wait: float = 0.1, poll: float = 0.01,
                 linger: float = 0.0):
        self.queue, self.max_batch, self.max_wait, self.poll = queue, max_batch, max_wait, poll
        self.linger = linger
        self._waiting: dict = {}  # chat id -> None, in arrival order
        self._busy = False
        self._cond = threading.Condition()
        self._thread = None
        _DISPATCHERS.add(self)

    def __call__(self, chat_ids) -> None:
        if not chat_ids:
            return
        with self._cond:
            for cid in chat_ids:
                self._waiting[cid] = None
            if self._thread is None or not self._thread.is_alive():  # started lazily: after a fork
                self._thread = threading.Thread(target=self._loop, name="chatflow-dispatch", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def workers_behind(self) -> bool:
        """Whether a job is waiting in the queue (no worker free to take it)."""
        try:
            return self.queue.connection.llen(self.queue.key) > 0
        except Exception:  # Redis away: enqueue will say so; nothing to wait for
            return False

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._busy = False
                    self._cond.notify_all()
                    self._cond.wait()
                self._busy = True
            linger_until = time.monotonic() + self.linger
            while len(self._waiting) < self.max_batch and time.monotonic() < linger_until:
                time.sleep(min(self.poll, self.linger))
            until = time.monotonic() + self.max_wait
            while len(self._waiting) < self.max_batch and time.monotonic() < until and self.workers_behind():
                time.sleep(self.poll)
            with self._cond:
                batch = list(self._waiting)[:self.max_batch]
                for cid in batch:
                    del self._waiting[cid]
            _enqueue(self.queue, batch)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every id handed over has been enqueued; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting and not self._busy, timeout)


_DISPATCHERS: "weakref.WeakSet[Dispatcher]" = weakref.WeakSet()


def flush_dispatchers(timeout: float = 10.0) -> None:
    """Enqueue what every dispatcher of this process holds (tests; a stopping process)."""
    for d in list(_DISPATCHERS):
        d.flush(timeout)


atexit.register(flush_dispatchers, 5.0)


def redis_publisher(redis, channel: str):
    """A Runtime listener that fans wake-ups out to every web process over Redis: one
    message per committed batch (``{"signals": [[kind, payload], …]}``)."""

    class Publisher:
        def __call__(self, kind, payload):
            self.many([(kind, payload)])

        def many(self, signals):
            if not signals:
                return
            try:
                redis.publish(channel, json.dumps({"signals": [[k, p] for k, p in signals]}))
            except Exception as e:  # streams catch up from the database on their next wake-up
                log.warning("live publish failed: %s", type(e).__name__)

    return Publisher()


def start_redis_subscriber(redis, broker, stop: threading.Event, channel: str) -> threading.Thread:
    """Forward Redis wake-ups to this web process's broker (reconnecting on failure)."""

    def loop():
        while not stop.is_set():
            try:
                pubsub = redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                while not stop.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg and msg.get("type") == "message":
                        data = json.loads(msg["data"])
                        for kind, payload in data.get("signals") or [(data["kind"], data["payload"])]:
                            broker.listener(kind, payload)
            except Exception as e:
                log.warning("live subscription lost (%s); retrying", type(e).__name__)
                stop.wait(1.0)

    t = threading.Thread(target=loop, name="chatflow-live", daemon=True)
    t.start()
    return t
