"""SPEC §5 under a PostgreSQL restart: no request turns into a 500, nothing is lost or
repeated.

The PostgreSQL server is shared with other test runs on this machine, so the restart is
simulated the way the service sees it: every connection to the scratch database is
terminated (``pg_terminate_backend``), which is what a restart does to the pooled
connections of the web processes, the workers and the scheduler. That happens three
times (six with CHATFLOW_FULL_FAULTS=1) while customers send messages. A request that
meets a dead connection may answer 503 with Retry-After (nothing written); the client
retries it, so every message must end up stored exactly once.
"""
from __future__ import annotations

import time

from scaled_service import FULL
from workload import run_under_fault

RESTARTS, RATE = (6, 30.0) if FULL else (3, 30.0)
MESSAGES = int((RESTARTS * 3 + 6) * RATE) // 10 * 10


def test_database_connections_dropped_under_load_lose_nothing_and_repeat_nothing(service, smtp):
    terminated = []

    def restarts(load):
        for _ in range(RESTARTS):
            time.sleep(3)
            terminated.append(service.terminate_backends())

    load, found, figures = run_under_fault(service, smtp, MESSAGES, RATE, restarts)
    print(f"{RESTARTS} simulated restarts, connections terminated each time: {terminated}; {figures}")
    assert all(n > 0 for n in terminated)
    assert load.errors == []  # every 503 was retried; no 500, no broken request
    assert not found, "\n".join(found)
    assert figures["dead processes"] == []
