"""(E) Analytics: a month's report over a million stored messages, on PostgreSQL.

A scratch database (made beside ``CHATFLOW_BENCH_PG``, dropped at the end) is migrated
to the newest schema, then filled by COPY with a generated month of chats shaped like
the ones the runtime stores: each chat's row with its messages in ``state``, its events
(``chat.created``, the ``chat.subscribed`` of every operator, joins, messages, reads,
closes, customers leaving) with the engine's payloads, a trace row per event processed
(the ``event``, ``rule``, ``fired``, ``effect`` and ``timer_*`` entries the runtime
writes, why-values included), the notifications (new chat, new message, escalations,
mentions) and the emails. The report of ``server.analytics`` is then timed, whole and
by part, best of several rounds: wall time, this process's CPU (merging the kept days'
samples) and the PostgreSQL backend's CPU. The first report of the month walks its days
and keeps them (server.analytics_days); it is timed apart, with the kept days deleted
before it, and the later ones read them.

    python bench/run.py --only analytics            # 1,000,000 messages (~15 min on 2 cores)
    python bench/run.py --only analytics --quick    # 100,000 messages
"""
from __future__ import annotations

import json
import os
import random
import secrets
import time
from datetime import datetime, timezone

import common

PG_ADMIN = os.environ.get("CHATFLOW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
MONTH = (datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp(), datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp())
AGENTS = [f"agent{i:02d}" for i in range(20)]
DEPARTMENTS = ["sales", "support", "billing", None]
CHANNELS = ["widget", "widget", "widget", "email", "telegram", "whatsapp"]
OPERATORS_PER_CHAT = 6  # operators who see a chat: subscribed and told of it
STATE_RULES = ("default.escalate_unread", "default.email_unread_replies")
EVENT_RULES = {
    "chat.created": ("default.subscribe_operators",),
    "message.created": ("default.notify_responsible", "default.notify_subscribers", "default.notify_mentioned"),
    "chat.assigned": ("default.notify_assigned",),
}


# ---------------------------------------------------------------- a month of chats, as rows

class Rows:
    """The rows of every table, as lists of tuples ready for COPY."""

    def __init__(self):
        self.chats, self.events, self.traces, self.notifications, self.emails = [], [], [], [], []
        self.messages = 0


def _rule_entry(at, rule, event, event_id, fired, state):
    why = [] if state else [{"depth": 0, "condition": "message.author == \"customer\"", "value": fired},
                            {"depth": 1, "condition": "message.author", "value": "customer"}]
    return {"kind": "rule", "at": at, "rule": rule, "event": event, "event_id": event_id, "fired": fired,
            "detail": {"why": why, "state_rule": state, "was_true": False if state else None}}


class Chat:
    """One generated chat; ``emit`` stores an event with its trace, as the runtime does."""

    def __init__(self, rows: Rows, cid: str, at: float, rnd: random.Random):
        self.rows, self.id, self.rnd = rows, cid, rnd
        self.seq = 0
        self.messages = []
        self.channel = rnd.choice(CHANNELS)
        self.department = rnd.choice(DEPARTMENTS)
        self.assignee = None
        self.status = "open"
        self.created_at = at
        self.customer = {"id": f"u-{cid}", "name": "Ann", "email": f"{cid}@example.com", "online": True,
                         "language": None, "fields": {}, "online_since": at, "offline_since": None}
        self.operators = rnd.sample(AGENTS, OPERATORS_PER_CHAT)

    def emit(self, type, at, actor, agent=None, rule=None, message=None, data=None, fired=(), effects=()):
        self.seq += 1
        self.last_at = at
        eid = f"{self.id}:{self.seq}"
        payload = {"id": eid, "type": type, "chat_id": self.id, "at": at, "actor": actor, "agent_id": agent,
                   "rule": rule, "message_id": message, "data": data or {}}
        self.rows.events.append((eid, self.id, type, json.dumps(payload), at, at))
        entries = [{"kind": "event", "at": at, "event": type, "event_id": eid,
                    "detail": {"actor": actor, "agent": agent, "rule": rule, "message": message}}]
        for r in EVENT_RULES.get(type, ()):
            entries.append(_rule_entry(at, r, type, eid, r in fired, False))
        for r in STATE_RULES:
            entries.append(_rule_entry(at, r, type, eid, r in fired, True))
        for r in fired:
            entries.append({"kind": "fired", "at": at, "rule": r, "event": type, "event_id": eid, "fired": True})
        for r, kind, to, template in effects:
            entries.append({"kind": "effect", "at": at, "rule": r, "event_id": eid,
                            "detail": {"kind": kind, "to": to, "template": template, "text": None,
                                       "key": f"{eid}/{r}/0:{to}"}})
            if kind == "notify":
                self.rows.notifications.append((f"{eid}/{r}/0:{to}", to, self.id, r, template, None, at, False))
            else:
                self.rows.emails.append((f"{eid}/{r}/0", self.id, to, template, "{}", at, at, None))
        self.rows.traces.append((self.id, at, json.dumps(entries)))
        return eid

    def message(self, at, author, author_id, kind="reply", via="widget", type="message.created"):
        mid = f"{self.id}:m{len(self.messages) + 1}"
        self.messages.append({"id": mid, "position": len(self.messages), "author": author, "author_id": author_id,
                              "kind": kind, "text": "Hello, I have a question about my order" if author == "customer"
                              else "Thanks for writing, let me check that for you", "via": via, "at": at,
                              "mentions": [], "edited_at": None, "deleted": False, "article": None})
        self.rows.messages += 1
        return mid

    def row(self):
        state = {"id": self.id, "channel": self.channel, "customer": self.customer, "created_at": self.created_at,
                 "page_url": "https://shop.example/help", "status": self.status, "assignee": self.assignee,
                 "department": self.department, "subscribers": self.operators, "tags": [], "priority": 0,
                 "locked_by": None, "language": None, "last_activity_at": self.messages[-1]["at"], "fields": {},
                 "messages": self.messages, "agent_read": {}, "customer_read": 0, "muted": [],
                 "opened_at": self.created_at, "closed_at": None, "assigned_at": None, "unassigned_at": None,
                 "locked_at": None}
        updated = max(self.last_at, self.created_at)  # the runtime sets it at every change of the chat
        return (self.id, self.channel, self.status, self.assignee, self.customer["id"], None, json.dumps(state),
                json.dumps({"last": {}}), self.seq, self.created_at, updated)


def generate_chat(rows: Rows, cid: str, start: float, rnd: random.Random) -> None:
    """A chat's life: start with a message, every operator subscribed and told, a join,
    rounds of customer messages and replies (some late: escalated), notes, reads, then
    closed, left with an email, or left open."""
    c = Chat(rows, cid, start, rnd)
    t = start
    first = c.message(t, "customer", c.customer["id"])
    c.emit("chat.created", t, "customer", message=first, fired=("default.subscribe_operators",),
           effects=[("default.subscribe_operators", "notify", a, "new_chat") for a in c.operators])
    for a in c.operators:
        c.emit("chat.subscribed", t, "rule", rule="default.subscribe_operators", data={"agent": a})
    agent = rnd.choice(c.operators)
    joined = t + rnd.uniform(10, 300)
    for r in range(rnd.randint(1, 6)):
        if r:
            t += rnd.uniform(30, 600)
            mid = c.message(t, "customer", c.customer["id"])
            who = "default.notify_responsible" if c.assignee else "default.notify_subscribers"
            to = [c.assignee] if c.assignee else c.operators
            c.emit("message.created", t, "customer", message=mid, fired=(who,),
                   effects=[(who, "notify", a, "new_message") for a in to])
        if rnd.random() < 0.1:
            t += rnd.uniform(5, 60)
            mid = c.message(t, "agent", agent, kind="note")
            c.emit("message.created", t, "agent", agent=agent, message=mid, data={"mentions": []})
        gap = rnd.uniform(15, 400) if rnd.random() < 0.85 else rnd.uniform(601, 1800)
        if c.assignee is None:
            c.emit("chat.joined", max(joined, t + 1), "agent", agent=agent,
                   data={"assignee": agent, "previous_assignee": None})
            c.assignee = agent
            joined = max(joined, t + 1)
        if gap > 600:
            c.emit("message.read", t + 600, "system", fired=("default.escalate_unread",),
                   effects=[("default.escalate_unread", "notify", a, "unread_messages") for a in c.operators])
            rows.events.pop()  # a deadline run stores a trace and effects, no event
        t = max(t + gap, joined + 1)
        mid = c.message(t, "agent", agent)
        c.emit("message.created", t, "agent", agent=agent, message=mid)
        if rnd.random() < 0.5:
            t += rnd.uniform(2, 60)
            c.emit("message.read", t, "customer", message=mid, data={"reader": "customer", "position": len(c.messages) - 1})
    end = rnd.random()
    if end < 0.7:
        t += rnd.uniform(60, 1200)
        c.emit("chat.closed", t, "agent", agent=agent, data={"ended_lock": None})
        c.status = "closed"
    elif end < 0.8:
        t += rnd.uniform(5, 120)
        c.emit("customer.left", t, "customer")
        c.emit("customer.left", t + 600, "system", fired=("default.email_unread_replies",),
               effects=[("default.email_unread_replies", "email", c.customer["email"], "unread_replies")])
        rows.events.pop()
        if rnd.random() < 0.4:
            t += 600 + rnd.uniform(60, 3600)
            mid = c.message(t, "customer", c.customer["id"], via="email")
            c.emit("message.created", t, "customer", message=mid, fired=("default.notify_responsible",),
                   effects=[("default.notify_responsible", "notify", agent, "new_message")])
    rows.chats.append(c.row())


def generate(n_messages: int, seed: int = 7) -> Rows:
    rnd = random.Random(seed)
    rows = Rows()
    lo, hi = MONTH
    while rows.messages < n_messages:
        # ids as the widget makes them ("c_" + 16 hex digits): sorting by chat id, the
        # bulk of a report's work, depends on how early ids differ
        generate_chat(rows, f"c_{rnd.getrandbits(64):016x}", rnd.uniform(lo, hi - 6 * 3600), rnd)
    # stored in time order, as a live installation writes them
    for table, at in ((rows.events, 4), (rows.traces, 1), (rows.notifications, 6), (rows.emails, 5)):
        table.sort(key=lambda r, i=at: r[i])
    return rows


# ---------------------------------------------------------------- the database

COLUMNS = {
    "chats": "id, channel, status, assignee, customer_id, token_hash, state, rule_state, event_seq, created_at, updated_at",
    "events": "id, chat_id, type, payload, at, processed_at",
    "traces": "chat_id, at, entries",
    "notifications": "key, agent_id, chat_id, rule, template, text, at, read",
    "emails": "key, chat_id, to_addr, template, data, at, sent_at, message_id",
}


class Scratch:
    """A scratch database beside CHATFLOW_BENCH_PG, migrated; dropped by ``close``."""

    def __init__(self, name: str | None = None):
        """A new scratch database; or ``name``, one made earlier (kept, see ``keep``)."""
        import psycopg

        self.admin, err = None, None
        for url in (PG_ADMIN, PG_ADMIN.replace("postgres@", "root@", 1)):
            try:
                self.admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
                break
            except psycopg.Error as e:
                err = e
        if self.admin is None:
            raise SystemExit(f"bench_analytics: PostgreSQL is not reachable at {PG_ADMIN}: {err}")
        self.keep = name is not None
        self.name = name or f"chatflow_bench_analytics_{os.getpid()}_{secrets.token_hex(3)}"
        if name is None:
            self.admin.execute(f'CREATE DATABASE "{self.name}"')
        self.url = url.rsplit("/", 1)[0] + "/" + self.name
        from server import store as S

        self.db = S.make_db(S.database_url(self.url, "unused"))

    def load(self, rows: Rows, log) -> dict:
        import psycopg

        sizes = {}
        with psycopg.connect(self.url, autocommit=True) as conn:
            with conn.cursor() as cur:
                for a in AGENTS:
                    cur.execute("INSERT INTO agents (id, name, departments, access_chats, status, is_admin, reply_shortcut) "
                                "VALUES (%s, %s, '[]', true, 'online', false, 'enter')", (a, a))
                for table in ("chats", "events", "traces", "notifications", "emails"):
                    data = getattr(rows, table)
                    t0 = time.perf_counter()
                    with cur.copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as cp:
                        for r in data:
                            cp.write_row(r)
                    log(f"  (E) COPY {table}: {len(data):,} rows in {time.perf_counter() - t0:.0f} s")
                t0 = time.perf_counter()
                cur.execute("VACUUM ANALYZE")
                log(f"  (E) VACUUM ANALYZE in {time.perf_counter() - t0:.0f} s")
                for table in ("chats", "events", "traces", "notifications", "emails"):
                    cur.execute(f"SELECT pg_total_relation_size('{table}')")
                    sizes[table] = cur.fetchone()[0]
        return sizes

    def close(self):
        self.db.dispose()
        if self.keep:  # asked to be kept (or given): the caller drops it
            self.admin.close()
            return
        self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.close()


# ---------------------------------------------------------------- the measurements

def run(quick: bool = False, log=print, rounds: int = 3) -> dict:
    from server import analytics as A

    n = 100_000 if quick else 1_000_000
    t0 = time.perf_counter()
    rows = generate(n)
    log(f"  (E) generated {rows.messages:,} messages in {len(rows.chats):,} chats, {len(rows.events):,} events, "
        f"{len(rows.traces):,} traces, {len(rows.notifications):,} notifications, {len(rows.emails):,} emails "
        f"in {time.perf_counter() - t0:.0f} s")
    scratch = Scratch()
    try:
        sizes = scratch.load(rows, log)
        counts = {"messages": rows.messages, "chats": len(rows.chats), "events": len(rows.events),
                  "traces": len(rows.traces), "notifications": len(rows.notifications), "emails": len(rows.emails)}
        del rows
        lo, hi = MONTH
        week = (lo + 7 * 86400, lo + 14 * 86400)
        month = A.Query(lo, hi, now=hi)
        forget = lambda: _forget_kept_days(scratch.db)  # noqa: E731
        cases = [
            # the first report of the month walks its 30 days one by one and keeps them
            ("month: overview + agents, first report (keeps the days)", month, ("overview", "agents"), 1, forget),
            ("month: overview + agents", month, ("overview", "agents"), rounds),
            ("month, department=sales: overview + agents", A.Query(lo, hi, now=hi, department="sales"),
             ("overview", "agents"), rounds),
            ("month, agent=agent07: overview + agents", A.Query(lo, hi, now=hi, agent="agent07"),
             ("overview", "agents"), rounds),
            ("a week: overview + agents", A.Query(*week, now=hi), ("overview", "agents"), rounds),
            ("month: rules (rule_runs: none are COPYed here)", A.Query(lo, hi, now=hi), ("rules",), 1),
        ]
        serial = _serial_engine(scratch.url)
        results = []
        for name, q, parts, n, *setup in cases:
            before = setup[0] if setup else (lambda: None)
            clocks = []
            for _ in range(n):
                before()
                clock, out = common.timed(A.report, scratch.db, q, parts=parts)
                clocks.append(clock)
            best = common.best(clocks)
            cpu = _backend_cpu(serial, lambda: A.report(serial, q, parts=parts), n, before)
            log(f"  (E) {name}: best wall {best.wall:.2f} s ({', '.join(f'{c.wall:.2f}' for c in clocks)}); "
                f"Python CPU {best.cpu:.2f} s; "
                f"PostgreSQL CPU without parallel workers {cpu if cpu is None else round(cpu, 2)} s")
            results.append({"case": name, "best": best, "clocks": clocks, "cpu": cpu, "report": out})
        serial.dispose()
        return {"counts": counts, "sizes": sizes, "results": results, "quick": quick}
    finally:
        scratch.close()


def _serial_engine(url):
    """An engine whose sessions run without parallel workers: the backend's own CPU time
    is then all the work the report costs PostgreSQL."""
    from sqlalchemy import event

    from server import store as S

    db = S.make_db(S.database_url(url, "unused"))

    @event.listens_for(db, "connect")
    def _serial(dbapi, _record):
        cur = dbapi.cursor()
        cur.execute("SET max_parallel_workers_per_gather = 0")
        cur.close()

    db.dispose()
    return db


def _forget_kept_days(db) -> None:
    """Deletes the analytics' kept days (server.analytics_days), as a late write would."""
    from server import store as S

    with db.begin() as conn:
        conn.execute(S.analytics_day_chats.delete())
        conn.execute(S.analytics_day_figures.delete())
        conn.execute(S.analytics_days.delete())


def _backend_cpu(db, fn, rounds: int, before=lambda: None) -> float | None:
    """The least CPU seconds (user + system) the PostgreSQL backend spent on ``fn`` in
    ``rounds`` calls, read from /proc (PostgreSQL on this machine); None if unreadable.
    Unlike the wall time it does not count the time other tenants held the cores."""
    with db.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()

    def cpu():
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        best = None
        for _ in range(rounds):
            before()
            start = cpu()
            fn()  # the pool holds one connection: the same backend
            spent = cpu() - start
            best = spent if best is None else min(best, spent)
        return best
    except OSError:
        return None


def render(res: dict) -> str:
    c = res["counts"]
    lines = [f"(E) analytics on PostgreSQL: {c['messages']:,} messages in {c['chats']:,} chats of one month; "
             f"{c['events']:,} events, {c['traces']:,} trace rows, {c['notifications']:,} notifications, "
             f"{c['emails']:,} emails; tables {sum(res['sizes'].values()) / 2**30:.1f} GiB"]
    rows = []
    for r in res["results"]:
        target = r["case"] == "month: overview + agents" and not res["quick"]
        rows.append([r["case"], f"{r['best'].wall:.2f} s", ", ".join(f"{x.wall:.2f}" for x in r["clocks"]),
                     f"{r['best'].cpu:.2f} s", "—" if r["cpu"] is None else f"{r['cpu']:.2f} s",
                     common.verdict(r["best"].wall < 2.0) if target else ""])
    lines.append(common.table(["report", "best wall", "rounds (s)", "Python CPU", "PostgreSQL CPU, serial",
                               "target < 2 s"],
                              rows, title="(E) a month's report"))
    ov = next(r["report"] for r in res["results"] if r["case"] == "month: overview + agents")["overview"]
    lines.append("figures of the month: " + json.dumps({"chats": ov["chats"], "first_response_time":
                 ov["first_response_time"], "email": ov["email"]}, default=lambda x: round(x, 1)))
    return "\n\n".join(lines)
