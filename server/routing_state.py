"""What the routing of engine/routing.py shares between processes, over the database.

Department assignment and the backlog run in web processes (agent commands) and in
workers (rules), many at once in scaled mode. They share:

- the round robin's last pick per department (``round_robin``, server.runtime),
- each agent's open chats overall and per channel (counted from ``chats``),
- the picks of the fair-distribution window (``routing_picks``, :class:`Picks`),
- the waiting chats the backlog hands out (``chats`` rows, :func:`waiting_loader`).

A pick reads counts and then writes: two transactions picking at once could both see
room for the last slot. On PostgreSQL every transaction that picks first takes one
advisory lock (:func:`routing_lock`), held to its commit, so picks happen one after the
other and each sees the ones committed before it. It is taken only when a pick is
about to happen (not for a message), and it never waits on a chat row while held: the
backlog locks waiting chats with SKIP LOCKED. SQLite has one writer at a time anyway.
"""
from __future__ import annotations

from sqlalchemy import and_, column, delete, func, select

from engine.snapshot import chat_from_dict

from . import store as S

ROUTING_LOCK = 7243002  # pg_advisory_xact_lock key (7243001 is the migrations')


def routing_lock(conn):
    """A function taking the routing lock once in this transaction (PostgreSQL)."""
    taken = []

    def take() -> None:
        if not taken and conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ROUTING_LOCK})")
        taken.append(True)
    return take


class Picks:
    """engine.routing.PickLog over ``routing_picks``, in the caller's transaction."""

    def __init__(self, conn):
        self._conn = conn

    def count(self, agent_id: str, since: float) -> int:
        t = S.routing_picks
        return self._conn.execute(select(func.count()).where(and_(t.c.agent_id == agent_id, t.c.at > since))).scalar() or 0

    def add(self, agent_id: str, chat_id: str, at: float, window: int | None) -> None:
        if window is None:
            return  # no limit to count against: nothing to remember
        t = S.routing_picks
        self._conn.execute(delete(t).where(and_(t.c.agent_id == agent_id, t.c.at <= at - window)))
        self._conn.execute(t.insert().values(agent_id=agent_id, chat_id=chat_id, at=at))


def open_in_channel(conn):
    """(agent, channel) -> the agent's open chats of that channel, as stored."""
    def count(agent_id: str, channel: str) -> int:
        c = S.chats.c
        return conn.execute(select(func.count()).where(
            and_(c.assignee == agent_id, c.status == "open", c.channel == channel))).scalar() or 0
    return count


def waiting_loader(conn, world, batch=None, loaded=None):
    """A World.waiting_loader: adds to ``world`` the stored chats waiting in the agent's
    departments (open, unassigned), locked for this transaction — skipping rows another
    transaction holds (it is changing them; the next backlog run sees them) — and the
    other chats of the batch (``batch``, id -> Chat: their rows are this transaction's and
    not written yet, so they are taken as their engines left them in memory). They join
    ``world.foreign``: their events go to the outbox, for their own processing.
    ``loaded`` (id -> Chat) is shared by the worlds of one batch, so a chat loaded by one
    is the same object in all, as it stands after what the others did to it."""
    loaded = {} if loaded is None else loaded
    batch = {} if batch is None else batch
    def load(agent, at) -> None:
        departments = sorted(agent.departments)
        if not departments:
            return
        for cid, chat in batch.items():
            if cid not in world.chats:  # another chat of the batch (the backlog filters them)
                world.chats[cid] = chat
                world.foreign.add(cid)
        c = S.chats.c
        q = select(S.chats).where(and_(c.assignee.is_(None), c.status == "open",
                                       column("department").in_(departments))).order_by(c.id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True, of=S.chats)
        for row in conn.execute(q).mappings():
            cid = row["id"]
            if cid in batch or (cid in world.chats and cid not in world.foreign):
                continue
            if cid not in loaded:
                loaded[cid] = chat_from_dict(row["state"])
                world.chat_seqs[cid] = row["event_seq"]
            world.chats[cid] = loaded[cid]
            world.foreign.add(cid)
    return load
