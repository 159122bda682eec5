"""The domain core: commands, their refusals, reading, locks, visibility, routing, states."""
from __future__ import annotations

import copy

import pytest

from dsl.vocabulary import STATES
from engine import commands as cmd
from engine.model import ERROR_CODES, CommandRefused, World
from engine.states import STATE_FUNCS, state_since

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.fixture
def world():
    w = World()
    w.add_agent("alice", departments=("sales",))
    w.add_agent("bob", departments=("sales",))
    w.add_agent("carol", departments=("support",))
    w.add_agent("dave", access_chats=False)
    w.add_agent("tess", channels=["telegram"])
    return w


def started(world, chat="c1", text="Hi", at=T0, **kw):
    cmd.start_chat(world, at, chat, {"id": "u1", "name": "Ann", "email": "ann@example.com"},
                   text=text, **kw)
    return world.chats[chat]


def refused(world, code, fn, *args, **kw):
    """Call a command that must be refused with ``code`` and must change nothing."""
    before = copy.deepcopy(world)
    with pytest.raises(CommandRefused) as info:
        fn(world, *args, **kw)
    assert info.value.code == code, info.value
    assert code in ERROR_CODES
    assert world == before
    return info.value


def own(events):
    """A change's own events, checking that its chat.updated follows them."""
    *mine, updated = events
    assert updated.type == "chat.updated" and updated.data["events"] == types(mine), types(events)
    return mine


def types(events):
    return [e.type for e in events]


# ---------------------------------------------------------------- customer inputs

def test_start_chat_creates_chat_with_first_message(world):
    events = cmd.start_chat(world, T0, "c1", {"id": "u1", "name": "Ann", "fields": {"plan": "pro"}},
                            page_url="https://shop.example/pricing", text="Hi", fields={"src": "ad"})
    chat = world.chats["c1"]
    assert types(events) == ["chat.created"]
    ev = events[0]
    assert (ev.id, ev.chat_id, ev.actor, ev.message_id, ev.at) == ("c1:1", "c1", "customer", "c1:m1", T0)
    assert (chat.status, chat.priority, chat.tags, chat.department, chat.assignee) == ("open", 0, [], None, None)
    assert chat.page_url == "https://shop.example/pricing" and chat.fields == {"src": "ad"}
    assert chat.customer.fields == {"plan": "pro"} and chat.customer.online_since == T0
    [m] = chat.messages
    assert (m.author, m.author_id, m.kind, m.text, m.via, m.position) == ("customer", "u1", "reply", "Hi", "widget", 0)
    assert chat.customer_read == 0 and chat.agent_read == {}


def test_start_chat_without_text_and_with_department(world):
    events = cmd.start_chat(world, T0, "c1", {"id": "u1"}, channel="email", department="sales")
    assert events[0].message_id is None
    assert world.chats["c1"].department == "sales" and world.chats["c1"].messages == []


def test_start_chat_refusals(world):
    started(world)
    refused(world, "chat_exists", cmd.start_chat, T0, "c1", {"id": "u2"})
    refused(world, "bad_request", cmd.start_chat, T0, "c2", {"id": "u2"}, channel="pigeon")
    refused(world, "bad_request", cmd.start_chat, T0, "c2", {"name": "no id"})
    refused(world, "bad_request", cmd.start_chat, T0, "c2", {"id": "u2", "shoe_size": "1"})
    refused(world, "bad_request", cmd.start_chat, T0, "c2", {"id": "u2", "phone": 491234})
    refused(world, "bad_request", cmd.start_chat, T0, "c2", {"id": "u2"}, text="  ")


def test_customer_message_and_email_reply(world):
    chat = started(world)
    [ev] = cmd.customer_message(world, T0 + 5, "c1", "anyone?")
    assert (ev.type, ev.actor, ev.message_id) == ("message.created", "customer", "c1:m2")
    [ev] = cmd.email_reply(world, T0 + 9, "c1", "by mail")
    assert chat.messages[-1].via == "email" and chat.messages[-1].author == "customer"
    assert [m.text for m in cmd.customer_view(chat)] == ["Hi", "anyone?", "by mail"]
    assert chat.last_activity_at == T0 + 9
    refused(world, "unknown_chat", cmd.customer_message, T0, "nope", "x")
    refused(world, "bad_request", cmd.customer_message, T0, "c1", "")


def test_customer_message_reopens_closed_chat(world):
    chat = started(world)
    cmd.join(world, T0 + 1, "c1", "alice")
    cmd.close(world, T0 + 2, "c1", "alice")
    events = cmd.customer_message(world, T0 + 3, "c1", "one more thing")
    assert types(events) == ["chat.reopened", "message.created", "chat.updated"]
    assert events[-1].data["changes"] == {"status": ["closed", "open"]}
    assert events[0].actor == "customer"
    assert (chat.status, chat.opened_at, chat.closed_at, chat.assignee) == ("open", T0 + 3, None, "alice")


