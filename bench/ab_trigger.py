"""(E) what the kept days' triggers on ``events`` (migration 0010) cost the writers: the
runtime's insert of events (executemany, 1 to 10 events per transaction, as commands and
worker batches write them), with the triggers enabled and disabled, in interleaved
rounds on one scratch PostgreSQL database; the PostgreSQL backend's CPU is compared.
Two cases: the present (no kept day at or after the events: the trigger reads one row),
and late writes into kept days (the trigger locks that row and deletes).

    python bench/ab_trigger.py [--events 20000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import secrets

import common  # noqa: F401  (puts the checkout on sys.path)
from bench_analytics import PG_ADMIN


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    import psycopg
    from sqlalchemy import insert

    from server import store as S

    admin = psycopg.connect(PG_ADMIN, autocommit=True)
    name = f"chatflow_bench_trigger_{os.getpid()}_{secrets.token_hex(3)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        db = S.make_db(S.database_url(url, "unused"))
        day = 20_400 * 86400.0
        with db.begin() as conn:  # one kept day, long ago; "until" at the present's day
            conn.execute(insert(S.analytics_state).values(id=1, until=day + 86400, changes=0))
        seq = [0]

        def write(at: float, enabled: bool) -> float:
            with db.connect() as conn:
                pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                conn.exec_driver_sql(f"ALTER TABLE events {'ENABLE' if enabled else 'DISABLE'} TRIGGER USER")
                conn.commit()

                def cpu():
                    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

                c0 = cpu()
                n = 0
                while n < a.events:
                    batch = []
                    for _ in range(1 + n % 10):
                        seq[0] += 1
                        eid = f"e{seq[0]}"
                        payload = {"id": eid, "type": "message.created", "chat_id": f"c{seq[0] % 500}", "at": at,
                                   "actor": "customer", "agent_id": None, "rule": None, "message_id": f"m{seq[0]}",
                                   "data": {}}
                        batch.append(dict(id=eid, chat_id=payload["chat_id"], type="message.created",
                                          payload=json.loads(json.dumps(payload)), at=at))
                    conn.execute(insert(S.events), batch)
                    conn.commit()
                    n += len(batch)
                return cpu() - c0

        cases = {"present": day + 2 * 86400, "late (into a kept day)": day + 600}
        best = {}
        for r in range(a.rounds):
            for case, at in cases.items():
                for enabled in (False, True):
                    spent = write(at, enabled)
                    key = (case, enabled)
                    best[key] = min(best.get(key, spent), spent)
                    print(f"round {r + 1} {case:24} triggers {'on ' if enabled else 'off'} "
                          f"PostgreSQL CPU {spent:.2f} s for {a.events:,} events", flush=True)
        print()
        for case in cases:
            off, on = best[(case, False)], best[(case, True)]
            print(f"{case:24} off {off:.2f} s  on {on:.2f} s  ratio {on / off:.2f}  "
                  f"(+{(on - off) / a.events * 1e6:.1f} µs per event)")
        db.dispose()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
