"""(D) The service in scaled mode, on this machine, over loopback: gunicorn web processes,
`chatflow worker` processes (RQ), PostgreSQL and Redis.

    python bench/run.py --only service            # full sizes
    python bench/run.py --only service --quick    # smaller sizes

(a) customer messages per second through gunicorn into PostgreSQL, with workers keeping
    up; latency from commit to notification stored;
(b) events per second through RQ: a filled outbox drained by SimpleWorkers;
(c) deadline lateness with many open chats and three state rules (`Scheduler.tick` +
    workers);
(d) delivery latency to 300 concurrent SSE streams.

Every load loop is bounded in count and in time; every process this module starts runs in
its own session and is ended by its pid. A scratch PostgreSQL database is made for the
run and dropped after it; Redis database 12 holds the run's queue (emptied after).

Nothing in server/ or engine/ is changed here. One thing is added around it: gunicorn
needs an application that reads its settings from the environment, and
``server.app:create_app()`` does not (it takes a config dict, and `chatflow serve` builds
that from the environment), so gunicorn is pointed at :func:`web_app` below.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

ROOT = common.ROOT
PG_ADMIN = os.environ.get("CHATFLOW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CHATFLOW_BENCH_REDIS", "redis://127.0.0.1:6379/12")
ADMIN_TOKEN = "bench-admin"
BIN = Path(sys.executable).parent  # gunicorn and chatflow of the benchmark venv

THREE_RULES = '''\
rule unread_5m "The assignee has not read the customer for 5 minutes" {
  when chat.unread_by_assignee for 5m
  then notify assignee template "unread_5m"
}

rule awaiting_10m "No agent answered the customer for 10 minutes" {
  when chat.awaiting_agent for 10m
  then notify assignee template "awaiting_10m"
}

rule idle_30m "Nothing public was said for 30 minutes" {
  when chat.idle for 30m
  then notify assignee template "idle_30m"
}
'''


# ---------------------------------------------------------------- gunicorn's application

def web_app():
    """The WSGI application for gunicorn: settings from the environment, as `chatflow
    serve` reads them, plus CHATFLOW_STREAM_SECONDS."""
    from server.app import create_app, settings_from_env

    config = settings_from_env()
    if os.environ.get("CHATFLOW_STREAM_SECONDS"):
        config["STREAM_SECONDS"] = float(os.environ["CHATFLOW_STREAM_SECONDS"])
    app = create_app(config)
    try:  # as create_app() does for a server process (commits after the session's start)
        from server.app import tune_gc

        app.extensions["chatflow"].ruleset()
        tune_gc()
    except ImportError:
        pass
    return app


# ---------------------------------------------------------------- figures

def pct(values, p: float):
    """The p-th percentile (nearest rank) of ``values``; None if empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def ms(seconds) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.1f} ms"


# ---------------------------------------------------------------- the scratch environment

class Env:
    """A scratch PostgreSQL database, the run's Redis queue, and the processes started on
    them (each in its own session, ended by its pid)."""

    def __init__(self, log):
        import psycopg

        self.log = log
        self.admin = None
        for url in (PG_ADMIN, PG_ADMIN.replace("postgres@", "root@", 1)):
            try:
                self.admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
                break
            except psycopg.Error:
                continue
        if self.admin is None:
            raise SystemExit(f"bench_service: PostgreSQL is not reachable at {PG_ADMIN}")
        self.admin_url = url
        self.name = f"chatflow_bench_{os.getpid()}_{secrets.token_hex(3)}"
        self.admin.execute(f'CREATE DATABASE "{self.name}"')
        self.pg_url = url.rsplit("/", 1)[0] + "/" + self.name
        self.data_dir = tempfile.mkdtemp(prefix="chatflow-bench-")
        self.procs: list[subprocess.Popen] = []
        from redis import Redis

        self.redis = Redis.from_url(REDIS_URL)
        self.redis.ping()

    def env(self, **extra) -> dict:
        e = dict(os.environ)
        # one client address sends everything: the widget's rate limits would refuse it
        e.update(DATABASE_URL=self.pg_url, REDIS_URL=REDIS_URL, CHATFLOW_ADMIN_TOKEN=ADMIN_TOKEN,
                 CHATFLOW_DATA_DIR=self.data_dir, PYTHONUNBUFFERED="1", CHATFLOW_RATE_LIMITS="off")
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def queue(self):
        from server import jobs

        return jobs.make_queue({"REDIS_URL": REDIS_URL}, self.redis)

    def prepare(self, rules_text: str | None = None) -> None:
        """Migrate, activate the rule set and make the admin, once, before any web or
        worker process starts, so no measured request pays for it."""
        from server.app import create_app

        config = {"DATABASE_URL": self.pg_url, "DATA_DIR": self.data_dir, "ADMIN_TOKEN": ADMIN_TOKEN,
                  "TIMERS": False}
        if rules_text is not None:
            path = Path(self.data_dir) / "three.rules"
            path.write_text(rules_text, encoding="utf-8")
            config.update(RULES=(str(path),), RULE_DEFAULTS=False)
        app = create_app(config)
        app.extensions["chatflow"].db.dispose()
        q = self.queue()
        q.empty()

    def db(self):
        from server import store as S
        from sqlalchemy import create_engine

        return create_engine(S.database_url(self.pg_url, self.data_dir))

    def start(self, args, name, **extra) -> subprocess.Popen:
        log = open(Path(self.data_dir) / f"{name}.log", "ab")
        p = subprocess.Popen(args, cwd=str(ROOT), env=self.env(**extra), stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        p.log_path = log.name
        self.procs.append(p)
        return p

    def gunicorn(self, port: int, workers: int, threads: int, **extra) -> subprocess.Popen:
        p = self.start([str(BIN / "gunicorn"), "--pythonpath", str(ROOT / "bench"), "-k", "gthread",
                        "-w", str(workers), "--threads", str(threads), "-b", f"127.0.0.1:{port}",
                        "--timeout", "120", "--keep-alive", "5", "--log-level", "warning",
                        "bench_service:web_app()"], "gunicorn", **extra)
        wait_http(port, "/healthz", 60)
        # every worker process has booted (each answers /healthz; two rounds of keep-alive-less requests)
        for _ in range(8):
            wait_http(port, "/healthz", 10)
        return p

    def workers(self, n: int, burst: bool = False) -> list:
        args = [str(BIN / "chatflow"), "worker"] + (["--burst"] if burst else [])
        return [self.start(args, f"worker{i}") for i in range(n)]

    def stop(self, procs=None, sig=signal.SIGTERM, wait: float = 15.0) -> None:
        procs = list(self.procs if procs is None else procs)
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)  # the process's own session: it and its children
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + wait
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
            if p in self.procs:
                self.procs.remove(p)

    def close(self) -> None:
        self.stop()
        try:
            q = self.queue()
            q.empty()
        except Exception:
            pass
        self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            if c.getresponse().status == 200:
                c.close()
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answers on 127.0.0.1:{port}{path} after {seconds} s")
        time.sleep(0.2)


