"""Scaled mode: RQ jobs that run the rules for chats, and the Redis plumbing around them.

Jobs are referenced by import path with JSON arguments (chat ids), so any worker on any
host runs them. A job processes every unprocessed event of each chat it names, in order,
under the chat's row lock; running the same job twice is harmless (the second finds
nothing new), which is what makes redelivery after a killed worker safe.
"""
from __future__ import annotations

import json
import logging
import threading

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

def process_chats(chat_ids: list) -> int:
    """Run the rules on the new events of these chats; returns how many events."""
    total = _runtime.process_chats(chat_ids)
    _runtime.after_change()
    return total


def run_due_chats(chat_ids: list, now: float) -> int:
    """Fire the deadlines due by ``now`` of these chats (claimed by the scheduler)."""
    n = _runtime.run_due(now, chat_ids=chat_ids)
    _runtime.after_change()
    return n


# ---------------------------------------------------------------- the web side

def enqueue_dispatch(queue):
    """A Runtime.dispatch that hands chats to the workers. If Redis is down the events
    stay in the outbox and the scheduler relays them when it is back."""

    def dispatch(chat_ids):
        if not chat_ids:
            return
        try:
            queue.enqueue("server.jobs.process_chats", list(chat_ids), job_timeout=120, result_ttl=60,
                          failure_ttl=86400)
        except Exception as e:  # Redis unreachable: the outbox keeps the events
            log.warning("enqueue failed (%s); the scheduler will relay %s", type(e).__name__, chat_ids)
    return dispatch


def redis_publisher(redis, channel: str):
    """A Runtime listener that fans wake-ups out to every web process over Redis."""

    def publish(kind, payload):
        try:
            redis.publish(channel, json.dumps({"kind": kind, "payload": payload}))
        except Exception as e:  # streams catch up from the database on their next wake-up
            log.warning("live publish failed: %s", type(e).__name__)
    return publish


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
                        broker.listener(data["kind"], data["payload"])
            except Exception as e:
                log.warning("live subscription lost (%s); retrying", type(e).__name__)
                stop.wait(1.0)

    t = threading.Thread(target=loop, name="chatflow-live", daemon=True)
    t.start()
    return t