def test_an_automatic_reply_is_kept_but_reopens_reads_and_awaits_nothing(world):
    chat = started(world)
    cmd.join(world, T0 + 1, "c1", "alice")
    cmd.reply(world, T0 + 2, "c1", "alice", "Which order?")
    awaiting = state_since(chat, "chat.awaiting_customer")
    [ev] = cmd.email_reply(world, T0 + 3, "c1", "Out of office", subject="Auto: away", auto_reply=True)
    m = chat.messages[-1]
    assert (ev.type, m.auto_reply, m.subject, m.author, m.via, m.public) == \
        ("message.created", True, "Auto: away", "customer", "email", False)
    assert chat.customer_read == 0  # it read nothing: the agent's reply is still unread
    assert state_since(chat, "chat.awaiting_customer") == awaiting
    assert state_since(chat, "chat.awaiting_agent") is None
    assert [x.text for x in cmd.customer_view(chat)] == ["Hi", "Which order?"]
    cmd.close(world, T0 + 4, "c1", "alice")
    assert types(cmd.email_reply(world, T0 + 5, "c1", "Delivery failed", auto_reply=True)) == ["message.created"]
    assert chat.status == "closed"
    refused(world, "bad_request", cmd.email_reply, T0, "c1", "x", subject=3)
    refused(world, "bad_request", cmd.email_reply, T0, "c1", "x", subject="s" * 999)
    refused(world, "bad_request", cmd.email_reply, T0, "c1", "x", auto_reply="yes")


def test_an_agents_email_address_is_checked(world):
    assert world.add_agent("erin", email="erin@example.com").email == "erin@example.com"
    with pytest.raises(CommandRefused, match="email must be an address"):
        world.add_agent("fred", email="Fred <fred@example.com>")
    assert "fred" not in world.agents


def test_customer_presence_and_reads(world):
    chat = started(world)
    [ev] = cmd.customer_leaves(world, T0 + 10, "c1")
    assert ev.type == "customer.left"
    assert (chat.customer.online, chat.customer.offline_since) == (False, T0 + 10)
    assert cmd.customer_leaves(world, T0 + 11, "c1") == []
    [ev] = cmd.customer_returns(world, T0 + 20, "c1")
    assert ev.type == "customer.returned"
    assert (chat.customer.online, chat.customer.online_since, chat.customer.offline_since) == (True, T0 + 20, None)
    assert cmd.customer_returns(world, T0 + 21, "c1") == []
    cmd.join(world, T0 + 30, "c1", "alice")
    cmd.reply(world, T0 + 31, "c1", "alice", text="Hello")
    cmd.reply(world, T0 + 32, "c1", "alice", text="Still there?")
    [ev] = cmd.customer_reads(world, T0 + 40, "c1")
    assert (ev.type, ev.actor, ev.message_id) == ("message.read", "customer", "c1:m3")
    assert chat.customer_read == 2


# ---------------------------------------------------------------- reading (SPEC §2.14)

def test_read_rules(world):
    chat = started(world)
    cmd.customer_message(world, T0 + 1, "c1", "second")
    assert cmd.join(world, T0 + 2, "c1", "alice")
    assert chat.agent_read == {}  # joining alone reads nothing
    cmd.note(world, T0 + 3, "c1", "alice", "looking")
    assert chat.agent_read == {}  # nor does a note
    cmd.reply(world, T0 + 4, "c1", "alice", text="Hello")
    assert chat.agent_read == {"alice": 3}  # a public reply reads what came before it
    assert chat.customer_read == 1  # the customer has not read the reply yet
    cmd.customer_message(world, T0 + 5, "c1", "thanks")
    assert chat.customer_read == 4  # a customer message reads the replies before it
    assert chat.agent_read == {"alice": 3}
    [ev] = cmd.read(world, T0 + 6, "c1", "bob")
    assert (ev.type, ev.actor, ev.agent_id, ev.data["position"]) == ("message.read", "agent", "bob", 4)
    assert chat.agent_read == {"alice": 3, "bob": 4}
    refused(world, "no_access", cmd.read, T0, "c1", "dave")
    refused(world, "unknown_agent", cmd.read, T0, "c1", "zed")


# ---------------------------------------------------------------- join, takeover, subscriptions

def test_join_makes_responsible_and_subscribed(world):
    chat = started(world)
    [ev] = own(cmd.join(world, T0 + 1, "c1", "alice"))
    assert (ev.type, ev.actor, ev.agent_id, ev.data["previous_assignee"]) == ("chat.joined", "agent", "alice", None)
    assert (chat.assignee, chat.subscribers, chat.assigned_at, chat.unassigned_at) == ("alice", ["alice"], T0 + 1, None)
    assert cmd.join(world, T0 + 2, "c1", "alice") == []


def test_later_join_takes_over(world):
    chat = started(world)
    cmd.join(world, T0 + 1, "c1", "alice")
    [ev] = own(cmd.join(world, T0 + 2, "c1", "bob"))
    assert ev.data["previous_assignee"] == "alice"
    assert chat.assignee == "bob" and chat.subscribers == ["alice", "bob"]
    refused(world, "not_joined", cmd.reply, T0 + 3, "c1", "alice", text="mine")


def test_join_refusals(world):
    started(world)
    refused(world, "unknown_agent", cmd.join, T0, "c1", "zed")
    refused(world, "unknown_chat", cmd.join, T0, "c9", "alice")
    refused(world, "no_access", cmd.join, T0, "c1", "dave")
    refused(world, "no_access", cmd.join, T0, "c1", "tess")  # telegram only
    cmd.join(world, T0, "c1", "alice")
    cmd.lock(world, T0, "c1", "alice")
    refused(world, "locked", cmd.join, T0, "c1", "bob")
    cmd.close(world, T0, "c1", "alice")
    refused(world, "chat_closed", cmd.join, T0, "c1", "bob")


