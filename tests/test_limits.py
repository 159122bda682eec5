"""Rule files that try to exhaust time or memory (issue 6, abuse): a located error, not a
long parse or a huge compiled rule."""
from __future__ import annotations

import time

from dsl.loader import load_rule_set
from dsl.parser import MAX_LIST_ITEMS, MAX_SOURCE_BYTES


def errors(text: str, name: str = "team/big.rules") -> list:
    return [(d.code, d.span.line, d.span.column) for d in load_rule_set([], defaults=False, texts={name: text}).result.errors]


def listed(n: int) -> str:
    values = ", ".join(f'"t{i}"' for i in range(n))
    return f'rule r {{ on chat.created when chat.page_url in [{values}] then tag "x" }}'


def test_a_list_of_more_than_ten_thousand_values_is_a_located_error():
    assert errors(listed(MAX_LIST_ITEMS)) == []
    assert errors(listed(MAX_LIST_ITEMS + 1)) == [("list_too_long", 1, 48)]  # at the `[`
    # the same in the YAML form's conditions
    values = ", ".join(f'"t{i}"' for i in range(MAX_LIST_ITEMS + 1))
    yaml_text = f"rules:\n  - id: r\n    on: chat.created\n    when: 'chat.page_url in [{values}]'\n    then: [{{tag: x}}]\n"
    assert [code for code, _, _ in errors(yaml_text, "team/big.yaml")] == ["list_too_long"]


def test_rule_text_over_the_size_limit_is_refused_before_parsing():
    text = "# " + "x" * MAX_SOURCE_BYTES + "\n" + listed(3)
    t0 = time.process_time()
    assert errors(text) == [("file_too_large", 1, 1)]
    assert time.process_time() - t0 < 3.0  # refused without parsing it (that would take several seconds)
