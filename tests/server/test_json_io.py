"""JSON in and out: orjson where it reads and writes the same values as json, json where
it would not (integers beyond 64 bits, NaN), and answers as Flask's own provider shapes them."""
from __future__ import annotations

import json

import pytest

from engine.model import Chat, Customer, Message
from engine.snapshot import chat_from_dict, chat_to_dict
from server.store import json_dumps, json_loads


@pytest.mark.parametrize("text", [
    '{"big": 123456789012345678901234567890, "n": 1}',  # orjson would give a float
    '{"x": NaN}', '[1e400]',  # orjson refuses these
    '{"t": 1764108000.123456, "s": "h\\u00e9llo", "l": [1, 2.5, null, true]}',
    '{"id": "c_0123456789012345678901"}',  # 19+ digits inside a string: json reads it the same
])
def test_json_loads_reads_what_json_reads(text):
    want = json.loads(text)
    got = json_loads(text)
    assert json.dumps(got) == json.dumps(want)  # NaN == NaN as text
    assert json.dumps(json_loads(text.encode())) == json.dumps(want)


def test_a_big_integer_in_a_custom_field_survives_a_round_trip():
    value = {"fields": {"order": 2 ** 70, "small": 7}}
    back = json_loads(json_dumps(value))
    assert back == value and isinstance(back["fields"]["order"], int)


def test_a_chat_survives_a_round_trip_with_mentions_as_tuples():
    chat = Chat("c1", "widget", Customer("u1"), 1.0)
    chat.messages = [Message("m0", 0, "customer", "u1", "message", "hi", "widget", 1.0),
                     Message("m1", 1, "agent", "alice", "note", "@bob look", "api", 2.0, mentions=("bob",))]
    chat.muted = {"zed", "amy"}
    back = chat_from_dict(json_loads(json_dumps(chat_to_dict(chat))))
    assert back == chat
    assert [type(m.mentions) for m in back.messages] == [tuple, tuple]
    assert chat_to_dict(back)["messages"][1]["mentions"] == ("bob",)
    assert chat_to_dict(back)["muted"] == ["amy", "zed"]


def test_answers_are_compact_sorted_utf8_json_and_bodies_are_read_the_same(app, client):
    from server.http import JSONProvider

    assert isinstance(app.json, JSONProvider)
    with app.app_context():
        assert app.json.dumps({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
        assert app.json.dumps({"a": 1}, indent=2) == json.dumps({"a": 1}, indent=2)  # Flask's, as asked
        assert app.json.dumps({"when": __import__("datetime").date(2026, 11, 25)}) == '{"when":"Wed, 25 Nov 2026 00:00:00 GMT"}'
        assert app.json.loads('{"big": 123456789012345678901234567890}')["big"] == 123456789012345678901234567890
    r = client.post("/api/widget/chats", json={"text": "Grüße ✓", "customer": {"name": "Zoë"}})
    assert r.status_code == 201
    body = r.get_data(as_text=True)
    assert "Grüße ✓" in body and json.loads(body)["chat"]["messages"][0]["text"] == "Grüße ✓"
    r = client.post("/api/widget/chats", data="{not json", content_type="application/json")
    assert r.status_code == 400 and r.get_json()["error"]