def test_channel_visibility(world):
    cmd.start_chat(world, T0, "tg", {"id": "u"}, channel="telegram")
    assert cmd.join(world, T0, "tg", "tess")[0].type == "chat.joined"
    cmd.subscribe_operators(world, T0, "tg", rule="r")
    assert world.chats["tg"].subscribers == ["tess", "alice", "bob", "carol"]


def test_unsubscribe_mutes_until_subscribe_or_join(world):
    chat = started(world)
    evs = cmd.subscribe_operators(world, T0, "c1", rule="default.subscribe_operators")
    assert [e.data["agent"] for e in evs] == ["alice", "bob", "carol"]
    assert all(e.actor == "rule" and e.rule == "default.subscribe_operators" for e in evs)
    [ev] = cmd.unsubscribe(world, T0 + 1, "c1", "bob")
    assert (ev.type, ev.agent_id) == ("chat.unsubscribed", "bob")
    assert chat.subscribers == ["alice", "carol"] and chat.muted == {"bob"}
    assert cmd.unsubscribe(world, T0 + 2, "c1", "bob") == []
    # no rule re-subscribes a muted agent
    assert cmd.subscribe_operators(world, T0 + 3, "c1") == []
    assert cmd.subscribe_agent(world, T0 + 3, "c1", "bob") == []
    assert cmd.subscribe_department(world, T0 + 3, "c1", "sales") == []
    cmd.assign_agent(world, T0 + 4, "c1", "bob", rule="r")
    assert chat.assignee == "bob" and "bob" not in chat.subscribers and chat.muted == {"bob"}
    # joining lifts the mute
    [ev] = cmd.join(world, T0 + 5, "c1", "bob")  # already the assignee: no chat.updated
    assert ev.type == "chat.joined" and chat.subscribers == ["alice", "carol", "bob"] and chat.muted == set()
    cmd.unsubscribe(world, T0 + 6, "c1", "carol")
    [ev] = cmd.subscribe(world, T0 + 7, "c1", "carol")
    assert ev.type == "chat.subscribed" and chat.muted == set() and chat.subscribers[-1] == "carol"
    assert cmd.subscribe(world, T0 + 8, "c1", "carol") == []
    refused(world, "no_access", cmd.subscribe, T0, "c1", "dave")


# ---------------------------------------------------------------- replies, notes, locks

def test_reply_refusals(world):
    chat = started(world)
    refused(world, "not_joined", cmd.reply, T0, "c1", "bob", text="Hello")
    refused(world, "no_access", cmd.reply, T0, "c1", "dave", text="Hello")
    refused(world, "unknown_agent", cmd.reply, T0, "c1", "zed", text="Hello")
    cmd.join(world, T0, "c1", "alice")
    refused(world, "bad_request", cmd.reply, T0, "c1", "alice")
    refused(world, "bad_request", cmd.reply, T0, "c1", "alice", text="a", canned_text="b")
    cmd.close(world, T0 + 1, "c1")
    refused(world, "chat_closed", cmd.reply, T0 + 2, "c1", "alice", text="late")
    assert len(chat.messages) == 1


def test_reply_canned_and_article(world):
    chat = started(world)
    cmd.join(world, T0, "c1", "alice")
    [ev] = cmd.reply(world, T0 + 1, "c1", "alice", canned_text="Thanks for waiting!")
    assert (ev.type, ev.agent_id, ev.message_id) == ("message.created", "alice", "c1:m2")
    cmd.reply(world, T0 + 2, "c1", "alice", article="refunds")
    m = chat.messages[-1]
    assert (m.text, m.article, m.author, m.kind) == ("refunds", "refunds", "agent", "reply")


def test_lock_rules(world):
    chat = started(world)
    refused(world, "not_joined", cmd.lock, T0, "c1", "alice")
    cmd.join(world, T0, "c1", "alice")
    [ev] = cmd.lock(world, T0 + 1, "c1", "alice")
    assert (ev.type, chat.locked_by, chat.locked_at) == ("chat.locked", "alice", T0 + 1)
    assert cmd.lock(world, T0 + 2, "c1", "alice") == []
    refused(world, "locked", cmd.join, T0 + 3, "c1", "bob")
    refused(world, "locked", cmd.reply, T0 + 3, "c1", "bob", text="me")
    refused(world, "locked", cmd.assign, T0 + 3, "c1", "bob", agent="bob")
    refused(world, "not_joined", cmd.unlock, T0 + 3, "c1", "bob")
    assert cmd.note(world, T0 + 4, "c1", "bob", "notes still work")[0].type == "message.created"
    assert cmd.reply(world, T0 + 5, "c1", "alice", text="I am on it")  # the holder replies
    [ev] = cmd.unlock(world, T0 + 6, "c1", "alice")
    assert (ev.type, chat.locked_by, chat.locked_at) == ("chat.unlocked", None, None)
    assert cmd.unlock(world, T0 + 7, "c1", "alice") == []
    assert cmd.join(world, T0 + 8, "c1", "bob")[0].type == "chat.joined"


