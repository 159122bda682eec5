"""routing_picks: the picks of department assignment and the backlog, per agent and time

A rule set's `at most N per D` (README "Routing") limits how often one agent is picked in
any window of D. Every worker and web process picks, so the picks they count live here,
not in a process: one row per pick, read by agent and time (older rows than the window
are deleted as new ones come).

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "routing_picks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(100), nullable=False),
        sa.Column("chat_id", sa.String(100)),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_routing_picks_agent_at", "routing_picks", ["agent_id", "at"])


def downgrade():
    op.drop_index("ix_routing_picks_agent_at", table_name="routing_picks")
    op.drop_table("routing_picks")
