"""engine.sla's cycles, read from a chat's messages as the states read them: public, not
deleted, and only an agent's reply answers (a bot reply or a note does not)."""
from __future__ import annotations

from engine import sla
from engine.model import Chat, Customer, Message


def chat_with(*items, status="open", opened_at=0.0, closed_at=None):
    chat = Chat("c1", "widget", Customer("u1"), created_at=0.0, status=status, opened_at=opened_at,
                closed_at=closed_at)
    for i, (at, author, kind, deleted) in enumerate(items):
        chat.messages.append(Message(f"c1:m{i}", i, author, None, kind, "x", "widget", at, deleted=deleted))
    return chat


def msg(at, author, kind="reply", deleted=False):
    return (at, author, kind, deleted)


def test_first_and_next_response_cycles():
    chat = chat_with(msg(0, "customer"), msg(5, "customer"), msg(10, "bot"), msg(12, "agent", "note"),
                     msg(20, "agent"), msg(30, "customer"), msg(40, "agent"), msg(50, "customer"))
    assert sla.cycles(chat, "first_response") == [(0, 20)]
    assert sla.cycles(chat, "next_response") == [(30, 40), (50, None)]
    assert sla.cycle(chat, "next_response") == (50, None)


def test_a_deleted_reply_answers_nothing():
    chat = chat_with(msg(0, "customer"), msg(20, "agent", deleted=True), msg(30, "agent"))
    assert sla.cycles(chat, "first_response") == [(0, 30)]
    assert sla.cycles(chat, "next_response") == []


def test_no_customer_message_no_cycle():
    chat = chat_with(msg(5, "agent"))
    assert sla.cycle(chat, "first_response") is None and sla.cycle(chat, "next_response") is None


def test_resolution_is_the_current_episode():
    assert sla.cycles(chat_with(status="closed", opened_at=100.0, closed_at=300.0), "resolution") == [(100.0, 300.0)]
    assert sla.cycles(chat_with(opened_at=400.0, closed_at=None), "resolution") == [(400.0, None)]