def test_lock_ends_with_close_and_rule_reassignment(world):
    chat = started(world)
    cmd.join(world, T0, "c1", "alice")
    cmd.lock(world, T0, "c1", "alice")
    [ev] = own(cmd.close(world, T0 + 1, "c1", "alice"))
    assert ev.data["ended_lock"] == "alice" and chat.locked_by is None
    assert (chat.assignee, chat.subscribers) == ("alice", ["alice"])  # close keeps them
    cmd.reopen(world, T0 + 2, "c1", "alice")
    assert chat.locked_by is None
    cmd.lock(world, T0 + 3, "c1", "alice")
    [ev] = own(cmd.assign_agent(world, T0 + 4, "c1", "bob", rule="route"))
    assert (ev.type, ev.actor, ev.rule, ev.data["ended_lock"]) == ("chat.assigned", "rule", "route", "alice")
    assert (chat.assignee, chat.locked_by) == ("bob", None)


def test_assignee_holding_lock_may_assign_away(world):
    chat = started(world)
    cmd.join(world, T0, "c1", "alice")
    cmd.lock(world, T0, "c1", "alice")
    [ev] = own(cmd.assign(world, T0 + 1, "c1", "alice", agent="bob"))
    assert (ev.actor, ev.agent_id, chat.assignee, chat.locked_by) == ("agent", "alice", "bob", None)


def test_rule_lock_and_unlock(world):
    chat = started(world)
    assert cmd.lock(world, T0, "c1", rule="r") == []  # no assignee: nothing
    cmd.join(world, T0, "c1", "carol")
    [ev] = cmd.lock(world, T0 + 1, "c1", rule="r")
    assert (ev.actor, ev.rule, chat.locked_by) == ("rule", "r", "carol")
    [ev] = cmd.unlock(world, T0 + 2, "c1", rule="r")
    assert ev.type == "chat.unlocked" and chat.locked_by is None
    assert cmd.unlock(world, T0 + 3, "c1", rule="r") == []


def test_note_mentions_and_privacy(world):
    chat = started(world)
    [ev] = cmd.note(world, T0 + 1, "c1", "bob", "@alice and @carol, see @zed. ping @alice.")
    m = chat.messages[-1]
    assert (m.kind, m.mentions) == ("note", ("alice", "carol"))
    assert ev.data["mentions"] == ["alice", "carol"]
    cmd.bot_note(world, T0 + 2, "c1", "@bob check", rule="r")
    assert chat.messages[-1].mentions == ("bob",) and chat.messages[-1].author == "bot"
    assert [m.text for m in cmd.customer_view(chat)] == ["Hi"]
    refused(world, "no_access", cmd.note, T0, "c1", "dave", "hi")
    refused(world, "bad_request", cmd.note, T0, "c1", "bob", "")


# ---------------------------------------------------------------- assign, close, reopen

def test_manual_assign(world):
    chat = started(world)
    cmd.unsubscribe(world, T0, "c1", "carol")
    [ev] = own(cmd.assign(world, T0 + 1, "c1", "alice", agent="carol"))
    assert (ev.type, ev.actor, ev.agent_id, ev.data["assignee"]) == ("chat.assigned", "agent", "alice", "carol")
    assert chat.subscribers == ["carol"] and chat.muted == set()  # an agent's assignment unmutes
    assert cmd.assign(world, T0 + 2, "c1", "alice", agent="carol") == []
    refused(world, "no_access", cmd.assign, T0, "c1", "dave", agent="bob")
    refused(world, "unknown_agent", cmd.assign, T0, "c1", "alice", agent="zed")
    refused(world, "no_access", cmd.assign, T0, "c1", "alice", agent="tess")
    refused(world, "bad_request", cmd.assign, T0, "c1", "alice")
    refused(world, "bad_request", cmd.assign, T0, "c1", "alice", agent="bob", department="sales")
    refused(world, "bad_request", cmd.assign, T0, "c1", "alice", department="sales", strategy="random")


def test_manual_assign_department_uses_rule_picking(world):
    chat = started(world)
    [ev] = own(cmd.assign(world, T0, "c1", "carol", department="sales"))
    assert (ev.agent_id, ev.data["assignee"], ev.data["department"]) == ("carol", "alice", "sales")
    assert (chat.assignee, chat.department, world.rr_last) == ("alice", "sales", {"sales": "alice"})


def test_close_and_reopen(world):
    chat = started(world)
    [ev] = own(cmd.close(world, T0 + 1, "c1"))
    assert (ev.type, ev.actor, chat.status, chat.closed_at) == ("chat.closed", "system", "closed", T0 + 1)
    refused(world, "chat_closed", cmd.close, T0 + 2, "c1", "bob")
    assert cmd.close(world, T0 + 2, "c1", rule="r") == []
    [ev] = own(cmd.reopen(world, T0 + 3, "c1", "bob"))
    assert (ev.type, ev.actor, ev.agent_id) == ("chat.reopened", "agent", "bob")
    assert (chat.status, chat.opened_at, chat.closed_at) == ("open", T0 + 3, None)
    refused(world, "chat_open", cmd.reopen, T0 + 4, "c1")
    assert cmd.reopen(world, T0 + 4, "c1", rule="r") == []
    refused(world, "no_access", cmd.close, T0 + 4, "c1", "dave")
    [ev] = own(cmd.close(world, T0 + 5, "c1", rule="auto_close"))
    assert (ev.actor, ev.rule) == ("rule", "auto_close")
    refused(world, "unknown_chat", cmd.close, T0, "nope")


# ---------------------------------------------------------------- edit and delete (SPEC §2.13)

