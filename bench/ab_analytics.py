"""(E) side by side: a month's report by an earlier ``server/analytics.py`` ("before") and
by the current one ("after"), on one generated month in one scratch database, rounds
interleaved (the machine is shared: compare the ratios).

    git show 58bd647:server/analytics.py > /tmp/analytics_before.py
    python bench/ab_analytics.py --before /tmp/analytics_before.py [--quick] [--rounds 3]

"after" is measured twice: the first report of the month, which walks and keeps the 30
days (``first``), and the report once they are kept (``kept``). Each call is timed by
wall clock, by this process's CPU and by the PostgreSQL backend's CPU (parallel
workers off, so the backend's CPU is all PostgreSQL spends).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import common  # noqa: F401  (puts the checkout on sys.path)
import bench_analytics as B


def load_before(path: str):
    """The earlier module as ``server.analytics_before`` (its relative imports resolve in ``server``)."""
    import server

    spec = importlib.util.spec_from_file_location("server.analytics_before", path,
                                                  submodule_search_locations=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "server"
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    server.analytics_before = module
    return module


def forget(db) -> None:
    from server import store as S

    with db.begin() as conn:
        conn.execute(S.analytics_day_chats.delete())
        conn.execute(S.analytics_day_figures.delete())
        conn.execute(S.analytics_days.delete())


def measure(db, pid: int, fn) -> dict:
    def backend_cpu():
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    pg0, w0, c0 = backend_cpu(), time.perf_counter(), time.process_time()
    out = fn()
    return {"wall": time.perf_counter() - w0, "python": time.process_time() - c0, "pg": backend_cpu() - pg0,
            "out": out}


def same(a, b) -> bool:
    """Equal, floats to 1e-9 relative (PostgreSQL's percentile_cont and Python's may round apart)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a))
    return a == b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="a server/analytics.py of the earlier version")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    before = load_before(a.before)
    from server import analytics as after

    rows = B.generate(100_000 if a.quick else 1_000_000)
    print(f"generated {rows.messages:,} messages in {len(rows.chats):,} chats, {len(rows.events):,} events", flush=True)
    scratch = B.Scratch()
    try:
        scratch.load(rows, lambda m: print(m, flush=True))
        del rows
        serial = B._serial_engine(scratch.url)
        lo, hi = B.MONTH
        cases = {
            "month": after.Query(lo, hi, now=hi),
            "week": after.Query(lo + 7 * 86400, lo + 14 * 86400, now=hi),
            "month, department=sales": after.Query(lo, hi, now=hi, department="sales"),
        }
        parts = ("overview", "agents")
        results = {}
        with serial.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        for r in range(a.rounds):
            for name, q in cases.items():
                bq = before.Query(q.start, q.end, q.now, channel=q.channel, department=q.department, agent=q.agent,
                                  wait_minutes=q.wait_minutes)
                runs = [("before", lambda: before.report(serial, bq, parts=parts))]
                if name == "month":
                    forget(serial)
                    runs.append(("after, first", lambda: after.report(serial, q, parts=parts)))
                runs.append(("after, kept" if not q.filtered else "after", lambda: after.report(serial, q, parts=parts)))
                for label, fn in runs:
                    m = measure(serial, pid, fn)
                    results.setdefault((name, label), []).append(m)
                    print(f"round {r + 1} {name:26} {label:13} wall {m['wall']:6.2f} s  python {m['python']:5.2f} s  "
                          f"PostgreSQL {m['pg']:5.2f} s", flush=True)
        for name in cases:
            got = {label: results[(n, label)][-1]["out"] for (n, label) in results if n == name}
            first = next(iter(got.values()))
            for label, out in got.items():
                print(f"{name}: {label} {'gives the same figures as before' if same(out, first) else 'DIFFERS'}")
        print("\nbest of the rounds (each column its own minimum):")
        print(f"{'case':26} {'code':13} {'wall':>8} {'python':>8} {'PostgreSQL':>10} {'python+PG':>10}")
        for (name, label), ms in results.items():
            total = min(m["python"] + m["pg"] for m in ms)
            print(f"{name:26} {label:13} {min(m['wall'] for m in ms):7.2f}s {min(m['python'] for m in ms):7.2f}s "
                  f"{min(m['pg'] for m in ms):9.2f}s {total:9.2f}s")
        serial.dispose()
    finally:
        scratch.close()


if __name__ == "__main__":
    main()
