"""Full-text search of help-center articles, ranked, on PostgreSQL and on SQLite.

The index is built by migration 0002: on PostgreSQL a generated ``tsvector`` column
(``articles.search``, title weight A, body weight B, the ``english`` configuration) with a
GIN index; on SQLite an FTS5 table ``articles_fts`` (Porter stemmer) kept in step with
``articles`` by triggers.

The query language is PostgreSQL's ``websearch_to_tsquery``: words (all must match),
``"a phrase"``, ``or`` between alternatives, ``-word`` to exclude; English words match
their other forms (``refunds`` finds "refund", ``cancelled`` finds "cancel"), and
English stop words ("how", "to", "the" …) are ignored.

What the user typed is read once, by ``parse_query``, into terms of letters, digits and
the joiners of compound words, and each backend gets a query rebuilt from those terms
only: FTS5 one made of double-quoted strings, so nothing typed reaches it as an
operator, column filter, prefix star or NEAR; PostgreSQL a websearch query with at most
one ``-`` per term, since ``websearch_to_tsquery`` itself fails ("tsquery stack too
small") on 33 negations in a row (``- - - …`` or ``-!-!…``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select, text

from . import store as S

MAX_QUERY_CHARS = 500
LIMIT = 50

# PostgreSQL's english.stop (tsearch_data), so SQLite ignores the words PostgreSQL ignores
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
her hers herself it its itself they them their theirs themselves what which who whom this that
these those am is are was were be been being have has had having do does did doing a an the
and but if or because as until while of at by for with about against between into through
during before after above below to from up down in out on off over under again further then
once here there when where why how all any both each few more most other some such no nor not
only own same so than too very s t can will just don should now
""".split())

_COLUMNS = (S.articles.c.slug, S.articles.c.title, S.articles.c.body, S.articles.c.url)
# an item of a websearch query: an optional "-", then a quoted phrase (an unclosed quote
# runs to the end) or a run of anything but spaces and quotes
_ITEM = re.compile(r'(-?)"([^"]*)"?|(-?)([^\s"]+)')
# what PostgreSQL's parser keeps together as one compound ("e-mail", "foo_bar", "x.y",
# "a@b.c"), searched as a phrase of its words; any other punctuation separates words
_COMPOUND = re.compile(r"[\w.@/'\u2019-]+")
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Term:
    """A word or phrase of a query: ``compounds`` (one for a word, several for a quoted
    phrase), each a run of letters, digits and ``-._@/'``, never starting with ``-``."""

    negated: bool
    quoted: bool
    compounds: tuple[str, ...]

    def words(self) -> list[str]:
        return [w for c in self.compounds for w in _WORD.findall(c.lower())]


def parse_query(q: str) -> list[list[Term]]:
    """A websearch query as alternatives (``or``) of terms that must all hold; terms with
    no word but stop words are left out, as PostgreSQL leaves them out."""
    groups: list[list[Term]] = [[]]
    for m in _ITEM.finditer(q):
        negated = bool(m.group(1) or m.group(3))
        if m.group(2) is not None:  # a quoted phrase
            terms = [Term(negated, True, tuple(c.lstrip("-") for c in _COMPOUND.findall(m.group(2)) if c.strip("-")))]
        elif not negated and m.group(4).lower() == "or":
            groups.append([])
            continue
        else:
            terms = [Term(negated, False, (c.lstrip("-"),)) for c in _COMPOUND.findall(m.group(4)) if c.strip("-")]
        groups[-1].extend(t for t in terms if any(w not in STOP_WORDS for w in t.words()))
    return [g for g in groups if g]


def search_articles(conn, q: str, limit: int = LIMIT) -> list[dict]:
    """Articles matching the websearch query ``q``, best first (a title match ranks above a
    body match); every article by slug when ``q`` is blank; none when ``q`` has no
    searchable word (only stop words or punctuation)."""
    if not q.strip():
        rows = conn.execute(select(*_COLUMNS).order_by(S.articles.c.slug).limit(limit))
        return [dict(r._mapping) for r in rows]
    groups = parse_query(q)
    if not groups:
        return []
    if conn.dialect.name == "postgresql":
        rows = conn.execute(text(
            "SELECT slug, title, body, url FROM articles, websearch_to_tsquery('english', :q) AS query "
            "WHERE search @@ query ORDER BY ts_rank(search, query) DESC, slug LIMIT :limit"),
            {"q": websearch_query(groups), "limit": limit})
    else:
        rows = _sqlite_search(conn, groups, limit)
    return [dict(r._mapping) for r in rows]


def websearch_query(groups: list[list[Term]]) -> str:
    """The parsed query written back for ``websearch_to_tsquery``."""
    def term(t: Term) -> str:
        body = '"' + " ".join(t.compounds) + '"' if t.quoted else t.compounds[0]
        return "-" + body if t.negated else body

    return " or ".join(" ".join(term(t) for t in group) for group in groups)


def fts5_query(groups: list[list[Term]]) -> tuple[str | None, str | None]:
    """``(match, excluded)``: the FTS5 query of the parsed query, and, when it has no term
    to look for but some to exclude, the FTS5 query of the excluded ones (else None)."""
    def phrase(t: Term) -> str:  # letters and digits only: nothing to escape
        return '"' + " ".join(t.words()) + '"'

    alternatives = []
    for group in groups:
        wanted = [phrase(t) for t in group if not t.negated]
        if not wanted:
            # "a or -b" (a, or anything without b) has no FTS5 form: that alternative is left out
            continue
        expr = " AND ".join(wanted)
        for t in group:
            if t.negated:
                expr = f"({expr}) NOT {phrase(t)}"
        alternatives.append(f"({expr})")
    if alternatives:
        return " OR ".join(alternatives), None
    if len(groups) == 1:  # "-refund -fee": every article without them, as PostgreSQL finds
        return None, " OR ".join(phrase(t) for t in groups[0])
    return None, None


def _sqlite_search(conn, groups, limit: int):
    match, excluded = fts5_query(groups)
    if match:
        # bm25 is lower for better matches; one weight per column: slug (unindexed), title, body
        return conn.execute(text(
            "SELECT a.slug, a.title, a.body, a.url FROM articles_fts JOIN articles AS a ON a.slug = articles_fts.slug "
            "WHERE articles_fts MATCH :match ORDER BY bm25(articles_fts, 0.0, 10.0, 1.0), a.slug LIMIT :limit"),
            {"match": match, "limit": limit})
    if excluded:
        return conn.execute(text(
            "SELECT slug, title, body, url FROM articles WHERE slug NOT IN "
            "(SELECT slug FROM articles_fts WHERE articles_fts MATCH :match) ORDER BY slug LIMIT :limit"),
            {"match": excluded, "limit": limit})
    return []