def test_edit_and_delete_own_messages(world):
    chat = started(world)
    cmd.join(world, T0, "c1", "alice")
    cmd.reply(world, T0 + 1, "c1", "alice", text="Helo")
    cmd.note(world, T0 + 2, "c1", "alice", "typo above")
    [ev] = cmd.edit_message(world, T0 + 3, "c1", "alice", 2, "Hello")
    assert (ev.type, ev.message_id) == ("message.edited", "c1:m2")
    assert [m.text for m in cmd.customer_view(chat)] == ["Hi", "Hello"]
    assert chat.messages[1].edited_at == T0 + 3
    cmd.edit_message(world, T0 + 4, "c1", "alice", "last", "ask @bob")  # the note
    assert chat.messages[2].mentions == ("bob",)
    [ev] = cmd.delete_message(world, T0 + 5, "c1", "alice", "2")
    assert (ev.type, ev.message_id, chat.messages[1].deleted) == ("message.deleted", "c1:m2", True)
    assert [m.text for m in cmd.customer_view(chat)] == ["Hi"]
    assert len(chat.messages) == 3 and chat.messages[1].text == "Hello"  # agents still see it, as deleted
    refused(world, "message_deleted", cmd.edit_message, T0, "c1", "alice", 2, "again")
    refused(world, "message_deleted", cmd.delete_message, T0, "c1", "alice", 2)
    refused(world, "not_author", cmd.edit_message, T0, "c1", "alice", 1, "not mine")
    refused(world, "not_author", cmd.delete_message, T0, "c1", "bob", 3)
    refused(world, "unknown_message", cmd.delete_message, T0, "c1", "alice", 9)
    refused(world, "unknown_message", cmd.delete_message, T0, "c1", "alice", 0)
    refused(world, "unknown_message", cmd.edit_message, T0, "c1", "bob", "last", "x")
    refused(world, "bad_request", cmd.edit_message, T0, "c1", "alice", "first", "x")
    refused(world, "bad_request", cmd.edit_message, T0, "c1", "alice", 3, "")
    # "last" skips deleted messages
    cmd.delete_message(world, T0 + 6, "c1", "alice", "last")
    refused(world, "unknown_message", cmd.delete_message, T0, "c1", "alice", "last")


# ---------------------------------------------------------------- agent status

def test_agent_status(world):
    [ev] = cmd.agent_status(world, T0, "bob", "away")
    assert (ev.type, ev.chat_id, ev.agent_id, ev.data) == (
        "agent.status_changed", None, "bob", {"previous_status": "online", "status": "away"})
    assert ev.id == "agents:1" and world.agents["bob"].status == "away"
    assert cmd.agent_status(world, T0, "bob", "away") == []
    refused(world, "bad_request", cmd.agent_status, T0, "bob", "asleep")
    refused(world, "unknown_agent", cmd.agent_status, T0, "zed", "online")


def test_add_agent_refusals(world):
    refused(world, "agent_exists", World.add_agent, "alice")
    refused(world, "bad_request", World.add_agent, "x", status="busy")
    refused(world, "bad_request", World.add_agent, "x", channels=["fax"])


# ---------------------------------------------------------------- rule actions

def test_rule_tags_priority_fields(world):
    chat = started(world)
    [ev] = own(cmd.tag(world, T0, "c1", "pricing", rule="route_pricing"))
    assert (ev.type, ev.actor, ev.rule, ev.data) == ("chat.tagged", "rule", "route_pricing", {"tag": "pricing"})
    assert cmd.tag(world, T0, "c1", "pricing", rule="r") == []
    assert cmd.untag(world, T0, "c1", "vip", rule="r") == [] and chat.tags == ["pricing"]
    [ev] = own(cmd.untag(world, T0, "c1", "pricing", rule="r"))
    assert (ev.type, ev.rule, ev.data, chat.tags) == ("chat.untagged", "r", {"tag": "pricing"}, [])
    [upd] = cmd.set_priority(world, T0, "c1", 3, rule="r")
    assert (upd.type, upd.actor, upd.rule, upd.data) == (
        "chat.updated", "rule", "r", {"changes": {"priority": [0, 3]}, "events": []})
    assert cmd.set_priority(world, T0, "c1", 3, rule="r") == []
    [upd] = cmd.set_field(world, T0, "c1", "plan", "pro", rule="r")
    assert upd.data["changes"] == {"fields.plan": [None, "pro"]}
    assert cmd.set_field(world, T0, "c1", "plan", "pro", rule="r") == []
    [upd] = cmd.set_field(world, T0, "c1", "plan", True, rule="r")
    assert upd.data["changes"] == {"fields.plan": ["pro", True]}
    cmd.set_field(world, T0, "c1", "plan", "pro", rule="r")
    assert (chat.priority, chat.fields) == (3, {"plan": "pro"})
    refused(world, "bad_request", cmd.set_priority, T0, "c1", 5, rule="r")
    refused(world, "bad_request", cmd.set_priority, T0, "c1", True, rule="r")


