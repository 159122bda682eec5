"""webhook_deliveries: each webhook a rule fired, and how its delivery went

A row is stored with the rule's other effects, keyed by the effect's idempotency key, so
a redelivered event posts nothing twice; it is posted after the commit. ``status`` is
pending → delivered | failed | refused; a pending row is due at ``next_attempt_at`` and
claimed for one attempt by ``lease_until``.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(300), nullable=False, unique=True),
        sa.Column("webhook", sa.String(100), nullable=False),
        sa.Column("chat_id", sa.String(100), nullable=False, index=True),
        sa.Column("rule", sa.String(200)),
        sa.Column("event", sa.String(40)),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("status", sa.String(10), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float),
        sa.Column("lease_until", sa.Float),
        sa.Column("response_code", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", sa.Float),
        sa.Column("updated_at", sa.Float),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])


def downgrade():
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
