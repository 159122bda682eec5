"""analytics: generated columns and time indexes

The analytics queries (server/analytics.py) read what a message event is, who caused it
and a chat's department. Those live inside JSON documents (``events.payload``,
``chats.state``), and extracting a field from a JSON document re-parses the document:
on PostgreSQL about 0.5 s per field per million events, too slow for a month's report.
So the database derives them once, as generated columns of the same rows — not a copy
that the application keeps in step, nothing the runtime writes differently:

- ``events.msg_kind``: for ``chat.created`` and ``message.created`` events that carry a
  message, ``customer``, ``reply`` (an agent's public reply), ``note`` (an agent's private
  note: the engine gives note events ``data.mentions``, replies no data) or ``bot`` (a
  rule's message); NULL for every other event.
- ``events.agent_id``: the agent who caused the event (``payload.agent_id``).
- ``chats.department``: the chat's department (``state.department``).

PostgreSQL stores them (computed at INSERT/UPDATE; adding them rewrites the tables once);
SQLite computes them when read (ALTER TABLE can only add VIRTUAL generated columns).
Indexes on ``events.at`` and ``traces.at`` let a period's rows be read by range, and a
partial index on ``notifications.at`` of the escalations (template ``unread_messages``)
finds those among the many ``new_message`` notifications without growing on each one.
None of the generated columns is indexed: an index on ``chats.department`` would make
every update of a chat's state a non-HOT update on PostgreSQL.

A later ``batch_alter_table`` of ``events`` or ``chats`` on SQLite copies the table: it
must keep these columns as generated columns.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

PG_COLUMNS = {
    ("events", "msg_kind", "varchar(10)"):
        "CASE WHEN type IN ('chat.created', 'message.created') AND payload ->> 'message_id' IS NOT NULL THEN "
        "CASE payload ->> 'actor' WHEN 'customer' THEN 'customer' "
        "WHEN 'agent' THEN CASE WHEN payload -> 'data' -> 'mentions' IS NULL THEN 'reply' ELSE 'note' END "
        "ELSE 'bot' END END",
    ("events", "agent_id", "varchar(100)"): "payload ->> 'agent_id'",
    ("chats", "department", "varchar(200)"): "state ->> 'department'",
}

SQLITE_COLUMNS = {
    ("events", "msg_kind", "VARCHAR(10)"):
        "CASE WHEN type IN ('chat.created', 'message.created') AND json_extract(payload, '$.message_id') IS NOT NULL THEN "
        "CASE json_extract(payload, '$.actor') WHEN 'customer' THEN 'customer' "
        "WHEN 'agent' THEN CASE WHEN json_type(payload, '$.data.mentions') IS NULL THEN 'reply' ELSE 'note' END "
        "ELSE 'bot' END END",
    ("events", "agent_id", "VARCHAR(100)"): "json_extract(payload, '$.agent_id')",
    ("chats", "department", "VARCHAR(200)"): "json_extract(state, '$.department')",
}

INDEXES = {"ix_events_at": ("events", "at"), "ix_traces_at": ("traces", "at")}


def upgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for (table, column, kind), expr in PG_COLUMNS.items():
            op.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind} GENERATED ALWAYS AS ({expr}) STORED")
    elif dialect == "sqlite":
        for (table, column, kind), expr in SQLITE_COLUMNS.items():
            op.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind} GENERATED ALWAYS AS ({expr}) VIRTUAL")
    for name, (table, column) in INDEXES.items():
        op.create_index(name, table, [column])
    escalations = sa.text("template = 'unread_messages'")
    op.create_index("ix_notifications_escalations", "notifications", ["at"],
                    postgresql_where=escalations, sqlite_where=escalations)


def downgrade():
    op.drop_index("ix_notifications_escalations", table_name="notifications")
    for name, (table, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
    for table, column, _ in PG_COLUMNS:
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