def test_rule_assign_unassign_and_unsubscribe(world):
    chat = started(world)
    [ev] = own(cmd.assign_agent(world, T0 + 1, "c1", "bob", rule="r"))
    assert (ev.agent_id, chat.assignee, chat.subscribers) == (None, "bob", ["bob"])
    assert cmd.assign_agent(world, T0 + 2, "c1", "bob", rule="r") == []
    refused(world, "unknown_agent", cmd.assign_agent, T0, "c1", "zed", rule="r")
    [ev] = own(cmd.unassign(world, T0 + 3, "c1", rule="r"))
    assert (ev.type, ev.data["previous_assignee"], chat.assignee) == ("chat.unassigned", "bob", None)
    assert chat.subscribers == ["bob"] and chat.unassigned_at == T0 + 3
    assert cmd.unassign(world, T0 + 4, "c1", rule="r") == []
    [ev] = cmd.unsubscribe_agent(world, T0 + 5, "c1", "bob", rule="r")
    assert ev.type == "chat.unsubscribed" and chat.subscribers == [] and chat.muted == set()
    assert cmd.unsubscribe_agent(world, T0 + 5, "c1", "bob", rule="r") == []
    [ev] = cmd.subscribe_agent(world, T0 + 6, "c1", "carol", rule="r")
    assert (ev.type, ev.data["agent"]) == ("chat.subscribed", "carol")
    assert cmd.subscribe_agent(world, T0 + 6, "c1", "dave", rule="r") == []  # does not see it
    evs = cmd.subscribe_department(world, T0 + 7, "c1", "sales", rule="r")
    assert [e.data["agent"] for e in evs] == ["alice", "bob"]


def test_bot_replies(world):
    chat = started(world)
    [ev] = cmd.bot_reply(world, T0 + 1, "c1", "We got your message", rule="ack")
    m = chat.messages[-1]
    assert (ev.actor, ev.rule, ev.message_id) == ("rule", "ack", m.id)
    assert (m.author, m.author_id, m.kind, m.via) == ("bot", "ack", "reply", "api")
    cmd.reply_article(world, T0 + 2, "c1", "refunds", "How refunds work: …", rule="faq")
    assert (chat.messages[-1].article, chat.messages[-1].text) == ("refunds", "How refunds work: …")
    cmd.bot_note(world, T0 + 3, "c1", "internal", rule="r")
    assert [m.text for m in cmd.customer_view(chat)] == ["Hi", "We got your message", "How refunds work: …"]
    # a bot reply neither answers the customer nor waits for them
    assert state_since(chat, "chat.awaiting_agent") == T0
    assert state_since(chat, "chat.awaiting_customer") is None
    assert state_since(chat, "chat.unread_by_customer") is None


# ---------------------------------------------------------------- assign department (SPEC §3.6)

@pytest.fixture
def desk():
    w = World()
    w.add_agent("a1", departments=("night",))
    w.add_agent("a2", departments=("night",))
    w.add_agent("a3", departments=("night",))
    w.add_agent("x", departments=("day",))
    return w


def routed(world, n, strategy="round_robin"):
    picked = []
    for i in range(n):
        cid = f"n{len(world.chats) + 1}"
        cmd.start_chat(world, T0 + i, cid, {"id": f"u{i}"}, text="hi")
        cmd.assign_department(world, T0 + i, cid, "night", strategy, rule="night_shift")
        picked.append(world.chats[cid].assignee)
    return picked


def test_round_robin_rotates(desk):
    assert routed(desk, 5) == ["a1", "a2", "a3", "a1", "a2"]
    assert desk.chats["n1"].department == "night"


def test_round_robin_skips_offline_and_full(desk):
    desk.agents["a2"].status = "offline"
    desk.agents["a3"].max_chats = 1
    assert routed(desk, 4) == ["a1", "a3", "a1", "a1"]


def test_least_busy_picks_fewest_ties_round_robin(desk):
    for i in range(2):
        cmd.start_chat(desk, T0, f"old{i}", {"id": "u"})
        cmd.assign_agent(desk, T0, f"old{i}", "a1")
    cmd.start_chat(desk, T0, "old2", {"id": "u"})
    cmd.assign_agent(desk, T0, "old2", "a2")
    cmd.close(desk, T0, "old2")  # closed chats do not count
    assert routed(desk, 4, "least_busy") == ["a2", "a3", "a2", "a3"]


def test_none_free_keeps_department_unassigned(desk):
    for a in ("a1", "a2", "a3"):
        desk.agents[a].status = "away"
    cmd.start_chat(desk, T0, "c", {"id": "u"})
    [upd] = cmd.assign_department(desk, T0, "c", "night", rule="r")  # only the department changed
    assert upd.data == {"changes": {"department": [None, "night"]}, "events": []}
    chat = desk.chats["c"]
    assert (chat.assignee, chat.department) == (None, "night")
    # an assignee outside the department loses the chat when nobody there is free
    cmd.assign_agent(desk, T0 + 1, "c", "x", rule="r")
    [ev] = own(cmd.assign_department(desk, T0 + 2, "c", "night", rule="r"))
    assert (ev.type, ev.data["previous_assignee"], chat.assignee) == ("chat.unassigned", "x", None)


def test_online_assignee_of_department_stays(desk):
    cmd.start_chat(desk, T0, "c", {"id": "u"})
    cmd.assign_agent(desk, T0, "c", "a3", rule="r")
    assert types(cmd.assign_department(desk, T0 + 1, "c", "night", rule="r")) == ["chat.updated"]
    assert cmd.assign_department(desk, T0 + 1, "c", "night", rule="r") == []
    assert (desk.chats["c"].assignee, desk.chats["c"].department) == ("a3", "night")
    desk.agents["a3"].status = "offline"
    [ev] = own(cmd.assign_department(desk, T0 + 2, "c", "night", rule="r"))
    assert (ev.data["previous_assignee"], ev.data["assignee"]) == ("a3", "a1")


