"""Keyword handling the parser relies on: every keyword of the grammar gets the
whole-word check (Lark names the terminal of "and" AND)."""
from dsl.parser import grammar, keyword_terminals


def test_every_keyword_terminal_is_checked_as_a_whole_word():
    terminals = {t.name for t in grammar().terminals}
    keywords = {t.name for t in grammar().terminals if t.pattern.type == "str" and t.pattern.value.isalpha()}
    assert keyword_terminals() <= terminals
    assert keywords <= keyword_terminals()
