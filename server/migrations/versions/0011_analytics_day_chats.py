"""analytics_day_chats: each kept day's samples per chat, so reports with chat filters
read the kept days too; analytics_days.filling: a fill in progress holds no lock

Reports filtered by channel, department or agent walked their whole period (2.3 s of
PostgreSQL CPU for a month of a million messages filtered to one department): the kept
days held the figures over all chats only. The filters are the chats' values as they are
now (a chat moved to another department counts there, for its whole history), so what is
kept per day is each chat's own samples of each figure (as ``analytics_day_figures``
holds everyone's); a filtered report joins them to the chats the filters keep at the
moment it runs and adds them up, and the answer is the walk's, exactly.

``analytics_days.filling`` lets a fill walk a day without holding the
``analytics_state`` row lock (or, on SQLite, the one writer) for the walk: the fill marks
the day with its token (under the lock, briefly), walks it, and keeps what it found only
if the mark is still there (under the lock again). A late write into the day deletes
the mark as it deleted a kept day (migration 0010's triggers), so it is either seen by
the walk or makes the fill give up. Readers ignore marked days.

The days kept before this migration have no per-chat rows: they are forgotten (a cache:
the next fill walks them again).

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("DELETE FROM analytics_day_figures")
    op.execute("DELETE FROM analytics_days")
    op.add_column("analytics_days", sa.Column("filling", sa.String(32)))
    op.create_table(
        "analytics_day_chats",
        sa.Column("wait_minutes", sa.Float, primary_key=True),
        sa.Column("day", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("chat_id", sa.String(100), primary_key=True),
        sa.Column("metric", sa.String(40), primary_key=True),
        sa.Column("agent", sa.String(100), primary_key=True),  # '' for the figures over everyone
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("samples", sa.LargeBinary),  # the chat's values, float64 little-endian
    )


def downgrade():
    op.drop_table("analytics_day_chats")
    # ALTER TABLE … DROP COLUMN, also on SQLite (3.35+): a batch copy of the table would
    # rename it, which SQLite refuses while migration 0010's triggers name it
    op.drop_column("analytics_days", "filling")
