"""Run chatflow's benchmarks and print a table per benchmark, with figures and ratios.

    python bench/run.py            # full sizes (a few minutes on 2 cores)
    python bench/run.py --quick    # smaller sizes, for a smoke run
    python bench/run.py --only engine --only sim
    python bench/run.py --only service   # (D): gunicorn, workers, PostgreSQL, Redis (not in the default run)
    python bench/run.py --only floor     # (D-floor): what a request and a round trip cost here (same needs)
    python bench/run.py --only analytics # (E): a month's report over 1,000,000 messages on PostgreSQL (not in the default run)

(A) rule language (bench_rules.py), (B) engine against peer rule engines
(bench_engine.py), (C) simulator (bench_sim.py), (D) the service in scaled mode
(bench_service.py; needs PostgreSQL and Redis on 127.0.0.1, and gunicorn), (E) analytics
(bench_analytics.py; needs PostgreSQL). The peers of (B) are installed only
for benchmarking, in their own virtualenv (see bench/requirements.txt); a peer that is
not installed is listed as such. Use that virtualenv's python to run this script.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

BENCHES = ("rules", "engine", "sim")
EXTRA = ("service", "floor", "analytics")  # run only when asked for with --only: they need PostgreSQL (and Redis, gunicorn)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="chatflow benchmarks")
    p.add_argument("--quick", action="store_true", help="smaller sizes (targets are judged on full sizes only)")
    p.add_argument("--only", action="append", choices=BENCHES + EXTRA, help="run only this benchmark (repeatable)")
    p.add_argument("--output", metavar="FILE", help="also write the tables to FILE (Markdown)")
    a = p.parse_args(argv)
    todo = a.only or list(BENCHES)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    m = common.machine()
    head = [
        f"chatflow benchmarks — {datetime.date.today().isoformat()}, {'quick' if a.quick else 'full'} run",
        f"machine: {m['cores']} cores, {m['cpu']}; Python {m['python']} ({m['implementation']}, {m['executable']})",
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine: other work runs beside)",
    ]
    out = ["\n".join(head)]
    started = time.perf_counter()
    if "rules" in todo:
        import bench_rules

        res = bench_rules.run(n_rules=200 if a.quick else 1000, rounds=2 if a.quick else 5, log=log)
        out.append(bench_rules.render(res))
    if "engine" in todo:
        import bench_engine

        res = bench_engine.run(n_events=5_000 if a.quick else 50_000, rounds=2 if a.quick else 3, log=log)
        out.append(bench_engine.render(res))
    if "sim" in todo:
        import bench_sim

        res = bench_sim.run(n_chats=1_000 if a.quick else 10_000, log=log)
        out.append(bench_sim.render(res))
    if "service" in todo:
        import bench_service

        res = bench_service.run(quick=a.quick, log=log)
        out.append(bench_service.render(res))
    if "floor" in todo:
        import bench_floor

        res = bench_floor.run(quick=a.quick, log=log)
        out.append(bench_floor.render(res))
    if "analytics" in todo:
        import bench_analytics

        res = bench_analytics.run(quick=a.quick, log=log)
        out.append(bench_analytics.render(res))
    out.append(f"total benchmark time {time.perf_counter() - started:.0f} s; "
               f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    text = "\n\n".join(out)
    print(text)
    if a.output:
        Path(a.output).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
