"""Routing: which agent a department assignment or the backlog picks (README "Routing").

Pure like the rest of the engine: a World, a chat and ``at`` in, an agent id out. What
several processes share — the round-robin pointer, capacity counts, the picks of the
fair-distribution window, the waiting chats — is reached through the World, which a
service backs with its database (server/runtime.py) and the simulator keeps in memory.

- Capacity: an agent's ``max_chats`` over all its open chats, and per channel its own
  ``capacity`` (agent settings) or else the routing block's ``capacity CHANNEL N``, over
  its open chats of that channel.
- Fair distribution: ``at most N per D`` — an agent is picked at most N times in any
  window of D (picks by department assignment and by the backlog; an explicit
  ``assign agent`` or a join is not a pick and is not limited).
- Backlog: when an agent comes online or frees capacity, it takes the waiting chats of
  its departments (open, unassigned, in a department it belongs to, seen by it) that
  waited longest, skipping chats idle beyond the limit, while it has room.
"""
from __future__ import annotations

from dsl.routing import NO_ROUTING

from .model import Agent, Chat, CommandRefused, World
from .states import chat_awaiting_agent, chat_idle


class PickLog:
    """Routing picks per agent (the simulator's; a service keeps them in a table)."""

    def __init__(self):
        self._at: dict = {}  # agent id -> [instants]

    def count(self, agent_id: str, since: float) -> int:
        """Picks of the agent after ``since``."""
        return sum(1 for t in self._at.get(agent_id, ()) if t > since)

    def add(self, agent_id: str, chat_id: str, at: float, window: int | None) -> None:
        """Record a pick; ``window`` is how long it must be remembered (None: the rule
        set has no limit, a service need not keep it)."""
        self._at.setdefault(agent_id, []).append(at)


def routing_of(world: World):
    return world.routing if world.routing is not None else NO_ROUTING


def picks_of(world: World):
    if world.picks is None:
        world.picks = PickLog()
    return world.picks


def has_free_capacity(world: World, agent: Agent, chat: Chat | None = None) -> bool:
    """Room for one more open chat: under ``max_chats``, and under the channel's
    capacity (the agent's own for that channel, else the rule set's) when ``chat`` is given."""
    if agent.max_chats is not None and world.open_chats(agent.id) >= agent.max_chats:
        return False
    if chat is not None:
        own = agent.capacity or {}
        cap = own[chat.channel] if chat.channel in own else routing_of(world).capacity.get(chat.channel)
        if cap is not None and world.open_in_channel(agent.id, chat.channel) >= cap:
            return False
    return True


def within_limit(world: World, agent: Agent, at: float | None) -> bool:
    """Fewer than ``at most N`` picks in the window ending at ``at``."""
    routing = routing_of(world)
    if routing.limit is None or at is None:
        return True
    return picks_of(world).count(agent.id, at - routing.window) < routing.limit


def _may_take(world: World, agent: Agent, chat: Chat, at: float | None) -> bool:
    return (agent.status == "online" and agent.sees(chat) and has_free_capacity(world, agent, chat)
            and within_limit(world, agent, at))


def pick_agent(world: World, chat: Chat, department: str, strategy: str = "round_robin",
               at: float | None = None) -> str | None:
    """The agent ``assign department`` gives the chat, or None when nobody is free.

    Candidates are the department's agents who are online, see the chat, have free
    capacity (overall and in the chat's channel) and are within the fair-distribution
    limit at ``at``, in the order they were added. ``round_robin`` takes the first
    candidate after the agent picked last for this department; ``least_busy`` takes the
    candidates with the fewest open chats assigned and breaks ties the same round-robin
    way. The caller records the pick with :func:`note_pick`.
    """
    if strategy not in ("round_robin", "least_busy"):
        raise CommandRefused("bad_request", f"unknown strategy {strategy!r}")
    if world.before_pick is not None:
        world.before_pick()
    members = [a for a in world.agents.values() if department in a.departments]
    last = world.rr_last.get(department)
    start = next((i + 1 for i, a in enumerate(members) if a.id == last), 0)
    rotated = members[start:] + members[:start]
    free = [a for a in rotated if _may_take(world, a, chat, at)]
    if not free:
        return None
    if strategy == "least_busy":
        fewest = min(world.open_chats(a.id) for a in free)
        free = [a for a in free if world.open_chats(a.id) == fewest]
    return free[0].id


def note_pick(world: World, department: str, agent_id: str, chat_id: str | None = None,
              at: float | None = None) -> None:
    """Record a pick: the round robin continues after it; the window counts it."""
    world.rr_last[department] = agent_id
    if at is not None:
        picks_of(world).add(agent_id, chat_id, at, routing_of(world).window)


# ---------------------------------------------------------------- the backlog

def waiting_since(chat: Chat) -> float:
    """How long a chat has waited, for the backlog's order: since the first customer
    message not answered by an agent, else since it lost (or never had) an assignee."""
    since = chat_awaiting_agent(chat)
    if since is None:
        since = chat.unassigned_at if chat.unassigned_at is not None else chat.created_at
    return since


def is_waiting(chat: Chat, departments, at: float, max_idle: int | None) -> bool:
    """Open, unassigned, in one of ``departments``, and not idle beyond ``max_idle``."""
    if chat.status != "open" or chat.assignee is not None or chat.department not in departments:
        return False
    if max_idle is not None:
        idle = chat_idle(chat)
        if idle is not None and at - idle > max_idle:
            return False
    return True


def backlog_order(chats) -> list:
    """Longest waiting first; ties by creation, then id (deterministic everywhere)."""
    return sorted(chats, key=lambda c: (waiting_since(c), c.created_at, c.id))


def waiting_chats(world: World, agent: Agent, at: float) -> list:
    """The chats the backlog may give ``agent``, in backlog order: those of the World,
    and those a service's ``waiting_loader`` adds to it (from its database)."""
    routing = routing_of(world)
    if world.waiting_loader is not None:
        world.waiting_loader(agent, at)
    found = [c for c in world.chats.values()
             if is_waiting(c, agent.departments, at, routing.max_idle) and agent.sees(c)]
    return backlog_order(found)


def freed_agents(world: World, event) -> list:
    """The agents an event gives room to take waiting chats: an agent who came online
    (the agent-wide event, not a service's per-chat copies of it), the previous
    assignee of a chat that changed hands, the assignee of a chat that closed, was snoozed
    or set pending (only open chats count towards capacity)."""
    if event.type == "agent.status_changed":
        return [event.agent_id] if event.chat_id is None and event.data.get("status") == "online" else []
    if event.type != "chat.updated":
        return []
    changes = event.data.get("changes") or {}
    out = []
    if "assignee" in changes and changes["assignee"][0] is not None:
        out.append(changes["assignee"][0])
    status = changes.get("status")
    if status is not None and status[0] == "open" and status[1] != "open":
        chat = world.chats.get(event.chat_id)
        if chat is not None and chat.assignee is not None and chat.assignee not in out:
            out.append(chat.assignee)
    return out
