"""agents.capacity: open chats of each channel an agent may hold

Routing's capacity per channel (README "Routing"): a rule set says `capacity widget 3`
for every agent; an agent's own ``capacity`` ({channel: number}, JSON) overrides it for
the channels it names. Null: the rule set's.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("agents", sa.Column("capacity", sa.JSON))


def downgrade():
    op.drop_column("agents", "capacity")  # not batch_alter_table: a copy of the table would lose its triggers
