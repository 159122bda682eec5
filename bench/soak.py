"""(F) Soak: the scaled service under steady mixed traffic for a bounded time.

    python bench/soak.py --minutes 10      # the run recorded in bench/RESULTS.md
    python bench/soak.py --minutes 1       # a quick look

Starts, on this machine and loopback only: a redis-server of its own on a free port, a
scratch PostgreSQL database, gunicorn (2 processes × 16 threads), two `chatflow worker`
and one `chatflow scheduler` (tests/faults/scaled_service.py), an SMTP server that counts.
Customer threads start chats and send messages at a steady rate; operator threads list
chats, join, reply and read; two agent event streams listen. Every 10 s the resident
memory of each process is sampled. At the end: latency percentiles per request kind, the
memory of each process (first sample after warm-up, middle, last), what was processed,
and the same end checks as the fault tests (every message stored once, every event
processed, no notification or email twice). Everything it started is ended, the
database dropped.
"""
from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "faults"))

from scaled_service import ADMIN, AgentStream, Http, OwnRedis, Service, SmtpCounter, rss_kib, wait_until  # noqa: E402
from workload import Chat, Workload, problems, settled  # noqa: E402


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def ms(v):
    return "—" if v is None else f"{v * 1e3:.1f} ms"


def table(headers, rows) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


class Soak(Workload):
    """The fault tests' workload, run open-ended: customers start chats and talk,
    operators act, for ``seconds``; each chat is one of the workload's kinds."""

    def __init__(self, port, seconds, customers, operators, rate, op_rate):
        self.seconds, self.customers, self.operators, self.op_rate = seconds, customers, operators, op_rate
        super().__init__(port, messages=0, threads=customers, rate=rate)
        self.chats = []
        self.actions = 0
        self._chat_lock = threading.Lock()

    def customer_loop(self, deadline, rnd):
        c = Http(self.port)
        try:
            while time.monotonic() < deadline:
                with self._chat_lock:
                    r = rnd.random()
                    ch = Chat(len(self.chats), "plain" if r < 0.6 else "joined" if r < 0.85 else "email")
                    self.chats.append(ch)
                for step in self._chat_steps(ch):  # a chat started is finished, so the end checks hold
                    step(c)
        finally:
            c.close()

    def operator_loop(self, deadline, rnd):
        c = Http(self.port)
        interval = self.operators / self.op_rate
        try:
            while time.monotonic() < deadline:
                time.sleep(rnd.uniform(0.5, 1.5) * interval)
                status, data = self._timed(c, "list_chats", "GET", "/api/chats", None, self.alice)
                if status != 200:
                    self.errors.append(f"GET /api/chats: {status}")
                    continue
                self.actions += 1
                chats = data.get("chats") or []
                if chats:
                    cid = rnd.choice(chats)["id"]
                    status, _ = self._timed(c, "chat_detail", "GET", f"/api/chats/{cid}", None, self.alice)
                    self.actions += 1
                    if status != 200:
                        self.errors.append(f"GET /api/chats/{cid}: {status}")
        finally:
            c.close()

    def run(self, seconds=None):
        deadline = time.monotonic() + self.seconds
        rnd = random.Random(7)
        ts = [threading.Thread(target=self.customer_loop, args=(deadline, random.Random(rnd.random())), daemon=True)
              for _ in range(self.customers)]
        ts += [threading.Thread(target=self.operator_loop, args=(deadline, random.Random(rnd.random())), daemon=True)
               for _ in range(self.operators)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(self.seconds + 60)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=25.0, help="customer messages per second (default 25)")
    ap.add_argument("--customers", type=int, default=6)
    ap.add_argument("--operators", type=int, default=3)
    ap.add_argument("--op-rate", type=float, default=3.0, help="operator polls per second in all (default 3)")
    args = ap.parse_args(argv)
    seconds = args.minutes * 60

    redis = OwnRedis()
    smtp = SmtpCounter()
    service = None
    streams = []
    try:
        redis.start()
        service = Service(redis.url, smtp.url, label="soak")
        service.prepare()
        port = service.web(workers=2, threads=16)
        service.worker("worker0")
        service.worker("worker1")
        service.scheduler()
        service.workers_ready()
        soak = Soak(port, seconds, args.customers, args.operators, args.rate, args.op_rate)
        streams = [AgentStream(port, soak.alice, "sse-1"), AgentStream(port, soak.alice, "sse-2")]
        samples = []  # (t, {name: rss KiB}, backlog)
        t0 = time.monotonic()
        traffic = threading.Thread(target=soak.run, daemon=True)
        traffic.start()
        print(f"soak: {args.minutes:g} min, {args.rate:g} customer msgs/s from {args.customers} threads, "
              f"{args.operators} operators, 2 agent streams; port {port}", file=sys.stderr)
        while traffic.is_alive() and time.monotonic() - t0 < seconds + 90:
            pids = service.pids()
            samples.append((time.monotonic() - t0, {n: rss_kib(p) for n, p in pids.items()},
                            service.scalar("SELECT count(*) FROM events WHERE processed_at IS NULL")))
            print(f"  t={samples[-1][0]:5.0f} s sent={soak.sent} backlog={samples[-1][2]} "
                  f"rss(MiB)={ {n: round((v or 0) / 1024) for n, v in samples[-1][1].items()} }", file=sys.stderr)
            traffic.join(10)
        wall = time.monotonic() - t0
        time.sleep(4)  # the last chats' deadlines (3 s) fall due
        wait_until(lambda: settled(service, soak, smtp), 120, "the service to settle after the soak", poll=0.5)
        last = service.scalar("SELECT max(id) FROM notifications WHERE agent_id = 'alice'") or 0
        wait_until(lambda: all(s.last_id >= last for s in streams), 60, "the streams to catch up", poll=0.5)
        found = problems(service, soak, smtp, streams, streams_complete=False)
        report(args, soak, samples, streams, wall, found, service, smtp)
        return 1 if found or soak.errors else 0
    finally:
        for s in streams:
            s.close()
        if service is not None:
            service.close()
        smtp.close()
        redis.close()


