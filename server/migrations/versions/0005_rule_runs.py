"""rule_runs: each rule's evaluations, firings and effects counted per minute

The analytics' per-rule figures summed every entry of every stored trace (26 s for a
month of a million messages). The worker now adds its counts here in the transaction
that stores the trace: one row per (rule, minute, shard), the shard the writing database
session's process id, so no two open transactions write one row (a batch waiting on a
lock would hold back every worker that shared its row). Existing traces are counted in once here.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table(
        "rule_runs",
        sa.Column("rule", sa.String(200), primary_key=True),
        sa.Column("minute", sa.BigInteger, primary_key=True),  # epoch seconds // 60 of the evaluations
        sa.Column("shard", sa.Integer, primary_key=True),  # the writer's backend process id
        sa.Column("evaluated", sa.Integer, nullable=False),
        sa.Column("fired", sa.Integer, nullable=False),
        sa.Column("effects", sa.Integer, nullable=False),
        sa.Column("last_fired", sa.Float),
    )
    op.create_index("ix_rule_runs_minute", "rule_runs", ["minute"])
    _count_stored_traces(op.get_bind(), table)


def _count_stored_traces(conn, table) -> None:
    import json

    counts: dict = {}
    traces = sa.table("traces", sa.column("id"), sa.column("entries"))
    last = 0
    while True:
        rows = conn.execute(sa.select(traces.c.id, traces.c.entries).where(traces.c.id > last)
                            .order_by(traces.c.id).limit(5000)).all()
        if not rows:
            break
        for trace_id, entries in rows:
            last = trace_id
            if isinstance(entries, str):
                entries = json.loads(entries)
            for e in entries or ():
                kind, rule = e.get("kind"), e.get("rule")
                if rule is None or kind not in ("rule", "fired", "effect"):
                    continue
                row = counts.setdefault((rule, int(e["at"] // 60)), [0, 0, 0, None])
                row[("rule", "fired", "effect").index(kind)] += 1
                if kind == "fired" and (row[3] is None or e["at"] > row[3]):
                    row[3] = e["at"]
    if counts:
        op.bulk_insert(table, [{"rule": r, "minute": m, "shard": 0, "evaluated": c[0], "fired": c[1],
                                "effects": c[2], "last_fired": c[3]} for (r, m), c in counts.items()])


def downgrade():
    op.drop_index("ix_rule_runs_minute", table_name="rule_runs")
    op.drop_table("rule_runs")
