"""analytics_days: the samples of each closed UTC day, kept for the reports, and the
triggers that forget them when that day's events or escalations change

A month's overview walked every event of the month (5.6 s of PostgreSQL CPU for a
million messages). Each figure's sample belongs to the day of its defining moment and,
once the day is over, does not change unless a stored event does; so
``server/analytics_days.py`` keeps, per day and wait threshold, what the walk found:

- ``analytics_days``: the days kept (one row per day and ``wait_minutes``);
- ``analytics_day_figures``: per day, threshold, figure and agent, the number of
  samples, the distinct chats (a JSON list, for the figures counted in chats) and the
  sorted values (float64, little-endian), from which medians and p90s are exact;
- ``analytics_state``: one row: ``until``, the epoch second before which days may be
  kept; a fill locks this row while it computes a day.

It is a cache, not a copy: a write to ``events`` that touches a stream event
(``chat.created``, ``message.created``, ``chat.closed``, ``chat.reopened``,
``chat.joined``), or to ``notifications`` that touches an escalation (template
``unread_messages``) — inserted, deleted, or its time or content changed — at a time
before ``until`` deletes the kept days from that row's day on (later days too: their
samples depend on the chats' history), in the writer's transaction. On PostgreSQL the trigger
updates the ``analytics_state`` row first, so a late write and a fill in progress wait
for each other (see ``server/analytics_days.py``). Writes at the present (after
``until``) cost the trigger one read of that row.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

# server.analytics.STREAM_TYPES and ESCALATION_TEMPLATE (tests/server/test_analytics.py
# checks they agree)
STREAM_TYPES = ("chat.created", "message.created", "chat.closed", "chat.reopened", "chat.joined")
ESCALATION_TEMPLATE = "unread_messages"
_TYPES = ", ".join(f"'{t}'" for t in STREAM_TYPES)
_ESCALATION = f"'{ESCALATION_TEMPLATE}'"

PG_FUNCTION = f"""
CREATE FUNCTION chatflow_analytics_forget() RETURNS trigger AS $$
DECLARE
  at double precision;
  first_day bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN  -- the trigger's WHEN has kept only the rows that count
    at := NEW.at;
  ELSIF TG_TABLE_NAME = 'events' THEN
    IF TG_OP = 'DELETE' THEN
      IF OLD.type NOT IN ({_TYPES}) THEN RETURN NULL; END IF;
      at := OLD.at;
    ELSE
      IF OLD.type NOT IN ({_TYPES}) AND NEW.type NOT IN ({_TYPES}) THEN RETURN NULL; END IF;
      at := least(OLD.at, NEW.at);
    END IF;
  ELSE  -- notifications
    IF TG_OP = 'DELETE' THEN
      IF OLD.template IS DISTINCT FROM {_ESCALATION} THEN RETURN NULL; END IF;
      at := OLD.at;
    ELSE
      IF OLD.template IS DISTINCT FROM {_ESCALATION} AND NEW.template IS DISTINCT FROM {_ESCALATION} THEN
        RETURN NULL;
      END IF;
      at := least(OLD.at, NEW.at);
    END IF;
  END IF;
  first_day := floor(at / 86400);
  -- a write into a day that may be kept: the row lock waits for a fill in progress
  -- (and a fill that starts later waits for this transaction)
  UPDATE analytics_state SET changes = changes + 1 WHERE id = 1 AND until > at;
  IF FOUND THEN
    DELETE FROM analytics_day_figures WHERE day >= first_day;
    DELETE FROM analytics_days WHERE day >= first_day;
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql
"""

PG_TRIGGERS = (
    f"CREATE TRIGGER analytics_forget_insert AFTER INSERT ON events FOR EACH ROW "
    f"WHEN (NEW.type IN ({_TYPES})) EXECUTE FUNCTION chatflow_analytics_forget()",
    "CREATE TRIGGER analytics_forget_change AFTER UPDATE OF at, type, payload, chat_id OR DELETE ON events "
    "FOR EACH ROW EXECUTE FUNCTION chatflow_analytics_forget()",
    f"CREATE TRIGGER analytics_forget_insert AFTER INSERT ON notifications FOR EACH ROW "
    f"WHEN (NEW.template = {_ESCALATION}) EXECUTE FUNCTION chatflow_analytics_forget()",
    "CREATE TRIGGER analytics_forget_change AFTER UPDATE OF at, template, chat_id OR DELETE ON notifications "
    "FOR EACH ROW EXECUTE FUNCTION chatflow_analytics_forget()",
)


def _sqlite_trigger(name: str, when: str, types: str, at: str, table: str = "events") -> str:
    day = f"CAST(({at}) / 86400 AS INTEGER)"  # times are positive: truncation is floor
    return (f"CREATE TRIGGER {name} AFTER {when} ON {table} "
            f"WHEN ({types}) AND ({at}) < (SELECT until FROM analytics_state WHERE id = 1) BEGIN "
            f"DELETE FROM analytics_day_figures WHERE day >= {day}; "
            f"DELETE FROM analytics_days WHERE day >= {day}; END")


SQLITE_TRIGGERS = (
    _sqlite_trigger("analytics_forget_insert", "INSERT", f"NEW.type IN ({_TYPES})", "NEW.at"),
    _sqlite_trigger("analytics_forget_delete", "DELETE", f"OLD.type IN ({_TYPES})", "OLD.at"),
    _sqlite_trigger("analytics_forget_update", "UPDATE OF at, type, payload, chat_id",
                    f"OLD.type IN ({_TYPES}) OR NEW.type IN ({_TYPES})", "min(OLD.at, NEW.at)"),
    _sqlite_trigger("analytics_forget_escalation_insert", "INSERT", f"NEW.template = {_ESCALATION}", "NEW.at",
                    "notifications"),
    _sqlite_trigger("analytics_forget_escalation_delete", "DELETE", f"OLD.template = {_ESCALATION}", "OLD.at",
                    "notifications"),
    _sqlite_trigger("analytics_forget_escalation_update", "UPDATE OF at, template, chat_id",
                    f"OLD.template = {_ESCALATION} OR NEW.template = {_ESCALATION}", "min(OLD.at, NEW.at)",
                    "notifications"),
)


def upgrade():
    op.create_table(
        "analytics_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("until", sa.Float, nullable=False),
        sa.Column("changes", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "analytics_days",
        sa.Column("day", sa.Integer, primary_key=True, autoincrement=False),  # days since 1970-01-01 (UTC)
        sa.Column("wait_minutes", sa.Float, primary_key=True),
        sa.Column("computed_at", sa.Float, nullable=False),
    )
    op.create_table(
        "analytics_day_figures",
        sa.Column("day", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("wait_minutes", sa.Float, primary_key=True),
        sa.Column("metric", sa.String(40), primary_key=True),
        sa.Column("agent", sa.String(100), primary_key=True),  # '' for the figures over everyone
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("chats", sa.Text),  # JSON list of the distinct chat ids, for figures counted in chats
        sa.Column("samples", sa.LargeBinary),  # the values, sorted, as float64 little-endian
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        for statement in PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for table in ("events", "notifications"):
            op.execute(f"DROP TRIGGER analytics_forget_insert ON {table}")
            op.execute(f"DROP TRIGGER analytics_forget_change ON {table}")
        op.execute("DROP FUNCTION chatflow_analytics_forget()")
    else:
        for name in ("insert", "delete", "update", "escalation_insert", "escalation_delete", "escalation_update"):
            op.execute(f"DROP TRIGGER analytics_forget_{name}")
    op.drop_table("analytics_day_figures")
    op.drop_table("analytics_days")
    op.drop_table("analytics_state")
