"""The live-chat domain as data: agents, customers, messages, chats, events, the world.

Pure Python: nothing here reads the clock or the environment; every instant is passed in
as ``at`` (seconds since the Unix epoch, UTC). The commands that change these objects
live in :mod:`engine.commands`, the states derived from them in :mod:`engine.states`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dsl.errors import ChatflowError
from dsl.vocabulary import AGENT_STATUSES, CHANNELS, EVENTS

# Every code a refused command carries, with what it means. HTTP answers and scenario
# steps (`error: CODE`) use these names as they are.
ERROR_CODES: dict[str, str] = {
    "not_joined": "the agent is not the chat's responsible agent (assignee)",
    "locked": "another agent holds the chat's reply lock",
    "no_access": "the agent does not see the chat (no access_chats, or not its channel)",
    "not_author": "only the author of a message may edit or delete it",
    "chat_closed": "the chat is closed",
    "unknown_schedule": "the active rule set has no schedule of this name",
    "chat_open": "the chat is already open",
    "unknown_chat": "no chat has this id",
    "unknown_agent": "no agent has this id",
    "unknown_message": "no such message in the chat ('last' of an agent who wrote none, "
                       "or a position out of range)",
    "message_deleted": "the message was deleted and can no longer be edited or deleted",
    "chat_exists": "a chat with this id already exists",
    "agent_exists": "an agent with this id already exists",
    "bad_request": "an argument is missing, empty or not one of its allowed values",
}

AUTHORS = ("customer", "agent", "bot", "system")
KINDS = ("reply", "note")
VIAS = ("widget", "email", "api")
NOTIFICATION_CHANNELS = ("in_app", "email", "off")  # an agent's preference per template
ACTORS = ("customer", "agent", "rule", "system")


class CommandRefused(ChatflowError):
    """A command the domain refuses; nothing was changed. ``code`` is in ERROR_CODES."""

    def __init__(self, code: str, message: str):
        assert code in ERROR_CODES, code
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(slots=True)
class Agent:
    id: str
    name: str | None = None
    departments: tuple = ()
    access_chats: bool = True
    channels: tuple | None = None  # None = every channel
    status: str = "online"  # online | away | offline
    max_chats: int | None = None  # None = no limit
    # channel -> open chats of that channel the agent may hold; a channel named here
    # overrides the rule set's `capacity CHANNEL N` for this agent (None: the rule set's)
    capacity: dict | None = None
    email: str | None = None
    # how each notification template reaches this agent: in_app | email | off; "*" is
    # every template without its own entry; unset: in_app
    notifications: dict = field(default_factory=dict)

    @property
    def is_operator(self) -> bool:
        return self.access_chats

    def notification_channel(self, template: str) -> str:
        """in_app (the app's list and stream), email (the app and a batched email) or off."""
        prefs = self.notifications
        return prefs.get(template) or prefs.get("*") or "in_app" if prefs else "in_app"

    def sees(self, chat: "Chat") -> bool:
        return self.access_chats and (self.channels is None or chat.channel in self.channels)


@dataclass(slots=True)
class Customer:
    id: str
    name: str | None = None
    email: str | None = None
    online: bool = True
    language: str | None = None
    fields: dict = field(default_factory=dict)
    online_since: float = 0.0  # anchor of customer.online
    offline_since: float | None = None  # anchor of customer.offline
    phone: str | None = None
    country: str | None = None
    city: str | None = None
    company: str | None = None


@dataclass(slots=True)
class Message:
    id: str
    position: int  # 0-based index in chat.messages (scenario steps count from 1)
    author: str  # customer | agent | bot | system
    author_id: str | None  # customer id, agent id, or the rule id for a bot
    kind: str  # reply | note
    text: str
    via: str  # widget | email | api
    at: float
    mentions: tuple = ()
    edited_at: float | None = None
    deleted: bool = False
    article: str | None = None
    subject: str | None = None  # an email's Subject line (customer messages via email)
    # written by a machine on the customer's side (an out-of-office, a bounce, RFC 3834):
    # it never reopens the chat, never answers or waits for anyone, and no rule replies to it
    auto_reply: bool = False

    @property
    def public(self) -> bool:
        """Visible to the customer: a reply that was not deleted and not written by a
        machine (an automatic reply is kept for agents; the states ignore it too)."""
        return self.kind == "reply" and not self.deleted and not self.auto_reply


@dataclass(slots=True)
class Chat:
    id: str
    channel: str
    customer: Customer
    created_at: float
    page_url: str | None = None
    status: str = "open"  # open | pending | snoozed | closed (dsl.vocabulary.STATUSES)
    assignee: str | None = None
    department: str | None = None
    subscribers: list = field(default_factory=list)  # ordered, unique agent ids
    tags: list = field(default_factory=list)
    priority: int = 0
    locked_by: str | None = None
    language: str | None = None
    last_activity_at: float = 0.0
    fields: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    agent_read: dict = field(default_factory=dict)  # agent id -> highest position read
    customer_read: int = -1  # highest position the customer read (-1: none)
    # Agents who unsubscribed: no rule notifies or re-subscribes them until they
    # subscribe or join again.
    muted: set = field(default_factory=set)
    # State anchors (see engine.states).
    opened_at: float = 0.0
    closed_at: float | None = None
    assigned_at: float | None = None
    unassigned_at: float | None = None
    locked_at: float | None = None
    pending_at: float | None = None
    snoozed_at: float | None = None
    snoozed_until: float | None = None  # when a snoozed chat reopens by itself

    @property
    def message_count(self) -> int:
        return len(self.messages)

    def read_position(self, agent_id: str) -> int:
        return self.agent_read.get(agent_id, -1)


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, as rules see it. ``agent_id`` is the agent who caused it,
    ``rule`` the rule whose action caused it; ``data`` carries event-specific details
    (``previous_assignee``, ``assignee``, ``agent``, ``tag``, ``ended_lock`` …)."""

    id: str
    type: str
    chat_id: str | None
    at: float
    actor: str
    agent_id: str | None = None
    rule: str | None = None
    message_id: str | None = None
    data: dict = field(default_factory=dict)


@dataclass(slots=True)
class World:
    """Every agent and chat, plus the counters that keep ids and round robins deterministic."""

    agents: dict = field(default_factory=dict)  # id -> Agent, in the order they were added
    chats: dict = field(default_factory=dict)  # id -> Chat
    # department -> id of the agent it picked last; round robin continues after it.
    rr_last: dict = field(default_factory=dict)
    event_seq: int = 0
    open_by_agent: dict = field(default_factory=dict)  # agent id -> open chats assigned
    open_loader: object = None  # agent id -> stored count (a service's lazy source)
    # (agent id, channel) -> open chats assigned in that channel (capacity per channel)
    open_by_channel: dict = field(default_factory=dict)
    open_channel_loader: object = None  # (agent id, channel) -> stored count
    # The rule set's routing block (dsl.routing.CompiledRouting); the Engine sets it.
    routing: object = None
    # Routing picks per agent, for fair-distribution limits (engine.routing.PickLog or a
    # service's table over the same two methods).
    picks: object = None
    # Chats a service loaded for the backlog from outside the chats it is processing:
    # their events are stored for their own processing (per-chat counters in chat_seqs).
    foreign: set = field(default_factory=set)
    chat_seqs: dict = field(default_factory=dict)
    waiting_loader: object = None  # agent -> waiting chats a service loads (and locks)
    before_pick: object = None  # called before a routing pick reads counts (a service locks)

    def add_agent(self, id: str, name=None, departments=(), access_chats=True, channels=None,
                  status="online", max_chats=None, capacity=None, email=None, notifications=None) -> Agent:
        """Add an agent (scenario ``agents:`` entry or admin API); lists become tuples."""
        if not isinstance(id, str) or not id:
            raise CommandRefused("bad_request", "an agent needs a non-empty string id")
        if id in self.agents:
            raise CommandRefused("agent_exists", f"agent {id!r} already exists")
        if status not in AGENT_STATUSES:
            raise CommandRefused("bad_request", f"status must be one of {', '.join(AGENT_STATUSES)}")
        if channels is not None:
            unknown = [c for c in channels if c not in CHANNELS]
            if unknown:
                raise CommandRefused("bad_request", f"unknown channel {unknown[0]!r}")
            channels = tuple(channels)
        if max_chats is not None and (not isinstance(max_chats, int) or max_chats < 0):
            raise CommandRefused("bad_request", "max_chats must be a non-negative integer")
        if capacity is not None:
            if not isinstance(capacity, dict):
                raise CommandRefused("bad_request", "capacity must map channels to numbers of chats")
            for channel, n in capacity.items():
                if channel not in CHANNELS:
                    raise CommandRefused("bad_request", f"unknown channel {channel!r} in capacity")
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    raise CommandRefused("bad_request", f"capacity of {channel!r} must be a non-negative integer")
            capacity = dict(capacity)
        if notifications is not None:
            if not isinstance(notifications, dict) or not all(
                    isinstance(k, str) and v in NOTIFICATION_CHANNELS for k, v in notifications.items()):
                raise CommandRefused("bad_request", "notifications maps a template (or *) to "
                                     + ", ".join(NOTIFICATION_CHANNELS))
        if email is not None and not is_address(email):
            raise CommandRefused("bad_request", "email must be an address such as ann@example.com")
        agent = Agent(id, name, tuple(departments or ()), bool(access_chats), channels, status, max_chats,
                      capacity, email, dict(notifications or {}))
        self.agents[id] = agent
        return agent

    def agent(self, agent_id) -> Agent:
        try:
            return self.agents[agent_id]
        except (KeyError, TypeError):
            raise CommandRefused("unknown_agent", f"no agent {agent_id!r}") from None

    def chat(self, chat_id) -> Chat:
        try:
            return self.chats[chat_id]
        except (KeyError, TypeError):
            raise CommandRefused("unknown_chat", f"no chat {chat_id!r}") from None

    def open_chats(self, agent_id: str) -> int:
        """How many open chats have this agent as assignee (its load for capacity).

        Kept as a count that the commands update where an assignee or a status changes,
        so capacity checks do not scan every chat; chats put into ``chats`` by hand
        (tests) are counted by :meth:`recount`. A service holding one chat of many sets
        ``open_loader`` to read an agent's stored count the first time it is needed."""
        if agent_id not in self.open_by_agent and self.open_loader is not None:
            self.open_by_agent[agent_id] = self.open_loader(agent_id)
        return self.open_by_agent.get(agent_id, 0)

    def open_in_channel(self, agent_id: str, channel: str) -> int:
        """How many open chats of ``channel`` have this agent as assignee."""
        key = (agent_id, channel)
        if key not in self.open_by_channel and self.open_channel_loader is not None:
            self.open_by_channel[key] = self.open_channel_loader(agent_id, channel)
        return self.open_by_channel.get(key, 0)

    def count_open(self, agent_id: str | None, delta: int, channel: str | None = None) -> None:
        if agent_id is not None:
            self.open_by_agent[agent_id] = self.open_chats(agent_id) + delta
            if channel is not None:
                self.open_by_channel[(agent_id, channel)] = self.open_in_channel(agent_id, channel) + delta

    def recount(self) -> None:
        self.open_by_agent, self.open_by_channel = {}, {}
        for c in self.chats.values():
            if c.status == "open":
                self.count_open(c.assignee, +1, c.channel)

    def seq_of(self, chat_id: str) -> int:
        """The last event number given to ``chat_id`` (its own counter when it has one)."""
        return self.chat_seqs.get(chat_id, self.event_seq)

    def new_event(self, type: str, at: float, chat_id: str | None, actor: str, *,
                  agent_id=None, rule=None, message_id=None, data=None) -> Event:
        """A new event with the next id of this world (``CHAT:N``, ``agents:N`` without chat)."""
        assert type in EVENTS, type
        assert actor in ACTORS, actor
        if chat_id in self.chat_seqs:  # a chat loaded with its own counter
            seq = self.chat_seqs[chat_id] = self.chat_seqs[chat_id] + 1
        else:
            self.event_seq += 1
            seq = self.event_seq
        prefix = chat_id if chat_id is not None else "agents"
        return Event(f"{prefix}:{seq}", type, chat_id, at, actor, agent_id, rule,
                     message_id, dict(data or {}))


def is_address(value) -> bool:
    """A plain addr-spec (``local@domain.tld``) as rules and agents give addresses."""
    from dsl.vocabulary import ADDRESS_RE

    return isinstance(value, str) and len(value) <= 254 and ADDRESS_RE.fullmatch(value) is not None
