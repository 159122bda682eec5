"""The scaled service as real processes on this machine, for fault tests and the soak.

A scratch PostgreSQL database, a Redis of the test's own (``redis-server`` on a free
loopback port, so stopping it disturbs nobody else), gunicorn web processes, ``chatflow
worker`` processes and one ``chatflow scheduler``, each in its own session and ended by
its process group. Around them: an SMTP server that counts what it is given, agent
event streams (SSE) that count what they receive, and customers sending messages at a
steady rate. Every wait here has a deadline.

Imported by tests/faults/ and bench/soak.py (by path); nothing here imports bench code.
"""
from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # gunicorn and chatflow of this venv
PG_ADMIN = os.environ.get("CHATFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_TOKEN = "fault-admin"
ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}
FULL = os.environ.get("CHATFLOW_FULL_FAULTS") == "1"  # the full sizes; the defaults keep CI short

# The default workflow plus two rules with deadlines short enough to fall due during a run.
# email_offline_2s stands in for default.email_unread_replies (10 minutes): with both, a
# run longer than ten minutes (the soak) rightly sends a chat two emails, one per rule.
FAULT_RULES = '''\
disable default.email_unread_replies

rule unread_3s "The assignee has not read the customer for 3 seconds" {
  when chat.unread_by_assignee for 3s
  then notify assignee template "unread_3s"
}

rule email_offline_2s "The customer left with unread replies: one email" {
  when chat.unread_by_customer for 2s and customer.offline
  then email customer template "unread_replies"
}
'''


class Failure(AssertionError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, seconds: float, what: str, poll: float = 0.1):
    """Poll ``predicate`` until it returns a true value (returned); Failure after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"{what}: not within {seconds} s")
        time.sleep(poll)


def rss_kib(pid: int) -> int | None:
    """Resident memory of a live process in KiB (from /proc), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# ---------------------------------------------------------------- Redis of our own

