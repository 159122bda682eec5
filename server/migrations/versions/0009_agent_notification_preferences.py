"""agents' notification preferences and their batched notification emails

``agents.notifications`` maps a template (or ``*``) to in_app, email or off;
``agents.email`` is where notifications by email go. A notification for an agent who
wants it by email also waits in ``agent_email_items`` until server.agent_mail collects the
items of one agent and chat into one ``agent_emails`` row (one per window).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    # plain ADD COLUMN (SQLite too): a batch copy of the table would drop its triggers (0004)
    op.add_column("agents", sa.Column("email", sa.String(300)))
    op.add_column("agents", sa.Column("notifications", sa.JSON))
    op.create_table(
        "agent_email_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(300), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(100), nullable=False),
        sa.Column("chat_id", sa.String(100), nullable=False),
        sa.Column("rule", sa.String(200)),
        sa.Column("template", sa.String(100)),
        sa.Column("text", sa.Text),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("email_id", sa.Integer),
    )
    op.create_index("ix_agent_email_items_waiting", "agent_email_items", ["email_id", "agent_id", "chat_id"])
    op.create_table(
        "agent_emails",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(100), nullable=False),
        sa.Column("chat_id", sa.String(100), nullable=False),
        sa.Column("to_addr", sa.String(300), nullable=False),
        sa.Column("items", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float),
        sa.Column("message_id", sa.String(300)),
    )
    op.create_index("ix_agent_emails_window", "agent_emails", ["agent_id", "chat_id", "created_at"])


def downgrade():
    op.drop_index("ix_agent_emails_window", table_name="agent_emails")
    op.drop_table("agent_emails")
    op.drop_index("ix_agent_email_items_waiting", table_name="agent_email_items")
    op.drop_table("agent_email_items")
    # not batch_alter_table: a copy of the table would lose its triggers (0004)
    op.drop_column("agents", "notifications")
    op.drop_column("agents", "email")
