"""(E) side by side: a month's report by an earlier commit's analytics ("before") and by
this checkout's ("after"), on one generated month in one scratch database, rounds
interleaved (the machine is shared: compare the ratios).

    python bench/ab_analytics.py --before 5f74d2b [--quick] [--rounds 3] [--db NAME] [--keep]

"before" is the commit's ``server/`` package (extracted by ``git archive`` and imported
as ``server_before``: its analytics, kept days and tables). Each round, in this order
(the two share the kept-days tables; "before" keeps no per-chat samples, so its kept
days are forgotten before "after" keeps its own):

- before: the first report of the month (walks and keeps its 30 days), the month and a
  week with the days kept;
- after: the background keeper (server.analytics_keeper) keeping the month's 30 days,
  one step each — what the first report paid before, now paid after midnight, a day at a
  time; meanwhile a probe runs the scheduler's deadline query every 0.25 s and records
  how long each took (a deadline tick's database part beside a day's walk);
- after: the month, a week, the month with department=sales and with agent=agent07, all
  with the days kept;
- before: the month with department=sales and with agent=agent07 (they walk).

Each call is timed by wall clock, by this process's CPU (all its threads: the keeper's
includes the probe's few queries) and by the CPU of the PostgreSQL backends serving the
database (parallel workers off, so that is all PostgreSQL spends). ``--db``
reuses a scratch database loaded earlier (``--keep`` keeps the one made here).
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import threading
import time

import common  # noqa: F401  (puts the checkout on sys.path)
import bench_analytics as B


def load_before(commit: str):
    """The commit's ``server`` package as ``server_before``; returns its analytics module."""
    root = tempfile.mkdtemp(prefix="chatflow_before_")
    archive = subprocess.run(["git", "archive", commit, "server"], cwd=common.ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", root], input=archive, check=True)
    os.rename(os.path.join(root, "server"), os.path.join(root, "server_before"))
    sys.path.insert(0, root)
    return importlib.import_module("server_before.analytics")


def forget(db) -> None:
    from server import store as S

    with db.begin() as conn:
        conn.execute(S.analytics_day_chats.delete())
        conn.execute(S.analytics_day_figures.delete())
        conn.execute(S.analytics_days.delete())


class Backends:
    """The CPU seconds of the PostgreSQL backends serving the scratch database (the
    report's connection, the keeper's, the probe's), read from /proc."""

    def __init__(self, scratch):
        self.admin, self.name = scratch.admin, scratch.name

    def cpu(self) -> dict:
        out = {}
        for (pid,) in self.admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.name,)):
            try:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            except OSError:  # it ended meanwhile
                continue
            out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out


def measure(backends: Backends, fn) -> dict:
    pg0, w0, c0 = backends.cpu(), time.perf_counter(), time.process_time()
    out = fn()
    w, c, pg1 = time.perf_counter() - w0, time.process_time() - c0, backends.cpu()
    return {"wall": w, "python": c, "pg": sum(t - pg0.get(pid, 0.0) for pid, t in pg1.items()), "out": out}