class Client:
    """One keep-alive HTTP connection (a load thread's)."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method, path, body=None, headers=None):
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        data = None if body is None else json.dumps(body)
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=h)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()  # a closed keep-alive connection: reconnect once
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise

    def close(self):
        self.conn.close()


def run_threads(n_threads: int, items: list, fn, seconds: float, port: int):
    """Call ``fn(client, item)`` for each item from ``n_threads`` threads until the items
    or the time run out. Returns (results, wall seconds); a result is (t0, t1, value)."""
    lock = threading.Lock()
    it = iter(items)
    out = []
    deadline = time.monotonic() + seconds

    def loop():
        c = Client(port)
        try:
            while time.monotonic() < deadline:
                with lock:
                    item = next(it, None)
                if item is None:
                    return
                t0 = time.time()
                v = fn(c, item)
                out.append((t0, time.time(), v))
        finally:
            c.close()

    threads = [threading.Thread(target=loop) for _ in range(n_threads)]
    w0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return out, time.perf_counter() - w0


def wait_outbox_empty(db, seconds: float) -> float | None:
    """Seconds until no event is unprocessed (None: not within ``seconds``)."""
    from sqlalchemy import text

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        with db.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM events WHERE processed_at IS NULL LIMIT 1")).first():
                return time.perf_counter() - t0
        time.sleep(0.1)
    return None


def children_cpu(procs) -> float:
    """User+system CPU seconds of processes that have exited (and were waited for)."""
    return sum(getattr(p, "cpu", 0.0) for p in procs)


def proc_cpu(pid: int) -> float:
    """CPU seconds used so far by a live process and its threads (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tick
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_cpu(root_pid: int) -> float:
    """CPU seconds of a process and its live children (gunicorn's workers)."""
    total = proc_cpu(root_pid)
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == root_pid:
                total += proc_cpu(int(d.name))
    return total


def machine_busy():
    """(busy, total) jiffies of the whole machine so far (/proc/stat)."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def busy_share(before, after) -> float:
    return (after[0] - before[0]) / max(1, after[1] - before[1])


ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}


def _create_agents(port, ids, **fields):
    c = Client(port)
    tokens = {}
    for agent_id in ids:
        status, body = c.call("POST", "/api/admin/agents", {"id": agent_id, **fields}, ADMIN)
        assert status == 201, body
        tokens[agent_id] = {"Authorization": "Bearer " + json.loads(body)["token"]}
    c.close()
    return tokens


def _start_chats(port, n, concurrency, seconds):
    def start(c, i):
        status, body = c.call("POST", "/api/widget/chats", {"text": f"hello {i}", "customer": {"name": f"c{i}"}})
        if status != 201:
            return None
        d = json.loads(body)
        return d["chat"]["id"], {"Authorization": "Bearer " + d["token"]}

    res, wall = run_threads(concurrency, list(range(n)), start, seconds, port)
    return [v for _, _, v in res if v], wall, [t1 - t0 for t0, t1, _ in res]


# ---------------------------------------------------------------- (a) customer messages

def _children(pid: int) -> list:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _profile(pids: dict, seconds: float, out_dir: str) -> list:
    """Start py-spy on these processes ({name: pid}) for ``seconds``; returns the Popens."""
    procs = []
    for name, pid in pids.items():
        out = os.path.join(out_dir, f"{name}.txt")
        procs.append(subprocess.Popen([str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration",
                                       str(int(seconds)), "--rate", "200", "--format", "raw", "--nonblocking",
                                       "--output", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def bench_messages(log, n_chats, n_msgs, seconds, concurrency, web_workers, web_threads, n_workers,
                   profile_dir=None, pace=None) -> dict:
    from sqlalchemy import text

    env = Env(log)
    try:
        env.prepare()
        db = env.db()
        port = free_port()
        workers = env.workers(n_workers)
        web = env.gunicorn(port, web_workers, web_threads)
        _create_agents(port, ["alice"])
        log(f"  (a) starting {n_chats} chats through gunicorn")
        chats, chat_wall, _ = _start_chats(port, n_chats, concurrency, 120)
        wait_outbox_empty(db, 120)

        items = [chats[i % len(chats)] for i in range(n_msgs)]

        def send(c, chat):
            cid, headers = chat
            t0 = time.time()
            status = c.call("POST", f"/api/widget/chats/{cid}/messages", {"text": "is anyone there?"}, headers)[0]
            return status, time.time() - t0

        log(f"  (a) {n_msgs} customer messages from {concurrency} client threads, at most {seconds:.0f} s")
        cpu_web0, cpu_w0 = tree_cpu(web.pid), [proc_cpu(p.pid) for p in workers]
        busy0 = machine_busy()
        t_start = time.time()
        spies = []
        if profile_dir:
            spies = _profile({"web": _children(web.pid)[0], "worker": workers[0].pid}, min(seconds, 15), profile_dir)
        if pace:  # open loop: message k is sent at t_start + k / pace
            send_now = send

            def send(c, chat, _k=iter(range(len(items))), _lock=threading.Lock()):
                with _lock:
                    k = next(_k)
                wait = t_start + k / pace - time.time()
                if wait > 0:
                    time.sleep(wait)
                return send_now(c, chat)
        res, wall = run_threads(concurrency, items, send, seconds, port)
        for spy in spies:
            spy.wait(60)
        t_end = time.time()
        busy1 = machine_busy()
        cpu_web = tree_cpu(web.pid) - cpu_web0
        with db.connect() as conn:
            backlog = conn.execute(text("SELECT count(*) FROM events WHERE processed_at IS NULL")).scalar()
        drain = wait_outbox_empty(db, 180)
        cpu_workers = sum(proc_cpu(p.pid) for p in workers) - sum(cpu_w0)
        ok = sum(1 for _, _, (s, _) in res if s == 201)
        http_lat = [dt for _, _, (s, dt) in res if s == 201]
        with db.connect() as conn:
            rows = conn.execute(text(
                "SELECT at, processed_at FROM events WHERE type = 'message.created' AND at >= :t0 AND at <= :t1"),
                {"t0": t_start, "t1": t_end}).all()
            notes = conn.execute(text("SELECT count(*) FROM notifications WHERE template = 'new_message' "
                                      "AND at >= :t0"), {"t0": t_start}).scalar()
            last = conn.execute(text("SELECT max(processed_at) FROM events WHERE at >= :t0"), {"t0": t_start}).scalar()
        lag = [p - a for a, p in rows if p is not None]
        return {
            "chats": len(chats), "chat_rate": len(chats) / chat_wall, "sent": len(res), "ok": ok, "wall": wall,
            "rate": ok / wall, "e2e_rate": len(lag) / max(1e-9, (last or t_end) - t_start),
            "http_p50": pct(http_lat, 50), "http_p99": pct(http_lat, 99),
            "lag_p50": pct(lag, 50), "lag_p99": pct(lag, 99), "lag_max": max(lag) if lag else None,
            "backlog": backlog, "drain": drain, "notifications": notes, "events": len(rows),
            "cpu_web_ms": 1e3 * cpu_web / max(1, ok), "cpu_worker_ms": 1e3 * cpu_workers / max(1, len(lag)),
            "busy": busy_share(busy0, busy1), "pace": pace, "config": f"gunicorn gthread {web_workers}×{web_threads}, "
            f"{n_workers} chatflow workers, {concurrency} client threads",
        }
    finally:
        env.close()


# ---------------------------------------------------------------- cloning stored chats in bulk

def _shift(value, delta: float, t0: float):
    """``value`` with every timestamp near ``t0`` (within two days) moved by ``delta``."""
    if not delta:
        return value
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
        return value + delta if abs(value - t0) < 2 * 86400 else value
    if isinstance(value, dict):
        return {k: _shift(v, delta, t0) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, delta, t0) for v in value]
    return value


def _rename(value, old: str, new: str):
    return json.loads(json.dumps(value).replace(old, new))


class FixedClock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def _template_runtime(env, clock):
    from server.app import make_runtime, make_settings

    settings = make_settings({"DATABASE_URL": env.pg_url, "DATA_DIR": env.data_dir, "CLOCK": clock,
                              "RULES": (), "MAILDIR": None})
    return make_runtime(settings)


def _insert_agent(db, agent_id):
    from server import store as S

    with db.begin() as conn:
        conn.execute(S.agents.insert().values(id=agent_id, name=agent_id, departments=[], access_chats=True,
                                              status="online", is_admin=False, token_hash=S.token_hash(agent_id)))


def _snapshot(db, chat_id) -> dict:
    from sqlalchemy import select

    from server import store as S

    with db.connect() as conn:
        chat = dict(conn.execute(select(S.chats).where(S.chats.c.id == chat_id)).mappings().first())
        events = [dict(r) for r in conn.execute(select(S.events).where(S.events.c.chat_id == chat_id)
                                                .order_by(S.events.c.seq)).mappings()]
        timers = [dict(r) for r in conn.execute(select(S.timers).where(S.timers.c.chat_id == chat_id)).mappings()]
    return {"chat": chat, "events": events, "timers": timers}


def _wipe(db) -> None:
    from sqlalchemy import text

    with db.begin() as conn:
        for table in ("events", "timers", "notifications", "emails", "traces", "chats"):
            conn.execute(text(f"DELETE FROM {table}"))


def _insert_clones(db, rows_chats, rows_events, rows_timers, chunk=2000) -> None:
    from server import store as S

    with db.begin() as conn:
        for table, rows in ((S.chats, rows_chats), (S.events, rows_events), (S.timers, rows_timers)):
            for i in range(0, len(rows), chunk):
                if rows[i:i + chunk]:
                    conn.execute(table.insert(), rows[i:i + chunk])


def _clone(snap, new_id, delta=0.0, t0=0.0, with_events=True, with_timers=True):
    old = snap["chat"]["id"]
    chat = dict(snap["chat"])
    chat.update(id=new_id, token_hash=None, state=_shift(_rename(chat["state"], old, new_id), delta, t0),
                rule_state=_shift(_rename(chat["rule_state"], old, new_id), delta, t0),
                created_at=chat["created_at"] + delta, updated_at=chat["updated_at"] + delta)
    events = []
    if with_events:
        for e in snap["events"]:
            e = {k: v for k, v in e.items() if k != "seq"}
            e.update(id=e["id"].replace(old, new_id), chat_id=new_id,
                     payload=_shift(_rename(e["payload"], old, new_id), delta, t0), at=e["at"] + delta)
            events.append(e)
    timers = []
    if with_timers:
        timers = [{"chat_id": new_id, "rule_id": t["rule_id"], "due": t["due"] + delta, "lease_until": None}
                  for t in snap["timers"]]
    return chat, events, timers


# ---------------------------------------------------------------- (b) events through RQ

def _wait_exit(procs, seconds):
    """Wait for processes to exit; records each one's CPU seconds (user + system)."""
    deadline = time.monotonic() + seconds
    for p in procs:
        # os.wait4, not Popen.poll: it reaps the process and gives its CPU time
        while p.returncode is None and time.monotonic() < deadline:
            try:
                pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                p.cpu = usage.ru_utime + usage.ru_stime
                break
            time.sleep(0.05)


def bench_rq(log, n_chats, messages_per_chat, batches, n_workers, seconds) -> list:
    from sqlalchemy import text

    env = Env(log)
    out = []
    try:
        env.prepare()
        db = env.db()
        _insert_agent(db, "alice")
        runtime = _template_runtime(env, FixedClock(time.time()))
        runtime.dispatch = lambda chat_ids: None  # leave the events in the outbox
        tmpl = "c_template00000000"
        runtime.start_chat(tmpl, None, customer={"id": "u_t", "name": "T"}, channel="widget", page_url=None,
                           text="hello", fields=None)
        for i in range(messages_per_chat - 1):
            runtime.command("customer_message", tmpl, text=f"message {i}", via="widget")
        snap = _snapshot(db, tmpl)
        runtime.db.dispose()
        per_chat = len(snap["events"])
        queue = env.queue()
        for batch in batches:
            _wipe(db)
            rows = [_clone(snap, f"c_rq{i:08d}") for i in range(n_chats)]
            _insert_clones(db, [r[0] for r in rows], [e for r in rows for e in r[1]], [])
            with db.begin() as conn:
                conn.execute(text("ANALYZE"))  # fresh rows: give the planner their statistics
            ids = [r[0]["id"] for r in rows]
            t = time.perf_counter()
            for i in range(0, len(ids), batch):
                queue.enqueue("server.jobs.process_chats", ids[i:i + batch], job_timeout=600, result_ttl=60,
                              failure_ttl=86400)
            enqueue_s = time.perf_counter() - t
            log(f"  (b) {len(ids) * per_chat} events of {len(ids)} chats, {batch} chat(s) per job, "
                f"{n_workers} burst workers")
            busy0 = machine_busy()
            w0 = time.perf_counter()
            procs = env.workers(n_workers, burst=True)
            _wait_exit(procs, seconds)
            wall = time.perf_counter() - w0
            busy1 = machine_busy()
            timed_out = [p for p in procs if p.returncode is None]
            env.stop(timed_out)
            with db.connect() as conn:
                done, first, last = conn.execute(text(
                    "SELECT count(*), min(processed_at), max(processed_at) FROM events "
                    "WHERE processed_at IS NOT NULL")).one()
                notes = conn.execute(text("SELECT count(*) FROM notifications")).scalar()
            queue.empty()
            span = (last - first) if done else None
            out.append({
                "batch": batch, "chats": len(ids), "events": len(ids) * per_chat, "processed": done,
                "notifications": notes, "enqueue_s": enqueue_s, "wall": wall, "span": span,
                "rate": done / span if span else None, "rate_wall": done / wall,
                "cpu_ms": 1e3 * children_cpu(procs) / max(1, done), "workers": n_workers,
                "timed_out": bool(timed_out), "busy": busy_share(busy0, busy1),
            })
            for p in procs:
                if p in env.procs:
                    env.procs.remove(p)
        return out
    finally:
        env.close()


# ---------------------------------------------------------------- (c) deadline lateness

STAGE_DUES = (("unread_5m", 300.0), ("awaiting_10m", 600.0), ("idle_30m", 1800.0))


def bench_deadlines(log, n_chats, spread, window, n_workers, interval=0.25, drain=60.0) -> dict:
    """``n_chats`` open chats, each started and joined at an anchor spread uniformly over
    the ``spread`` seconds before the window; their three deadlines (5, 10, 30 min after
    the anchor) are armed unless already past (then fired, as the engine would have).
    The scheduler ticks on a clock that maps the window's start onto now."""
    from sqlalchemy import text

    from server.scheduler import Scheduler

    env = Env(log)
    try:
        env.prepare(rules_text=THREE_RULES)
        db = env.db()
        _insert_agent(db, "alice")
        t0 = 1_800_000_000.0
        clock = FixedClock(t0)
        runtime = _template_runtime(env, clock)
        tmpl = "c_template00000000"
        runtime.start_chat(tmpl, None, customer={"id": "u_t", "name": "T"}, channel="widget", page_url=None,
                           text="hello", fields=None)
        runtime.command("join", tmpl, agent="alice")
        stages = [_snapshot(db, tmpl)]
        for _, after in STAGE_DUES:
            clock.now = t0 + after
            runtime.run_due(t0 + after)
            stages.append(_snapshot(db, tmpl))
        assert [len(s["timers"]) for s in stages] == [3, 2, 1, 0], [s["timers"] for s in stages]
        runtime.db.dispose()
        _wipe(db)

        log(f"  (c) inserting {n_chats:,} open chats and their deadlines")
        w0 = time.perf_counter()
        start = t0 + 10 * 86400  # the window's start, on the chats' clock
        rnd = random.Random(7)
        due = {}
        n_timers = 0
        for lo in range(0, n_chats, 10_000):
            chats, timers = [], []
            for i in range(lo, min(n_chats, lo + 10_000)):
                anchor = start - spread + rnd.random() * spread
                stage = sum(1 for _, d in STAGE_DUES if anchor + d <= start)
                chat, _, tms = _clone(stages[stage], f"c_dl{i:08d}", delta=anchor - t0, t0=t0, with_events=False)
                chats.append(chat)
                timers.extend(tms)
                for t in tms:
                    due[(chat["id"], t["rule_id"])] = t["due"]
            n_timers += len(timers)
            _insert_clones(db, chats, [], timers)
        with db.begin() as conn:
            # when each notification row was written (the database's clock), for lateness
            conn.execute(text("ALTER TABLE notifications ADD COLUMN stored_at double precision "
                              "DEFAULT extract(epoch from clock_timestamp())"))
            conn.execute(text("ANALYZE"))
        insert_s = time.perf_counter() - w0
        log(f"  (c) {n_chats:,} chats, {n_timers:,} deadlines inserted in {insert_s:.1f} s; "
            f"{n_workers} workers, scheduler every {interval} s, {window:.0f} s window")

        workers = env.workers(n_workers)
        time.sleep(3.0)  # the workers have booted
        offset = time.time() + 1.0 - start  # real time = chats' time + offset
        sched_runtime = _template_runtime(env, lambda: time.time() - offset)
        queue = env.queue()
        sched = Scheduler(sched_runtime, queue, clock=lambda: time.time() - offset)
        ticks = []
        stop = threading.Event()

        def loop():
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    n = sched.tick()
                except Exception as e:  # noqa: BLE001 - counted and shown
                    n = (repr(e), 0)
                ticks.append((time.perf_counter() - t, n))
                stop.wait(interval)

        cpu_w0 = [proc_cpu(p.pid) for p in workers]
        busy0 = machine_busy()
        thread = threading.Thread(target=loop)
        thread.start()
        time.sleep(window + 2.5)  # past the window's end, so its last deadlines are claimed
        stop.set()
        thread.join(30)
        busy1 = machine_busy()
        end = start + window
        in_window = {k: d for k, d in due.items() if start <= d <= end}
        # let the workers finish what was handed out, then read when each deadline fired
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and len(queue) > 0:
            time.sleep(0.2)
        time.sleep(1.0)
        cpu_workers = sum(proc_cpu(p.pid) for p in workers) - sum(cpu_w0)
        env.stop(workers)
        with db.connect() as conn:
            rows = conn.execute(text("SELECT chat_id, template, at, stored_at FROM notifications")).all()
            # what Runtime._world's capacity count costs the database at this size, per chat handled
            plan = conn.execute(text(
                "EXPLAIN (ANALYZE, FORMAT JSON) SELECT chats.assignee, count(*) FROM chats "
                "WHERE chats.status = 'open' AND chats.assignee IS NOT NULL GROUP BY chats.assignee")).scalar()
            left = conn.execute(text("SELECT count(*) FROM timers WHERE due <= :end"), {"end": end}).scalar()
        count_ms = plan[0]["Execution Time"] if isinstance(plan, list) else json.loads(plan)[0]["Execution Time"]
        lateness, engine_early, fired_outside = [], 0, 0
        for chat_id, template, at, stored_at in rows:
            d = in_window.get((chat_id, template))
            if d is None:
                fired_outside += 1
                continue
            lateness.append(stored_at - offset - d)
            if at < d:
                engine_early += 1
        tick_s = [t for t, _ in ticks]
        errors = [n for _, n in ticks if isinstance(n[0], str)]
        sched_runtime.db.dispose()
        return {
            "chats": n_chats, "timers": n_timers, "spread": spread, "window": window, "insert_s": insert_s,
            "due_in_window": len(in_window), "fired": len(lateness), "rate": len(in_window) / window,
            "late_p50": pct(lateness, 50), "late_p99": pct(lateness, 99), "late_max": max(lateness, default=None),
            "early": sum(1 for x in lateness if x < 0), "engine_early": engine_early, "min_late": min(lateness, default=None),
            "fired_outside": fired_outside, "not_fired": len(in_window) - len(lateness), "left_due": left,
            "tick_p50": pct(tick_s, 50), "tick_p99": pct(tick_s, 99), "ticks": len(ticks), "tick_errors": errors[:3],
            "cpu_worker_ms": 1e3 * cpu_workers / max(1, len(lateness)), "workers": n_workers,
            "busy": busy_share(busy0, busy1), "count_query_ms": count_ms,
        }
    finally:
        env.close()


# ---------------------------------------------------------------- (d) SSE streams

class SSEReader(threading.Thread):
    """Many SSE streams read by one thread (selectors), each over its own socket with an
    HTTP/1.0 request (no chunked encoding). Records (receive time, stream index, frame)."""

    def __init__(self, port: int, requests: list):
        super().__init__(daemon=True)
        self.port, self.requests = port, requests
        self.frames: list = []
        self.status: dict = {}
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self):
        import selectors

        sel = selectors.DefaultSelector()
        socks = []
        for i, (path, headers) in enumerate(self.requests):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{head}\r\n".encode())
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, [i, b"", False])
            socks.append(s)
        self.ready.set()
        open_ = len(socks)
        while open_ and not self.stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                state = key.data
                try:
                    chunk = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                now = time.time()
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_ -= 1
                    continue
                state[1] += chunk
                if not state[2]:
                    if b"\r\n\r\n" not in state[1]:
                        continue
                    head, state[1] = state[1].split(b"\r\n\r\n", 1)
                    self.status[state[0]] = int(head.split(b" ", 2)[1])
                    state[2] = True
                while b"\n\n" in state[1]:
                    block, state[1] = state[1].split(b"\n\n", 1)
                    self.frames.append((now, state[0], block.decode("utf-8")))
        for s in socks:
            s.close()


