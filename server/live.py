"""Live streams over Server-Sent Events: an agent's notifications and a customer's chat.

The database is the source of truth; the broker only wakes streams up. On a wake-up (or
a reconnect with ``Last-Event-ID``) a stream reads what is newer than what it already
sent, so a missed wake-up delays an event but never loses it, and a customer's stream is
built from the customer view only: a note can never be in it.
"""
from __future__ import annotations

import json
import queue
import threading
import time

from flask import Blueprint, Response, current_app, request, stream_with_context
from sqlalchemy import select

from engine.commands import customer_view
from engine.snapshot import chat_from_dict

from . import store as S
from .http import current_agent, customer_chat, id_param
from .views import customer_message, public_ranks

bp = Blueprint("live", __name__)

KEEPALIVE_SECONDS = 15


class Broker:
    """In-process fan-out of wake-ups to the streams waiting on a channel."""

    def __init__(self):
        self._lock = threading.Lock()
        self._subs: dict[str, set] = {}

    def subscribe(self, channel: str) -> queue.Queue:
        q: queue.Queue = queue.Queue(maxsize=100)
        with self._lock:
            self._subs.setdefault(channel, set()).add(q)
        return q

    def unsubscribe(self, channel: str, q) -> None:
        with self._lock:
            subs = self._subs.get(channel)
            if subs:
                subs.discard(q)
                if not subs:
                    del self._subs[channel]

    def publish(self, channel: str) -> None:
        with self._lock:
            targets = list(self._subs.get(channel, ()))
        for q in targets:
            try:
                q.put_nowait(1)
            except queue.Full:  # it is behind anyway and will read everything new
                pass

    def listener(self, kind: str, payload: dict) -> None:
        """Runtime listener: map committed changes to channels."""
        if kind == "notification":
            self.publish(f"agent:{payload['agent_id']}")
        elif kind == "chat":
            self.publish(f"chat:{payload['chat_id']}")


LATE_COMMIT_SECONDS = 600  # how far back (notification time) a stream looks for rows committed late


def _sse(event_id, event: str, data) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    return id_param(raw, "Last-Event-ID") or 0


def _stream(channel: str, read_new, last: int):
    app = current_app._get_current_object()
    broker: Broker = app.extensions["chatflow_broker"]
    limit = app.config.get("STREAM_SECONDS", 300)

    def generate():
        q = broker.subscribe(channel)
        sent = last
        started = time.monotonic()
        try:
            yield "retry: 2000\n\n"
            while True:
                for event_id, event, data in read_new(sent):
                    # a row committed late is sent with its own id, below the cursor, which stays
                    sent = max(sent, event_id)
                    yield _sse(event_id, event, data)
                left = limit - (time.monotonic() - started)
                if left <= 0:
                    return  # the client reconnects with Last-Event-ID
                try:
                    q.get(timeout=min(KEEPALIVE_SECONDS, left))
                except queue.Empty:
                    yield ": keepalive\n\n"
        finally:
            broker.unsubscribe(channel, q)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream_with_context(generate()), mimetype="text/event-stream", headers=headers)


@bp.get("/api/stream")
def agent_stream():
    me = current_agent()
    db = current_app.extensions["chatflow"].db

    n = S.notifications
    mine = n.c.agent_id == me["id"]
    delivered: dict = {}  # id -> at, of what this stream sent within LATE_COMMIT_SECONDS
    floor = _last_event_id()  # what the client had before this stream (Last-Event-ID): not looked back at

    def read_new(after):
        # Ids are taken when a worker inserts a row, not when it commits: a batch that
        # commits late can make a row below the cursor visible after rows above it were
        # sent. So each wake-up also looks LATE_COMMIT_SECONDS back (by notification time)
        # for rows below the cursor this stream has not sent.
        with db.connect() as conn:
            rows = list(conn.execute(select(n).where(mine & (n.c.id > after)).order_by(n.c.id).limit(500)).mappings())
            if delivered:
                horizon = max(delivered.values()) - LATE_COMMIT_SECONDS
                late = [i for i in conn.execute(select(n.c.id).where(
                        mine & (n.c.id > floor) & (n.c.id < after) & (n.c.at >= horizon)))
                        .scalars() if i not in delivered]
                if late:
                    rows = list(conn.execute(select(n).where(n.c.id.in_(late)).order_by(n.c.id)).mappings()) + rows
                for i in [i for i, at in delivered.items() if at < horizon]:
                    del delivered[i]
        for r in rows:
            delivered[r["id"]] = r["at"]
        return [(r["id"], "notification", {"id": r["id"], "chat_id": r["chat_id"], "template": r["template"],
                                           "text": r["text"], "rule": r["rule"], "at": r["at"]}) for r in rows]

    return _stream(f"agent:{me['id']}", read_new, floor)


@bp.get("/api/widget/chats/<chat_id>/stream")
def customer_stream(chat_id):
    customer_chat(chat_id)
    db = current_app.extensions["chatflow"].db

    shown: dict = {}  # rank -> text of what this stream has sent
    resumed = [_last_event_id() > 0]

    def read_new(after):
        # event ids are public-message ranks (stable, increasing, blind to notes); an edit or a delete of a
        # message already sent re-sends the whole visible list as a `snapshot` event. A reconnect with
        # Last-Event-ID starts with a snapshot: the client may have missed edits and deletes meanwhile
        with db.connect() as conn:
            row = conn.execute(select(S.chats.c.state).where(S.chats.c.id == chat_id)).first()
        chat = chat_from_dict(row[0])
        visible = customer_view(chat)
        rank = public_ranks(chat)
        out = []
        now_shown = {rank[m.position]: m.text for m in visible if rank[m.position] <= after}
        if resumed[0] or (shown and now_shown != {k: v for k, v in shown.items() if k <= after}):
            resumed[0] = False
            out.append((after, "snapshot", {"messages": [customer_message(m, rank[m.position], chat_id)
                                                         for m in visible if rank[m.position] <= after]}))
        for m in visible:
            if rank[m.position] > after:
                out.append((rank[m.position], "message", customer_message(m, rank[m.position], chat_id)))
        shown.clear()
        shown.update({rank[m.position]: m.text for m in visible})
        return out

    return _stream(f"chat:{chat_id}", read_new, _last_event_id())
