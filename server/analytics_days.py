"""The analytics' samples of closed UTC days, kept so that a month's report reads a few
rows per day instead of walking every event of the month.

Every figure's sample belongs to the moment its defining thing happened (the reply, the
close, the join …; a long wait to the moment its threshold passed), and what a day's
samples are depends only on the events up to that day's end. So once a day is over its
samples stay as they are — unless an event of that day, or an earlier one, is written or
changed later (a commit straddling midnight, an import, a virtual clock). Hence:

- ``samples(conn, q, live, chats=…)`` answers a period from the whole days that are
  over (by ``q.now``), read from ``analytics_day_figures`` (or, for a report with chat
  filters, from ``analytics_day_chats``: each chat's own samples, joined to the chats
  the filters keep as they are now), plus the rest of the period (its partial first and
  last days, today) walked by ``live`` as before. A day not kept yet is computed by
  ``live`` for that day alone and kept (per ``wait_minutes``, which the ``waited``
  figure depends on). ``server.analytics_keeper`` keeps each day in the background soon
  after it is over, so reports seldom do.
- Triggers on ``events`` and ``notifications`` (migration 0010) delete the kept days
  from the day of any stream event or escalation written, deleted or changed before
  ``analytics_state.until``, in the writer's transaction; so a report after that write
  walks those days again.

Why the result is exact: a day's samples are the rows of the walk whose moment is in the
day, with the same running values (each chat's history is read from its start), so the
days' samples together are the period's. Counts add up; the figures counted in chats
keep their distinct chat ids per day (a chat closed on two days counts once in the
period); medians and p90s are taken over all the values, which are kept sorted.

Races, and why none leaves a stale day kept. A fill widens ``until`` first (committed),
then on PostgreSQL waits for the write transactions in flight at that moment (they may
have read the old ``until`` and written into the new days without the trigger's
attention). Each day is then marked with the fill's token (``analytics_days.filling``,
committed holding the ``analytics_state`` row lock, which the trigger takes before
deleting: a write into the day that fired its trigger earlier has committed by then),
walked with no lock held, and kept only if the mark is still there, checked and written
under the lock again. A late write either committed before the mark (the walk sees it),
or deleted the mark (the fill keeps nothing of that day), or waits for the keeping
commit and deletes what was kept. On SQLite the lock is the database's one writer, held
only to mark and to keep, so the deadline thread and writers never wait for a walk.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import math
import secrets
import sys
import time
from array import array
from dataclasses import dataclass, field

from sqlalchemy import and_, func, insert, literal_column, null, select, text, union_all, update

from . import store as S

DAY = 86400
# the figures counted in distinct chats (server.analytics._figures and escalations)
COUNTED_IN_CHATS = frozenset(("closed", "waited", "reply", "escalated"))
WAIT_FOR_WRITERS = 10.0  # seconds a fill waits for the writes in flight; then it walks those days live


@dataclass
class Samples:
    """One figure's samples (everyone's or one agent's): how many, the distinct chats
    (None when the figure is not counted in chats), the values (times in seconds)."""

    count: int = 0
    chats: set | None = None
    values: array = field(default_factory=lambda: array("d"))

    def add(self, other: "Samples") -> None:
        self.count += other.count
        if other.chats is not None:
            self.chats = set(other.chats) if self.chats is None else self.chats | other.chats
        self.values.extend(other.values)


def merge(into: dict, part: dict) -> dict:
    """Adds the samples ``part`` ({key: Samples}) to ``into``; returns ``into``."""
    for key, s in part.items():
        into.setdefault(key, Samples()).add(s)
    return into


# ------------------------------------------------------------------ the period, split

def split(q, first_event: float | None) -> tuple[list[int], list[tuple[float, float]]]:
    """(days, pieces): the whole UTC days of ``q``'s period that are over by ``q.now`` and
    that may hold events (none before ``first_event``, the earliest stored event's time),
    as day numbers; and the rest of the period as ``[start, end)`` pieces to walk."""
    first, last = math.ceil(q.start / DAY), math.floor(min(q.end, q.now) / DAY)
    if first_event is not None:
        first = max(first, min(math.floor(first_event / DAY), last))
    if first_event is None or first >= last:
        return [], [(q.start, q.end)]
    pieces = []
    if q.start < first * DAY:
        pieces.append((q.start, first * DAY))
    if last * DAY < q.end:
        pieces.append((last * DAY, q.end))
    return list(range(first, last)), pieces


def samples(conn, q, live, begin=lambda conn: None, chats=None) -> dict:
    """{(metric, agent): Samples} of the period of ``q``: the kept days (filled first
    where missing; with ``chats``, a SELECT of the chat ids the filters keep, only those
    chats' samples) and ``live(conn, q)`` of the rest. ``begin(conn)`` is called at the
    start of each transaction the fill leaves open."""
    found, pieces = by_day(conn, q, live, begin, chats)
    out: dict = {}
    for day in sorted(found):
        merge(out, found[day])
    for start, end in pieces:
        merge(out, live(conn, dataclasses.replace(q, start=start, end=end)))
    return out


def by_day(conn, q, live, begin=lambda conn: None, chats=None) -> tuple[dict, list[tuple[float, float]]]:
    """({day: {(metric, agent): Samples}}, pieces): the samples of each whole day of
    ``q``'s period that is over, kept (filled first where missing), and the ``[start,
    end)`` pieces of the period left to walk. With ``chats`` (a SELECT of the chat ids
    the report's filters keep, as they are now), only those chats' samples."""
    first_event = conn.execute(select(S.events.c.at).order_by(S.events.c.at).limit(1)).scalar()
    days, pieces = split(q, first_event)
    if not days:
        return {}, pieces
    found = read(conn, days, q.wait_minutes, chats)
    missing = [d for d in days if d not in found]
    if missing:
        # a day is walked and kept for every chat, whatever the filters
        everyone = dataclasses.replace(q, channel=None, department=None, agent=None)
        filled = fill(conn, missing, everyone, live, begin)
        if chats is not None and filled:
            filled = read(conn, sorted(filled), q.wait_minutes, chats)  # (a day forgotten meanwhile is walked)
        found.update(filled)
        pieces = pieces + [(d * DAY, (d + 1) * DAY) for d in missing if d not in found]
    return found, pieces


# ------------------------------------------------------------------ the kept days

def _pack(values, ordered: bool = True) -> bytes | None:
    """``values`` as float64, little-endian (sorted unless not ``ordered``); None if none."""
    if not values:
        return None
    a = array("d", sorted(values) if ordered else values)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def _unpack(blob) -> array:
    a = array("d")
    if blob:
        a.frombytes(bytes(blob))
        if sys.byteorder == "big":
            a.byteswap()
    return a


def read(conn, days: list[int], wait_minutes: float, chats=None) -> dict:
    """{day: {(metric, agent): Samples}} of the ``days`` kept for ``wait_minutes`` (a kept
    day without samples maps to {}); with ``chats`` (a SELECT of chat ids), the samples
    of those chats only, from the per-chat rows. One statement: a day and its samples
    are deleted (or replaced) together, so it never sees a day without them."""
    d = S.analytics_days
    kept = and_(d.c.wait_minutes == wait_minutes, d.c.day >= days[0], d.c.day <= days[-1], d.c.filling.is_(None))
    if chats is not None:
        return _read_chats(conn, days, kept, chats)
    f = S.analytics_day_figures
    stmt = (select(d.c.day, f.c.metric, f.c.agent, f.c.count, f.c.chats, f.c.samples)
            .select_from(d.outerjoin(f, and_(f.c.day == d.c.day, f.c.wait_minutes == d.c.wait_minutes)))
            .where(kept))
    wanted = set(days)
    out: dict = {}
    for day, metric, agent, count, chats_, blob in conn.execute(stmt):
        if day not in wanted:
            continue
        figures = out.setdefault(day, {})
        if metric is not None:
            figures[(metric, agent)] = Samples(count, None if chats_ is None else set(json.loads(chats_)),
                                               _unpack(blob))
    return out


def _read_chats(conn, days: list[int], kept, chats) -> dict:
    """:func:`read` of the chats ``chats`` selects: their rows summed per day and figure
    (PostgreSQL sums them, concatenating the values; SQLite's rows are summed here)."""
    d, c = S.analytics_days, S.analytics_day_chats
    mine = and_(c.c.wait_minutes == d.c.wait_minutes, c.c.day == d.c.day, c.c.chat_id.in_(chats))
    wanted = set(days)
    out: dict = {}
    if conn.dialect.name == "postgresql":
        # the days and their rows in one statement, so a day forgotten in between is not
        # taken for a kept day without samples
        counted = c.c.metric.in_(sorted(COUNTED_IN_CHATS))
        rows = select(c.c.day, c.c.metric, c.c.agent, func.sum(c.c.count), func.array_agg(c.c.chat_id).filter(counted),
                      func.string_agg(c.c.samples, literal_column("''::bytea"))) \
            .select_from(d.join(c, mine)).where(kept).group_by(c.c.day, c.c.metric, c.c.agent)
        days_kept = select(d.c.day, *[null()] * 5).where(kept)
        for day, metric, agent, count, ids, blob in conn.execute(union_all(rows, days_kept)):
            if day not in wanted:
                continue
            figures = out.setdefault(day, {})
            if metric is not None:
                figures[(metric, agent)] = Samples(int(count), set(ids) if ids is not None else None, _unpack(blob))
        return out
    rows = select(d.c.day, c.c.chat_id, c.c.metric, c.c.agent, c.c.count, c.c.samples) \
        .select_from(d.outerjoin(c, mine)).where(kept)
    for day, chat_id, metric, agent, count, blob in conn.execute(rows):
        if day not in wanted:
            continue
        figures = out.setdefault(day, {})
        if metric is None:
            continue
        s = figures.get((metric, agent))
        if s is None:
            s = figures[(metric, agent)] = Samples(0, set() if metric in COUNTED_IN_CHATS else None)
        s.count += count
        if s.chats is not None:
            s.chats.add(chat_id)
        if blob:
            s.values.extend(_unpack(blob))
    return out


def fill(conn, days: list[int], q, live, begin=lambda conn: None) -> dict:
    """Walks each of ``days`` (whole days over by ``q.now``) with ``live(conn, q,
    by_chat)`` over every chat and keeps its samples, also per chat; returns {day:
    samples} of the days kept. Commits the connection's transaction first.

    Left out (the caller walks them live): the days another fill is walking, those a
    late write changed during the walk, and all of them if the writes in flight did not
    end within WAIT_FOR_WRITERS. No lock is held during a walk: the day is marked with a
    token first, and what the walk found is kept only if the mark is still there (a late
    write into the day deletes it, as it deletes a kept day)."""
    conn.commit()
    if not _widen(conn, (days[-1] + 1) * DAY):
        begin(conn)
        return {}
    out = {}
    for day in days:
        token = secrets.token_hex(8)
        mark = _mark(conn, day, q.wait_minutes, token, q.now)
        if mark == "kept":  # another fill kept it meanwhile
            out.update(read(conn, [day], q.wait_minutes))
            conn.commit()
            continue
        if mark == "busy":
            continue
        begin(conn)
        by_chat: dict = {}
        found = live(conn, dataclasses.replace(q, start=day * DAY, end=(day + 1) * DAY, now=(day + 1) * DAY), by_chat)
        conn.commit()
        if _keep(conn, day, q.wait_minutes, token, found, by_chat, computed_at=q.now):
            out[day] = found
    begin(conn)
    return out


PER_CHAT = text("INSERT INTO analytics_day_chats (wait_minutes, day, chat_id, metric, agent, count, samples) "
                "SELECT :w, :day, r.c, r.m, r.a, r.n, decode(r.v, 'base64') "
                "FROM json_to_recordset(CAST(:doc AS json)) AS r(c text, m text, a text, n integer, v text)")
STALE_MARK = 600.0  # seconds after which a fill's mark is taken over (the fill died)


def _lock(conn) -> None:
    """The ``analytics_state`` row lock, which the triggers take before forgetting days:
    a late write waits for this transaction's commit, or this waits for the write's."""
    state = S.analytics_state
    conn.execute(update(state).where(state.c.id == 1).values(changes=state.c.changes))


def _mark(conn, day: int, wait_minutes: float, token: str, now: float) -> str:
    """Marks ``day`` as being walked by ``token`` (committed): "marked"; or "kept" (it
    is kept already) or "busy" (another fill marked it less than STALE_MARK ago)."""
    d = S.analytics_days
    where = and_(d.c.day == day, d.c.wait_minutes == wait_minutes)
    _lock(conn)
    row = conn.execute(select(d.c.filling, d.c.computed_at).where(where)).first()
    if row is None:
        conn.execute(insert(d).values(day=day, wait_minutes=wait_minutes, computed_at=now, filling=token))
        answer = "marked"
    elif row.filling is None:
        answer = "kept"
    elif now - row.computed_at < STALE_MARK:
        answer = "busy"
    else:
        conn.execute(update(d).where(where).values(filling=token, computed_at=now))
        answer = "marked"
    conn.commit()
    return answer


def _keep(conn, day: int, wait_minutes: float, token: str, found: dict, by_chat: dict, computed_at: float) -> bool:
    """Keeps the samples of ``day`` walked under ``token``'s mark, if the mark is still
    there (committed); False if a late write deleted it (or another fill took it over)."""
    d, f, c = S.analytics_days, S.analytics_day_figures, S.analytics_day_chats
    where = and_(d.c.day == day, d.c.wait_minutes == wait_minutes)
    _lock(conn)
    if conn.execute(select(d.c.day).where(and_(where, d.c.filling == token))).first() is None:
        conn.commit()
        return False
    conn.execute(f.delete().where(and_(f.c.day == day, f.c.wait_minutes == wait_minutes)))
    conn.execute(c.delete().where(and_(c.c.day == day, c.c.wait_minutes == wait_minutes)))
    rows = [{"day": day, "wait_minutes": wait_minutes, "metric": metric, "agent": agent, "count": s.count,
             "chats": None if s.chats is None else json.dumps(sorted(s.chats)), "samples": _pack(s.values)}
            for (metric, agent), s in found.items() if agent is not None]
    if rows:
        conn.execute(insert(f), rows)
    if by_chat and conn.dialect.name == "postgresql":
        # one JSON document split by the server: row by row, the insert cost psycopg more
        # Python time than the walk
        b64 = base64.b64encode
        doc = [{"c": chat_id, "m": metric, "a": agent, "n": n, "v": b64(_pack(values, False)).decode() if values else None}
               for chat_id, samples in by_chat.items() for (metric, agent), (n, values) in samples.items()]
        conn.execute(PER_CHAT, {"w": wait_minutes, "day": day, "doc": json.dumps(doc)})
    elif by_chat:
        conn.execute(insert(c), [{"wait_minutes": wait_minutes, "day": day, "chat_id": chat_id, "metric": metric,
                                  "agent": agent, "count": n, "samples": _pack(values, False)}
                                 for chat_id, samples in by_chat.items() for (metric, agent), (n, values) in samples.items()])
    conn.execute(update(d).where(where).values(filling=None, computed_at=computed_at))
    conn.commit()
    return True


def _widen(conn, until: float) -> bool:
    """Makes ``analytics_state.until`` at least ``until`` (committed). On PostgreSQL,
    then waits for the write transactions of this database in flight: they may have read
    the old ``until`` and written into the new days unseen by the trigger. False if they
    did not end within WAIT_FOR_WRITERS."""
    state = S.analytics_state
    now = conn.execute(select(state.c.until).where(state.c.id == 1)).scalar()
    if now is not None and now >= until:
        conn.commit()
        return True
    if now is None:
        _create_state(conn, until)
    else:
        conn.execute(update(state).where(and_(state.c.id == 1, state.c.until < until)).values(until=until))
    conn.commit()
    if conn.dialect.name != "postgresql":
        return True  # one writer at a time: none is in flight once this committed
    return _writers_done(conn)


def _create_state(conn, until: float) -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    stmt = upsert(S.analytics_state).values(id=1, until=until, changes=0)
    conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={"until": until},
                                            where=S.analytics_state.c.until < until))


IN_FLIGHT = text("SELECT backend_xid::text FROM pg_stat_activity WHERE datname = current_database() "
                 "AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()")
STILL = text("SELECT backend_xid::text FROM pg_stat_activity WHERE backend_xid::text = ANY(:xids)")


def _writers_done(conn) -> bool:
    xids = list(conn.execute(IN_FLIGHT).scalars())
    conn.commit()  # pg_stat_activity is read once per transaction
    deadline = time.monotonic() + WAIT_FOR_WRITERS
    while xids:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
        xids = list(conn.execute(STILL, {"xids": xids}).scalars())
        conn.commit()
    return True