def _frame_data(block: str):
    """(event, data) of an SSE frame, or (None, None) for a comment or retry."""
    event, data = None, None
    for line in block.split("\n"):
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
    return event, data


def bench_streams(log, n_streams, n_events, rate, web_workers, web_threads, n_workers, seconds) -> dict:
    """``n_streams`` customers' streams open at once; agent replies to random chats at
    ``rate`` per second; delivery = when the frame is read minus the message's ``at``
    (taken by the web process when the reply command starts, before its commit)."""
    env = Env(log)
    try:
        env.prepare()
        port = free_port()
        workers = env.workers(n_workers)
        web = env.gunicorn(port, web_workers, web_threads)
        alice = _create_agents(port, ["alice"])["alice"]
        log(f"  (d) {n_streams} chats, joined by alice")
        chats, _, _ = _start_chats(port, n_streams, 8, 120)

        def join(c, chat):
            return c.call("POST", f"/api/chats/{chat[0]}/join", None, alice)[0]

        run_threads(8, chats, join, 120, port)
        reader = SSEReader(port, [(f"/api/widget/chats/{cid}/stream", h) for cid, h in chats])
        reader.start()
        reader.ready.wait(60)
        # every stream has sent the chat's first message: all are open and waiting
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len({i for _, i, b in list(reader.frames) if "event: message" in b}) < len(chats):
            time.sleep(0.1)
        opened = len({i for _, i, b in list(reader.frames) if "event: message" in b})
        # what 300 open, idle streams cost the web processes
        idle0, busy_idle0 = tree_cpu(web.pid), machine_busy()
        time.sleep(5.0)
        idle_cpu, busy_idle = (tree_cpu(web.pid) - idle0) / 5.0, busy_share(busy_idle0, machine_busy())
        log(f"  (d) {opened} streams open; {n_events} replies at {rate}/s")
        rnd = random.Random(3)
        plan = [(k, chats[rnd.randrange(len(chats))]) for k in range(n_events)]
        t_begin = time.time() + 0.5
        posted = {}

        def reply(c, item):
            k, (cid, _) = item
            wait = t_begin + k / rate - time.time()
            if wait > 0:
                time.sleep(wait)
            posted[f"r{k}"] = time.time()
            return c.call("POST", f"/api/chats/{cid}/reply", {"text": f"r{k}"}, alice)[0]

        busy0 = machine_busy()
        cpu_web0, cpu_w0 = tree_cpu(web.pid), sum(proc_cpu(p.pid) for p in workers)
        res, wall = run_threads(8, plan, reply, seconds, port)
        time.sleep(3.0)  # the last replies' deliveries
        busy1 = machine_busy()
        cpu_web, cpu_w = tree_cpu(web.pid) - cpu_web0, sum(proc_cpu(p.pid) for p in workers) - cpu_w0
        reader.stop.set()
        reader.join(10)
        delivery, from_post = [], []
        for t, i, block in reader.frames:
            event, data = _frame_data(block)
            if event == "message" and data["text"] in posted:
                delivery.append(t - data["at"])
                from_post.append(t - posted[data["text"]])
        ok = sum(1 for _, _, s in res if s == 201)
        return {
            "streams": n_streams, "opened": opened, "status_ok": sum(1 for s in reader.status.values() if s == 200),
            "posted": len(res), "ok": ok, "delivered": len(delivery), "rate": rate, "wall": wall,
            "p50": pct(delivery, 50), "p99": pct(delivery, 99), "max": max(delivery, default=None),
            "post_p50": pct(from_post, 50), "post_p99": pct(from_post, 99), "busy": busy_share(busy0, busy1),
            "idle_web_cpu": idle_cpu, "idle_busy": busy_idle,
            "cpu_web_ms": 1e3 * cpu_web / max(1, ok), "cpu_worker_ms": 1e3 * cpu_w / max(1, ok),
            "config": f"gunicorn gthread {web_workers}×{web_threads}, {n_workers} chatflow workers",
        }
    finally:
        env.close()


