"""Effects as data: what the engine decided should reach people, and the trace of why.

The engine core only decides; the scenario runner records effects, the service stores
and sends them. Each effect carries an idempotency key ``(event id, rule id, action
index)`` so a redelivered event never repeats one.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Effect:
    """kind: notify (to an agent) | email (to the customer) | reply (a public bot message) |
    webhook (a POST to an endpoint the server's settings declare).

    ``recipient`` is an agent id (notify), an email address (email) or the webhook's name
    (webhook); ``template`` the
    template name; ``text`` the rendered message text, if the action has one; ``data``
    what the template renders from (e.g. the unread replies of an email), or a webhook's
    JSON body.
    """

    kind: str
    key: tuple
    chat_id: str
    rule: str
    at: float
    recipient: str | None = None
    template: str | None = None
    text: str | None = None
    data: dict = field(default_factory=dict, compare=False)

    @property
    def idempotency_key(self) -> str:
        event_id, rule_id, index = self.key
        suffix = f":{self.recipient}" if self.recipient else ""
        return f"{event_id}/{rule_id}/{index}{suffix}"


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One line of the timeline: kind is input | event | rule | timer_armed |
    timer_cancelled | timer_fired | effect | cascade_limit | refused | skipped."""

    kind: str
    at: float
    chat_id: str | None = None
    rule: str | None = None
    event: str | None = None
    event_id: str | None = None
    fired: bool | None = None
    detail: dict = field(default_factory=dict, compare=False)