# ---------------------------------------------------------------- states over a timeline

def anchors(chat):
    return {name: state_since(chat, name) for name in STATES}


def test_every_state_has_a_function():
    assert set(STATE_FUNCS) == set(STATES)


def test_state_anchors_over_a_timeline(world):
    chat = started(world, text="Hi")  # t=0
    s = anchors(chat)
    assert s == {
        "chat.open": T0, "chat.closed": None, "chat.idle": T0, "chat.unassigned": T0,
        "chat.assigned": None, "chat.awaiting_agent": T0, "chat.awaiting_customer": None,
        "chat.unread_by_assignee": None, "chat.unread_by_customer": None, "chat.locked": None,
        "customer.online": T0, "customer.offline": None, "chat.pending": None, "chat.snoozed": None,
    }
    cmd.customer_message(world, T0 + 30, "c1", "hello?")  # does not restart awaiting_agent
    cmd.join(world, T0 + 60, "c1", "alice")
    s = anchors(chat)
    assert (s["chat.awaiting_agent"], s["chat.idle"]) == (T0, T0 + 30)
    assert (s["chat.assigned"], s["chat.unassigned"], s["chat.unread_by_assignee"]) == (T0 + 60, None, T0)
    cmd.read(world, T0 + 70, "c1", "alice")
    assert state_since(chat, "chat.unread_by_assignee") is None
    cmd.note(world, T0 + 80, "c1", "alice", "private")  # notes are not public: idle goes on
    assert state_since(chat, "chat.idle") == T0 + 30
    cmd.reply(world, T0 + 90, "c1", "alice", text="Hello")
    s = anchors(chat)
    assert (s["chat.awaiting_agent"], s["chat.awaiting_customer"], s["chat.unread_by_customer"]) == (None, T0 + 90, T0 + 90)
    assert s["chat.idle"] == T0 + 90
    cmd.reply(world, T0 + 100, "c1", "alice", text="Are you there?")
    s = anchors(chat)
    assert (s["chat.awaiting_customer"], s["chat.unread_by_customer"]) == (T0 + 100, T0 + 90)
    cmd.customer_leaves(world, T0 + 110, "c1")
    assert (state_since(chat, "customer.offline"), state_since(chat, "customer.online")) == (T0 + 110, None)
    cmd.lock(world, T0 + 120, "c1", "alice")
    assert state_since(chat, "chat.locked") == T0 + 120
    cmd.customer_message(world, T0 + 130, "c1", "yes")
    s = anchors(chat)
    assert (s["chat.awaiting_customer"], s["chat.unread_by_customer"]) == (None, None)
    assert (s["chat.awaiting_agent"], s["chat.unread_by_assignee"]) == (T0 + 130, T0 + 130)
    cmd.customer_message(world, T0 + 140, "c1", "hello??")
    assert state_since(chat, "chat.awaiting_agent") == T0 + 130
    cmd.customer_returns(world, T0 + 150, "c1")
    assert state_since(chat, "customer.online") == T0 + 150
    cmd.join(world, T0 + 160, "c1", "alice")  # already responsible: no new episode
    assert state_since(chat, "chat.assigned") == T0 + 60
    cmd.close(world, T0 + 200, "c1", "alice")
    s = anchors(chat)
    assert (s["chat.open"], s["chat.closed"], s["chat.idle"], s["chat.locked"]) == (None, T0 + 200, None, None)
    cmd.reopen(world, T0 + 300, "c1", "alice")
    s = anchors(chat)
    assert (s["chat.open"], s["chat.closed"], s["chat.idle"]) == (T0 + 300, None, T0 + 300)
    cmd.unassign(world, T0 + 400, "c1", rule="r")
    s = anchors(chat)
    assert (s["chat.unassigned"], s["chat.assigned"], s["chat.unread_by_assignee"]) == (T0 + 400, None, None)
    # issue 8.3: pending and snoozed end open (and idle), and a customer message ends them
    cmd.set_status(world, T0 + 500, "c1", "alice", "pending")
    s = anchors(chat)
    assert (s["chat.pending"], s["chat.open"], s["chat.idle"], s["chat.snoozed"]) == (T0 + 500, None, None, None)
    cmd.snooze(world, T0 + 600, "c1", "alice", duration="1h")
    s = anchors(chat)
    assert (s["chat.snoozed"], s["chat.pending"], chat.snoozed_until) == (T0 + 600, None, T0 + 600 + 3600)
    cmd.snooze(world, T0 + 700, "c1", "bob", until=T0 + 7200)  # a new snooze is a new episode
    assert (state_since(chat, "chat.snoozed"), chat.snoozed_until) == (T0 + 700, T0 + 7200)
    [reopened, _, updated] = cmd.customer_message(world, T0 + 800, "c1", "back")
    assert reopened.data == {"reason": "customer_message", "previous_status": "snoozed"}
    assert updated.data["changes"] == {"status": ["snoozed", "open"]}
    s = anchors(chat)
    assert (s["chat.open"], s["chat.snoozed"], s["chat.idle"], chat.snoozed_until) == (T0 + 800, None, T0 + 800, None)