class OwnRedis:
    """A ``redis-server`` on a free loopback port that the test may stop and start."""

    def __init__(self):
        if not shutil.which("redis-server"):
            raise Failure("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chatflow-redis-")
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(self.ping, 10, f"redis-server on port {self.port} to answer")

    def ping(self) -> bool:
        from redis import Redis
        from redis.exceptions import RedisError

        try:
            return bool(Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # an outage, not a shutdown: nothing is saved anyway
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- SMTP that counts

class SmtpCounter:
    """An aiosmtpd server on a free port counting each message it accepts by Message-ID.
    ``on_data`` (optional) is called with the Message-ID before the server answers 250."""

    def __init__(self, on_data=None):
        from aiosmtpd.controller import Controller

        self.by_id: Counter = Counter()
        self.on_data = on_data
        self.lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.url = f"smtp://127.0.0.1:{self.controller.port}"

    async def handle_DATA(self, server, session, envelope):
        from email import message_from_bytes

        mid = message_from_bytes(envelope.original_content or envelope.content)["Message-ID"]
        with self.lock:
            self.by_id[mid] += 1
        if self.on_data is not None:
            self.on_data(mid)
        return "250 OK"

    def total(self) -> int:
        with self.lock:
            return sum(self.by_id.values())

    def twice(self) -> dict:
        with self.lock:
            return {k: n for k, n in self.by_id.items() if n > 1}

    def close(self) -> None:
        self.controller.stop()


# ---------------------------------------------------------------- HTTP

class Http:
    """One keep-alive HTTP connection. ``call`` retries a 503 (the service says the
    database is away: nothing was written) after its Retry-After, up to ``retry_for``
    seconds; a connection error is not retried (its outcome is unknown) but raised.
    A connection idle for longer than gunicorn keeps one open (2 s) is not reused: the
    server may have closed it, and a request written into it would fail with a broken
    pipe though the service is well (pooled HTTP clients check the same before reuse)."""

    IDLE = 1.0  # seconds; gunicorn's default keep-alive is 2

    def __init__(self, port: int, timeout: float = 30):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.used = time.monotonic()

    def once(self, method, path, body=None, headers=None):
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        if time.monotonic() - self.used > self.IDLE:
            self.conn.close()  # the next request opens a new connection
        try:
            self.conn.request(method, path, body=None if body is None else json.dumps(body), headers=h)
            r = self.conn.getresponse()
            data = r.read()
            self.used = time.monotonic()
            return r.status, data, r.getheader("Retry-After")
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            raise

    def call(self, method, path, body=None, headers=None, retry_for: float = 60.0):
        deadline = time.monotonic() + retry_for
        while True:
            try:
                status, data, retry_after = self.once(method, path, body, headers)
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # nothing was sent: safe to try again
                continue
            if status != 503 or time.monotonic() > deadline:
                return status, (json.loads(data) if data else None)
            time.sleep(min(float(retry_after or 1), 1.0))

    def close(self):
        self.conn.close()


# ---------------------------------------------------------------- agent event streams

class AgentStream:
    """An agent's ``/api/stream`` read on a thread, reconnecting with Last-Event-ID when
    the stream ends or breaks; counts each notification id it receives."""

    def __init__(self, port: int, headers: dict, name: str = "sse"):
        self.port, self.headers, self.name = port, headers, name
        self.received: Counter = Counter()
        self.last_id = 0
        self.reconnects = 0
        self.arrivals: list[tuple[int, int]] = []
        self.latencies: list[float] = []  # seconds from a notification's `at` to its arrival
        self._stop = threading.Event()
        self._conn = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                self._conn = conn
                h = dict(self.headers)
                if self.last_id:
                    h["Last-Event-ID"] = str(self.last_id)
                conn.request("GET", "/api/stream", headers=h)
                r = conn.getresponse()
                if r.status != 200:
                    r.read()
                    raise OSError(f"stream answered {r.status}")
                block = []
                while not self._stop.is_set():
                    line = r.readline()  # through the chunked transfer decoding (r.fp would show the chunk sizes)
                    if not line:
                        break  # the stream's time is up: reconnect
                    line = line.decode("utf-8").rstrip("\r\n")
                    if line:
                        block.append(line)
                        continue
                    self._frame(block)
                    block = []
            except (OSError, http.client.HTTPException, ValueError):
                pass
            finally:
                if self._conn is not None:
                    self._conn.close()
            if not self._stop.is_set():
                self.reconnects += 1
                self._stop.wait(0.5)

    def _frame(self, block):
        fields = dict(line.split(": ", 1) for line in block if ": " in line and not line.startswith(":"))
        if fields.get("event") == "notification":
            nid = int(fields["id"])
            self.received[nid] += 1
            self.arrivals.append((self.reconnects, nid))  # (connection number, id): where a duplicate came from
            self.last_id = max(self.last_id, nid)
            self.latencies.append(time.time() - json.loads(fields["data"])["at"])

    def close(self):
        self._stop.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(25)


# ---------------------------------------------------------------- the service

class Service:
    """A scratch database, the processes of the scaled service on it, and their end."""

    def __init__(self, redis_url: str, smtp_url: str | None = None, queue: str | None = None,
                 label: str = "faults", rate_limits: str = "off"):
        import psycopg

        self.admin = None
        errors = []
        for url in (PG_ADMIN, PG_ADMIN.replace("postgres@", "root@", 1)):
            try:
                self.admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
                break
            except psycopg.Error as e:
                errors.append(f"{url}: {e}")
        if self.admin is None:
            raise Failure("PostgreSQL is not reachable (start it as .ci/run does): " + "; ".join(errors))
        self.name = f"chatflow_{label}_{os.getpid()}_{secrets.token_hex(3)}"
        self.admin.execute(f'CREATE DATABASE "{self.name}"')
        self.pg_url = url.rsplit("/", 1)[0] + "/" + self.name
        self.redis_url = redis_url
        self.rate_limits = rate_limits
        self.smtp_url = smtp_url
        self.queue_name = queue or f"chatflow-{label}-{secrets.token_hex(4)}"
        self.data_dir = tempfile.mkdtemp(prefix=f"chatflow-{label}-")
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = None
        self._db = None

    # -- setup

    def env(self) -> dict:
        e = dict(os.environ)
        e.update(DATABASE_URL=self.pg_url, REDIS_URL=self.redis_url, CHATFLOW_QUEUE=self.queue_name,
                 CHATFLOW_ADMIN_TOKEN=ADMIN_TOKEN, CHATFLOW_DATA_DIR=self.data_dir, PYTHONUNBUFFERED="1",
                 SECRET_KEY="fault-secret",
                 # one address sends every customer's traffic here; the limits have their own test
                 CHATFLOW_RATE_LIMITS=self.rate_limits)
        if self.smtp_url:
            e["SMTP_URL"] = self.smtp_url
        return e

    def prepare(self, rules_text: str = FAULT_RULES) -> None:
        """Migrate and activate the rule set once, before any process starts."""
        from server.app import create_app

        path = Path(self.data_dir) / "faults.rules"
        path.write_text(rules_text, encoding="utf-8")
        app = create_app({"DATABASE_URL": self.pg_url, "DATA_DIR": self.data_dir, "ADMIN_TOKEN": ADMIN_TOKEN,
                          "TIMERS": False, "RULES": (str(path),), "RULE_DEFAULTS": True})
        app.extensions["chatflow"].db.dispose()

    def db(self):
        if self._db is None:
            from sqlalchemy import create_engine

            self._db = create_engine(self.pg_url.replace("postgresql://", "postgresql+psycopg://", 1),
                                     pool_pre_ping=True)
        return self._db

    # -- processes

    def start(self, name: str, args: list) -> subprocess.Popen:
        log = open(Path(self.data_dir) / f"{name}.log", "ab")
        p = subprocess.Popen(args, cwd=str(ROOT), env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        log.close()
        p.log_path = str(Path(self.data_dir) / f"{name}.log")
        self.procs[name] = p
        return p

    def web(self, workers: int = 2, threads: int = 16) -> int:
        self.port = free_port()
        self.start("web", [str(BIN / "gunicorn"), "-k", "gthread", "-w", str(workers), "--threads", str(threads),
                           "-b", f"127.0.0.1:{self.port}", "--timeout", "120", "--graceful-timeout", "3",
                           "--log-level", "warning", "server.app:create_app()"])
        c = Http(self.port, timeout=5)
        try:
            wait_until(lambda: _healthy(c), 60, "gunicorn to answer /healthz")
        finally:
            c.close()
        return self.port

    def worker(self, name: str) -> subprocess.Popen:
        return self.start(name, [str(BIN / "chatflow"), "worker"])

    def workers_ready(self, seconds: float = 60) -> None:
        """Wait until every live worker process has registered with RQ (``chatflow worker``
        exits if Redis does not answer while it starts)."""
        from redis import Redis
        from rq import Worker

        r = Redis.from_url(self.redis_url, socket_connect_timeout=1, socket_timeout=2)

        def ready():
            mine = {p.pid for name, p in self.procs.items() if name.startswith("worker") and p.poll() is None}
            return mine <= {w.pid for w in Worker.all(connection=r)}
        wait_until(ready, seconds, "the workers to register with RQ", poll=0.2)

    def scheduler(self, interval: float = 0.25) -> subprocess.Popen:
        return self.start("scheduler", [str(BIN / "chatflow"), "scheduler", "--interval", str(interval)])

    def kill(self, name: str, sig=signal.SIGKILL) -> None:
        p = self.procs.pop(name)
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)

    def pids(self) -> dict:
        """{name: pid} of every live process, gunicorn's workers as web.1, web.2, …"""
        out = {}
        for name, p in self.procs.items():
            if p.poll() is None:
                out[name] = p.pid
                for i, child in enumerate(children(p.pid), 1):
                    out[f"{name}.{i}"] = child
        return out

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self.data_dir, f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        for name in list(self.procs):
            try:
                self.kill(name, signal.SIGKILL)
            except Exception:
                pass
        if self._db is not None:
            self._db.dispose()
        try:
            from redis import Redis

            r = Redis.from_url(self.redis_url, socket_connect_timeout=1, socket_timeout=2)
            keys = list(r.scan_iter(f"rq:*{self.queue_name}*", count=1000))
            if keys:
                r.delete(*keys)
        except Exception:
            pass
        try:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            self.admin.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- the database, as a restart sees it

    def terminate_backends(self) -> int:
        """What a PostgreSQL restart does to the service: every connection to the scratch
        database is closed under it (the shared server itself keeps running)."""
        rows = self.admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = %s AND pid <> pg_backend_pid()", (self.name,)).fetchall()
        return len(rows)

    def scalar(self, sql: str, **params):
        from sqlalchemy import text

        with self.db().connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params) -> list:
        from sqlalchemy import text

        with self.db().connect() as conn:
            return conn.execute(text(sql), params).all()

    # -- RQ: which worker is in the middle of a batch

    def busy_worker(self):
        """(process name, job id, chats in the job) of one of our workers running a job now, or None."""
        from redis import Redis
        from rq import Worker

        r = Redis.from_url(self.redis_url, socket_connect_timeout=1, socket_timeout=2)
        mine = {p.pid: name for name, p in self.procs.items() if name.startswith("worker") and p.poll() is None}
        for w in Worker.all(connection=r):
            if w.pid in mine:
                job_id = w.get_current_job_id()
                if job_id:
                    try:
                        from rq.job import Job
                        from rq.serializers import JSONSerializer

                        chats = len(Job.fetch(job_id, connection=r, serializer=JSONSerializer).args[0])
                    except Exception:  # the job ended meanwhile
                        chats = 0
                    return mine[w.pid], job_id, chats
        return None


def _healthy(c: Http) -> bool:
    try:
        return c.once("GET", "/healthz")[0] == 200
    except OSError:
        return False