def report(args, soak, samples, streams, wall, found, service, smtp) -> None:
    print(f"\n### (F) Soak: {args.minutes:g} min of mixed traffic ({time.strftime('%Y-%m-%d')})\n")
    msgs = sum(len(ch.acked) for ch in soak.chats)
    print(table(["traffic", "count", "rate", "errors"], [
        ["customer messages (201)", f"{msgs:,}", f"{msgs / wall:.1f}/s", len(soak.errors)],
        ["chats started", f"{len(soak.chats):,}", f"{len(soak.chats) / wall:.2f}/s", ""],
        ["operator requests", f"{soak.actions:,}", f"{soak.actions / wall:.1f}/s", ""],
        ["notifications stored",
         f"{service.scalar('SELECT count(*) FROM notifications'):,}", "", ""],
        ["emails at the SMTP server", smtp.total(), "", len(smtp.twice())],
    ]))
    print()
    rows = []
    for kind, lat in sorted(soak.latencies.items()):
        rows.append([kind, f"{len(lat):,}", ms(pct(lat, 50)), ms(pct(lat, 95)), ms(pct(lat, 99)), ms(max(lat))])
    for s in streams:
        lat = s.latencies
        rows.append([f"{s.name}: notification at → frame", f"{len(lat):,}", ms(pct(lat, 50)), ms(pct(lat, 95)),
                     ms(pct(lat, 99)), ms(max(lat) if lat else None)])
    print(table(["request", "n", "p50", "p95", "p99", "max"], rows))
    print()
    warm = [s for s in samples if s[0] >= min(60.0, args.minutes * 60 * 0.2)] or samples
    first, mid, last = warm[0], warm[len(warm) // 2], warm[-1]
    mem = []
    for name in sorted(last[1]):
        a, b, c = first[1].get(name), mid[1].get(name), last[1].get(name)
        if a and c:
            mem.append([name, f"{a / 1024:.1f}", f"{(b or 0) / 1024:.1f}", f"{c / 1024:.1f}",
                        f"{(c - a) / 1024:+.1f} MiB ({(c - a) / a * 100:+.1f} %)"])
    print(table([f"process RSS (MiB) at t={first[0]:.0f} s / {mid[0]:.0f} s / {last[0]:.0f} s", "first", "middle",
                 "last", "growth"], mem))
    print(f"\nbacklog (unprocessed events) max {max(s[2] for s in samples)}, at the end {samples[-1][2]}; "
          f"stream misses (see tests/faults/test_stream_gaps.py): "
          + ", ".join(f"{s.name} {len(set(r[0] for r in service.rows('SELECT id FROM notifications WHERE agent_id = :a', a='alice')) - set(s.received))}"
                      for s in streams))
    for s in streams:
        dups = {i for i, n in s.received.items() if n > 1}
        if dups:
            print(f"{s.name}: {s.reconnects} reconnects; duplicates arrived on connections "
                  f"{sorted((i, [k for k, j in s.arrivals if j == i]) for i in dups)[:8]}; "
                  f"order around the first: {[j for _, j in s.arrivals][max(0, [j for _, j in s.arrivals].index(min(dups)) - 3):][:12]}")
    print("end checks: " + ("all hold" if not found else f"{len(found)} broken:\n  " + "\n  ".join(found[:20])))
    if soak.errors:
        print(f"errors: {len(soak.errors)}, e.g. {soak.errors[:5]}")


if __name__ == "__main__":
    raise SystemExit(main())