def summarize_profile(path: str, top: int = 25, root: str = str(ROOT)) -> list:
    """(inclusive share, self share, 'file:function') of a py-spy raw profile, by
    inclusive share; idle threads (waiting in select/poll/wait) are left out."""
    import re
    from collections import Counter

    incl, self_, total = Counter(), Counter(), 0
    idle = re.compile(r"^(wait|select|poll|_wait_for_tstate_lock|accept|sleep|get|readline|recv_into|_read_status"
                      r"|handle_events|run_for_one|run|_worker|_bootstrap_inner|_bootstrap)\b")
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        if idle.match(leaf.split(" ", 1)[0]) and ("threading.py" in leaf or "selectors.py" in leaf
                                                    or "socket" in leaf or "queue.py" in leaf or "time" in leaf):
            continue
        n = int(n)
        total += n
        names = []
        for f in frames:
            m = re.match(r"(.+?) \((.+?)(?::\d+)?\)$", f)
            name = f"{m.group(2).replace(root + '/', '')}:{m.group(1)}" if m else f
            names.append(name)
        for name in set(names):
            incl[name] += n
        self_[names[-1]] += n
    return [(incl[k] / total, self_[k] / total, k) for k, _ in incl.most_common(top)], total


# ---------------------------------------------------------------- the benchmark as run.py calls it