def same(a, b) -> bool:
    """Equal, floats to 1e-9 relative (PostgreSQL's percentile_cont and Python's may round apart)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a))
    return a == b


class Probe:
    """What a deadline tick does to the database, every 0.25 s on its own connection: the
    scheduler's due-deadline query and an event written at the present (through the
    analytics trigger) in one transaction; the seconds each took. ``at`` is the present."""

    def __init__(self, db, at: float):
        from sqlalchemy import and_, delete, func, insert, or_, select

        from server import store as S

        self.db, self.at, self.times, self.stop = db, at, [], threading.Event()
        t = S.timers
        self.due = (select(t.c.chat_id).where(and_(t.c.due <= at, or_(t.c.lease_until.is_(None), t.c.lease_until < at)))
                    .group_by(t.c.chat_id).order_by(func.min(t.c.due)).limit(2000))
        self.insert, self.events = insert, S.events
        self.cleanup = delete(S.events).where(S.events.c.chat_id == "bench-probe")
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        with self.db.connect() as conn:
            n = 0
            while not self.stop.is_set():
                n += 1
                t0 = time.perf_counter()
                conn.execute(self.due).all()
                conn.execute(self.insert(self.events).values(
                    id=f"bench-probe:{n}:{time.time()}", chat_id="bench-probe", type="chat.created", at=self.at + n,
                    payload={"type": "chat.created"}))
                conn.commit()
                self.times.append(time.perf_counter() - t0)
                self.stop.wait(0.25)
            conn.execute(self.cleanup)
            conn.commit()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def keep_month(db, lo: float, hi: float) -> dict:
    """The background keeper's steps over the month's days (as after its midnights):
    each day's wall and CPU, and the probe's query times meanwhile."""
    from server.analytics_keeper import DayKeeper

    clock = lambda: hi + 3600  # noqa: E731  (an hour into the next month: every day of it is over)
    keeper = DayKeeper(db, clock, days=int((hi - lo) // 86400))
    days = []
    with Probe(db, hi + 3600) as probe:
        while True:
            w0, c0 = time.perf_counter(), time.process_time()
            step = keeper.step()
            if step is None:
                break
            days.append((step, time.perf_counter() - w0, time.process_time() - c0))
    return {"days": days, "probe": probe.times}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the commit to compare with (e.g. main at the branch point)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--db", help="a scratch database loaded earlier (by --keep): reused, not dropped")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database made here")
    a = ap.parse_args()
    before = load_before(a.before)
    from server import analytics as after

    if a.db:
        scratch = B.Scratch(a.db)
    else:
        rows = B.generate(100_000 if a.quick else 1_000_000)
        print(f"generated {rows.messages:,} messages in {len(rows.chats):,} chats, {len(rows.events):,} events",
              flush=True)
        scratch = B.Scratch()
        scratch.keep = a.keep
        print(f"database {scratch.name}", flush=True)
        scratch.load(rows, lambda m: print(m, flush=True))
        del rows
    try:
        serial = B._serial_engine(scratch.url)
        lo, hi = B.MONTH
        week = (lo + 7 * 86400, lo + 14 * 86400)
        Q = after.Query
        month, sales, agent7 = Q(lo, hi, now=hi), Q(lo, hi, now=hi, department="sales"), Q(lo, hi, now=hi, agent="agent07")
        bq = lambda q: before.Query(q.start, q.end, q.now, channel=q.channel, department=q.department,  # noqa: E731
                                    agent=q.agent, wait_minutes=q.wait_minutes)
        parts = ("overview", "agents")
        backends = Backends(scratch)
        runs = [
            ("month", "before, first", lambda: before.report(serial, bq(month), parts=parts), lambda: forget(serial)),
            ("month", "before, kept", lambda: before.report(serial, bq(month), parts=parts), None),
            ("week", "before, kept", lambda: before.report(serial, bq(Q(*week, now=hi)), parts=parts), None),
            ("month", "after: keeper", lambda: keep_month(serial, lo, hi), lambda: forget(serial)),
            ("month", "after, kept", lambda: after.report(serial, month, parts=parts), None),
            ("week", "after, kept", lambda: after.report(serial, Q(*week, now=hi), parts=parts), None),
            ("month, department=sales", "after, kept", lambda: after.report(serial, sales, parts=parts), None),
            ("month, agent=agent07", "after, kept", lambda: after.report(serial, agent7, parts=parts), None),
            ("month, department=sales", "before", lambda: before.report(serial, bq(sales), parts=parts), None),
            ("month, agent=agent07", "before", lambda: before.report(serial, bq(agent7), parts=parts), None),
        ]
        results = {}
        for r in range(a.rounds):
            for name, label, fn, setup in runs:
                if setup:
                    setup()
                m = measure(backends, fn)
                results.setdefault((name, label), []).append(m)
                extra = ""
                if label == "after: keeper":
                    days, probe = m["out"]["days"], sorted(m["out"]["probe"])
                    extra = (f"  ({len(days)} days, each at most {max(d[1] for d in days):.2f} s wall; probe "
                             f"{len(probe)} queries, p99 {probe[int(0.99 * (len(probe) - 1))] * 1000:.0f} ms, "
                             f"max {probe[-1] * 1000:.0f} ms)")
                print(f"round {r + 1} {name:26} {label:15} wall {m['wall']:6.2f} s  python {m['python']:5.2f} s  "
                      f"PostgreSQL {m['pg']:5.2f} s{extra}", flush=True)
        for name in dict.fromkeys(n for n, _ in results):
            got = {label: results[(n, label)][-1]["out"] for (n, label) in results
                   if n == name and label != "after: keeper"}
            first = next(iter(got.values()))
            for label, out in got.items():
                print(f"{name}: {label} {'gives the same figures' if same(out, first) else 'DIFFERS'}")
        print("\nbest of the rounds (each column its own minimum):")
        print(f"{'case':26} {'code':15} {'wall':>8} {'python':>8} {'PostgreSQL':>10} {'python+PG':>10}")
        for (name, label), ms in results.items():
            total = min(m["python"] + m["pg"] for m in ms)
            print(f"{name:26} {label:15} {min(m['wall'] for m in ms):7.2f}s {min(m['python'] for m in ms):7.2f}s "
                  f"{min(m['pg'] for m in ms):9.2f}s {total:9.2f}s")
        serial.dispose()
    finally:
        scratch.close()


if __name__ == "__main__":
    main()