def test_snooze_ends_by_itself_and_only_when_due(world):
    chat = started(world)
    cmd.join(world, T0, "c1", "alice")
    assert world.open_chats("alice") == 1
    [snoozed, updated] = cmd.snooze(world, T0 + 10, "c1", "alice", duration=90)
    assert (snoozed.type, snoozed.data, snoozed.agent_id) == ("chat.snoozed", {"until": T0 + 100, "previous_status": "open"},
                                                               "alice")
    assert updated.data["changes"] == {"status": ["open", "snoozed"]}
    assert world.open_chats("alice") == 0  # only open chats count towards capacity
    assert cmd.snooze_ended(world, T0 + 99, "c1") == []
    [reopened, updated] = cmd.snooze_ended(world, T0 + 100, "c1")
    assert (reopened.type, reopened.actor, reopened.data["reason"]) == ("chat.reopened", "system", "snooze_ended")
    assert (chat.status, chat.opened_at, world.open_chats("alice")) == ("open", T0 + 100, 1)
    assert cmd.snooze_ended(world, T0 + 200, "c1") == []  # no longer snoozed


def test_status_commands_refuse_like_the_other_agent_commands(world):
    chat = started(world)
    cmd.join(world, T0, "c1", "alice")
    cmd.lock(world, T0, "c1", "alice")
    for fn, kw in ((cmd.snooze, {"duration": "1h"}), (cmd.set_status, {"status": "pending"})):
        with pytest.raises(CommandRefused) as e:
            fn(world, T0 + 1, "c1", "bob", **kw)
        assert e.value.code == "locked"
    for kw in ({}, {"duration": "1h", "until": T0 + 50}, {"duration": "soon"}, {"duration": 0}, {"until": T0 - 1},
               {"duration": 367 * 86400}, {"duration": True}):
        with pytest.raises(CommandRefused) as e:
            cmd.snooze(world, T0 + 1, "c1", "alice", **kw)
        assert e.value.code == "bad_request", kw
    with pytest.raises(CommandRefused) as e:
        cmd.set_status(world, T0 + 1, "c1", "alice", "closed")
    assert e.value.code == "bad_request"
    assert chat.status == "open" and chat.snoozed_until is None  # nothing was changed
    cmd.close(world, T0 + 2, "c1", "alice")
    with pytest.raises(CommandRefused) as e:
        cmd.snooze(world, T0 + 3, "c1", "alice", duration="1h")
    assert e.value.code == "chat_closed"
    assert cmd.snooze(world, T0 + 3, "c1", duration="1h", rule="r") == []  # a rule: nothing
    assert cmd.set_status(world, T0 + 3, "c1", status="pending", rule="r") == []


def test_states_ignore_deleted_messages(world):
    chat = started(world)
    cmd.join(world, T0 + 1, "c1", "alice")
    cmd.reply(world, T0 + 2, "c1", "alice", text="Hello")
    assert state_since(chat, "chat.awaiting_agent") is None
    cmd.delete_message(world, T0 + 3, "c1", "alice", "last")
    assert state_since(chat, "chat.awaiting_agent") == T0  # the answer is gone
    assert state_since(chat, "chat.unread_by_customer") is None
    assert state_since(chat, "chat.idle") == T0


def test_new_assignee_starts_new_assigned_episode(world):
    chat = started(world)
    cmd.join(world, T0 + 1, "c1", "alice")
    cmd.join(world, T0 + 5, "c1", "bob")
    assert state_since(chat, "chat.assigned") == T0 + 5
    assert state_since(chat, "chat.unread_by_assignee") == T0  # bob has read nothing


def test_event_ids_are_deterministic(world):
    ids = []
    for _ in range(2):
        w = copy.deepcopy(world)
        evs = cmd.start_chat(w, T0, "c1", {"id": "u"}, text="Hi")
        evs += cmd.subscribe_operators(w, T0, "c1", rule="r")
        evs += cmd.customer_message(w, T0 + 1, "c1", "again")
        ids.append([e.id for e in evs])
    assert ids[0] == ids[1] == ["c1:1", "c1:2", "c1:3", "c1:4", "c1:5"]


def test_a_chat_survives_storage_as_json_exactly(world):
    """engine.snapshot writes a chat field by field (not with dataclasses.asdict, for
    speed): the data must be what asdict gives, and reading it back the same chat."""
    import dataclasses
    import json

    from engine.snapshot import chat_from_dict, chat_to_dict, event_from_dict, event_to_dict

    chat = started(world, page_url="https://shop.example/pricing")
    cmd.join(world, T0 + 1, "c1", "alice")
    cmd.note(world, T0 + 2, "c1", "alice", "@bob look")
    cmd.reply(world, T0 + 3, "c1", "alice", "Hello")
    cmd.edit_message(world, T0 + 4, "c1", "alice", 3, "Hello Ann")
    cmd.subscribe(world, T0 + 5, "c1", "bob")
    cmd.unsubscribe(world, T0 + 6, "c1", "bob")
    cmd.lock(world, T0 + 7, "c1", "alice")
    evs = cmd.customer_leaves(world, T0 + 8, "c1")
    chat.fields["plan"] = {"tier": "pro", "seats": [1, 2]}

    expected = dataclasses.asdict(chat)
    expected["muted"] = sorted(chat.muted)
    data = chat_to_dict(chat)
    assert data == expected and data["muted"] == ["bob"]
    stored = json.loads(json.dumps(data))
    assert chat_from_dict(stored) == chat
    assert [event_from_dict(json.loads(json.dumps(event_to_dict(e)))) for e in evs] == evs
