"""agents' revision and the round robin's memory

- ``revisions``: one counter per table whose rows every command reads. Triggers on
  ``agents`` bump ``revisions.agents`` in the transaction of any insert, update or
  delete, so a process may keep the agents it read and read them again only when the
  counter moved (it is read in the same query as the chat's row).
- ``round_robin``: the agent each department's ``assign department … by round_robin``
  picked last, so the rotation goes on across commands and processes (it began again
  with the first agent on every command).

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

PG_FUNCTION = """
CREATE FUNCTION chatflow_bump_agents() RETURNS trigger AS $$
BEGIN
  UPDATE revisions SET value = value + 1 WHERE name = 'agents';
  RETURN NULL;
END $$ LANGUAGE plpgsql
"""


def upgrade():
    op.create_table("revisions",
                    sa.Column("name", sa.String(50), primary_key=True),
                    sa.Column("value", sa.BigInteger, nullable=False))
    op.execute("INSERT INTO revisions (name, value) VALUES ('agents', 1)")
    op.create_table("round_robin",
                    sa.Column("department", sa.String(200), primary_key=True),
                    sa.Column("agent_id", sa.String(100), nullable=False))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute("CREATE TRIGGER agents_revision AFTER INSERT OR UPDATE OR DELETE ON agents "
                   "FOR EACH STATEMENT EXECUTE FUNCTION chatflow_bump_agents()")
    else:
        for what in ("INSERT", "UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER agents_revision_{what.lower()} AFTER {what} ON agents BEGIN "
                       "UPDATE revisions SET value = value + 1 WHERE name = 'agents'; END")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER agents_revision ON agents")
        op.execute("DROP FUNCTION chatflow_bump_agents()")
    else:
        for what in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER agents_revision_{what}")
    op.drop_table("round_robin")
    op.drop_table("revisions")