def run(quick: bool = False, log=print, profile_dir: str | None = None) -> dict:
    """Every part, at full or quick sizes; the figures as a dict for :func:`render`."""
    res = {"quick": quick}
    web = dict(web_workers=2, web_threads=16, n_workers=2)  # as README's gunicorn line: threads feed group commit
    log("(D) service: (a) customer messages through gunicorn")
    sat = bench_messages(log, n_chats=200 if quick else 1000, n_msgs=2000 if quick else 20000,
                         seconds=10 if quick else 30, concurrency=16, profile_dir=profile_dir, **web)
    pace = max(5.0, round(sat["rate"] / 2))
    paced_s = 10 if quick else 20
    paced = bench_messages(log, n_chats=200 if quick else 1000, n_msgs=int(pace * paced_s), seconds=paced_s + 10,
                           concurrency=16, pace=pace, **web)
    res["messages"] = [sat, paced]
    log("(D) service: (b) events through RQ")
    res["rq"] = bench_rq(log, n_chats=500 if quick else 3000, messages_per_chat=5, batches=(100, 1), n_workers=2,
                         seconds=300)
    log("(D) service: (c) deadline lateness")
    sizes = [(10_000, 1800.0)] if quick else [(100_000, 1800.0), (100_000, 7200.0), (10_000, 1800.0)]
    res["deadlines"] = [bench_deadlines(log, n, spread, window=15.0 if quick else 30.0, n_workers=2)
                        for n, spread in sizes]
    log("(D) service: (d) concurrent SSE streams")
    n_streams = 100 if quick else 300
    res["streams"] = [bench_streams(log, n_streams=n_streams, n_events=int(rate * (10 if quick else 30)), rate=rate,
                                    web_workers=2, web_threads=n_streams // 2 + 50, n_workers=2, seconds=120)
                      for rate in ((10.0,) if quick else (10.0, 30.0))]
    return res


def _verdict(value, ok) -> str:
    return common.verdict(None if value is None else ok)


def render(res: dict) -> str:
    out = []
    sat, paced = res["messages"]
    rows = []
    for r in (sat, paced):
        rows.append([("closed loop, 16 client threads" if not r["pace"] else f"paced at {r['pace']:.0f}/s (open loop)"),
                     f"{r['ok']:,} of {r['sent']:,} in {r['wall']:.1f} s", f"{r['rate']:.0f}/s", f"{r['e2e_rate']:.0f}/s",
                     f"{ms(r['http_p50'])} / {ms(r['http_p99'])}", f"{ms(r['lag_p50'])} / {ms(r['lag_p99'])}",
                     f"{r['backlog']:,}; " + ("not in 180 s" if r["drain"] is None else f"{r['drain']:.1f} s"),
                     f"{r['cpu_web_ms']:.1f} ms + {r['cpu_worker_ms']:.1f} ms", f"{r['busy'] * 100:.0f} %"])
    out.append(common.table(
        ["load", "messages (201)", "msgs/s (HTTP)", "msgs/s processed", "HTTP p50 / p99",
         "commit → notification stored p50 / p99", "backlog at end; drained in", "CPU per msg: web + worker",
         "machine busy"], rows,
        title=f"(D-a) Customer messages through gunicorn into PostgreSQL ({sat['config']}; "
              f"{sat['chats']:,} chats started first at {sat['chat_rate']:.0f}/s)"))
    rows = []
    for r in res["rq"]:
        rows.append([f"{r['batch']} chat(s) per job", f"{r['events']:,} ({r['chats']:,} chats × {r['events'] // r['chats']})",
                     f"{r['processed']:,}", f"{r['wall']:.1f} s", "—" if r["rate"] is None else f"{r['rate']:.0f}/s",
                     f"{r['cpu_ms']:.2f} ms", f"{r['notifications']:,}", f"{r['busy'] * 100:.0f} %"])
    out.append(common.table(
        ["jobs", "events in the outbox", "processed", "workers' wall (boot to exit)", "events/s (first→last processed)",
         "worker CPU per event", "notifications stored", "machine busy"], rows,
        title=f"(D-b) Events through RQ: a filled outbox drained by {res['rq'][0]['workers']} `chatflow worker --burst`"))
    rows = []
    for r in res["deadlines"]:
        rows.append([f"{r['chats']:,}", f"{r['timers']:,}", f"{r['spread'] / 60:.0f} min", f"{r['rate']:.0f}/s",
                     f"{r['fired']:,} of {r['due_in_window']:,}", f"{ms(r['late_p50'])} / {ms(r['late_p99'])}",
                     ms(r["late_max"]), f"{r['early']}, engine {r['engine_early']} (min {ms(r['min_late'])})",
                     f"{ms(r['tick_p50'])} / {ms(r['tick_p99'])}", f"{r['cpu_worker_ms']:.1f} ms",
                     f"{r['count_query_ms']:.1f} ms", f"{r['busy'] * 100:.0f} %"])
    out.append(common.table(
        ["open chats", "deadlines armed", "anchors spread over", "due rate", "fired (of due in the window)",
         "lateness p50 / p99", "max", "early", "Scheduler.tick p50 / p99", "worker CPU per firing",
         "capacity count query", "machine busy"], rows,
        title=f"(D-c) Deadline lateness: three state rules, `Scheduler.tick` every 0.25 s + "
              f"{res['deadlines'][0]['workers']} workers, {res['deadlines'][0]['window']:.0f} s window"))
    rows = []
    for r in res["streams"]:
        rows.append([f"{r['opened']} of {r['streams']}", f"{r['rate']:.0f}/s", f"{r['delivered']} of {r['ok']}",
                     f"{ms(r['p50'])} / {ms(r['p99'])}", ms(r["max"]), f"{ms(r['post_p50'])} / {ms(r['post_p99'])}",
                     f"{r['idle_web_cpu'] * 100:.1f} % of a core", f"{r['cpu_web_ms']:.1f} + {r['cpu_worker_ms']:.1f} ms",
                     f"{r['busy'] * 100:.0f} %"])
    out.append(common.table(
        ["streams open", "replies", "delivered", "delivery p50 / p99 (message at → frame read)", "max",
         "POST sent → frame read p50 / p99", "web CPU, streams idle", "CPU per reply: web + worker", "machine busy"], rows,
        title=f"(D-d) Concurrent SSE streams (customer streams; {res['streams'][0]['config']})"))
    targets = []
    quick = res["quick"]
    targets.append(["(a) ≥ 1,000 customer messages/s", f"{sat['rate']:.0f}/s", _verdict(sat["rate"], sat["rate"] >= 1000)])
    targets.append(["(a) p99 commit → notification stored < 250 ms",
                    f"{ms(sat['lag_p99'])} closed loop; {ms(paced['lag_p99'])} paced at {paced['pace']:.0f}/s",
                    _verdict(sat["lag_p99"], sat["lag_p99"] is not None and sat["lag_p99"] < 0.25)])
    best = max(res["rq"], key=lambda r: r["rate"] or 0)
    batched = res["rq"][0]
    targets.append(["(b) ≥ 5,000 events/s through RQ, batched", f"{batched['rate'] or 0:.0f}/s "
                    f"({batched['batch']} chats per job); best {best['rate'] or 0:.0f}/s",
                    _verdict(batched["rate"], (batched["rate"] or 0) >= 5000)])
    for r in res["deadlines"]:
        ok = (r["late_p99"] is not None and r["late_p99"] <= 1.0 and r["early"] == 0 and r["engine_early"] == 0
              and r["not_fired"] == 0)
        targets.append([f"(c) deadline lateness p99 ≤ 1 s, never early — {r['chats']:,} open chats, "
                        f"{r['rate']:.0f} due/s", f"p99 {ms(r['late_p99'])}, {r['early']} early, "
                        f"{r['not_fired']:,} not fired {r['window']:.0f}+60 s on", _verdict(r["late_p99"], ok)])
    for r in res["streams"]:
        targets.append([f"(d) {r['streams']} concurrent SSE streams, p99 delivery < 100 ms ({r['rate']:.0f} replies/s)",
                        f"{r['opened']} open, p99 {ms(r['p99'])}",
                        _verdict(r["p99"], r["opened"] == r["streams"] == 300 and r["p99"] is not None and r["p99"] < 0.1)
                        if not quick else "n/a (quick)"])
    out.append(common.table(["target", "measured", "verdict"], targets, title="(D) Targets"))
    return "\n\n".join(out)
