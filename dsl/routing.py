"""A rule set's ``routing`` block, compiled: what department assignment and the backlog
honour when they pick an agent (README "Routing").

    routing {
      backlog skip idle over 4h   # an agent who comes online or frees capacity takes
                                  # the longest-waiting chats of its departments
      at most 5 per 10m           # fair distribution: picks per agent per window
      capacity widget 3           # open chats per agent in a channel
    }
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CompiledRouting:
    """``backlog``: whether the backlog is on; ``max_idle``: seconds a waiting chat may
    have been idle and still be taken (None: no limit); ``limit``/``window``: at most
    ``limit`` picks per agent in any ``window`` seconds (None: no limit); ``capacity``:
    channel -> open chats an agent may hold in it."""

    backlog: bool = False
    max_idle: int | None = None
    limit: int | None = None
    window: int | None = None
    capacity: dict = field(default_factory=dict)
    span: object = None

    @property
    def bounded(self) -> bool:
        """Whether the rule set itself caps what one agent takes (agents' own
        ``max_chats`` are not known here)."""
        return self.limit is not None or bool(self.capacity)


NO_ROUTING = CompiledRouting()


def compile_routing(node) -> CompiledRouting:
    """The block's lines as one CompiledRouting (checks are the compiler's)."""
    backlog, max_idle, limit, window, capacity = False, None, None, None, {}
    for line in node.lines:
        if line.kind == "backlog":
            backlog = True
            max_idle = line.idle.seconds if line.idle is not None else None
        elif line.kind == "limit":
            limit, window = line.count, line.per.seconds
        elif line.kind == "capacity":
            capacity[line.channel] = line.count
    return CompiledRouting(backlog, max_idle, limit, window, capacity, node.span)
