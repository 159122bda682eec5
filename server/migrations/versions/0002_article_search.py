"""full-text search of articles

PostgreSQL: a generated tsvector column (title weight A, body weight B) with a GIN
index. SQLite: an FTS5 table kept in step with ``articles`` by triggers. Both use
English stemming (server/search.py says why and how they are queried).

Revision ID: 0002
Revises: 0001
"""
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# The FTS5 table holds its own copy of the text with the slug, rather than pointing at
# articles' rowid (external content): articles has a text primary key, so its rowids are
# not stable across VACUUM, and an index pointing at them would silently go wrong.
# A later batch_alter_table("articles") on SQLite copies the table and drops these
# triggers with the old one: such a migration must create them again.
SQLITE_TRIGGERS = {
    "articles_fts_insert": "AFTER INSERT ON articles BEGIN "
                           "INSERT INTO articles_fts (slug, title, body) VALUES (new.slug, new.title, new.body); END",
    "articles_fts_delete": "AFTER DELETE ON articles BEGIN "
                           "DELETE FROM articles_fts WHERE slug = old.slug; END",
    "articles_fts_update": "AFTER UPDATE ON articles BEGIN "
                           "DELETE FROM articles_fts WHERE slug = old.slug; "
                           "INSERT INTO articles_fts (slug, title, body) VALUES (new.slug, new.title, new.body); END",
}


def upgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("ALTER TABLE articles ADD COLUMN search tsvector GENERATED ALWAYS AS ("
                   "setweight(to_tsvector('english', coalesce(title, '')), 'A') || "
                   "setweight(to_tsvector('english', coalesce(body, '')), 'B')) STORED")
        op.execute("CREATE INDEX ix_articles_search ON articles USING GIN (search)")
    elif dialect == "sqlite":
        op.execute("CREATE VIRTUAL TABLE articles_fts USING fts5("
                   "slug UNINDEXED, title, body, tokenize = 'porter unicode61 remove_diacritics 2')")
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        op.execute("INSERT INTO articles_fts (slug, title, body) SELECT slug, title, body FROM articles")


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_articles_search")
        op.execute("ALTER TABLE articles DROP COLUMN IF EXISTS search")
    elif dialect == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS articles_fts")
