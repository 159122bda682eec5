"""Rate limits on what anyone on the internet can call: starting widget chats, a chat's
customer commands, and guessing tokens.

Built on the ``limits`` library (moving windows), kept in memory in embedded mode and in
Redis in scaled mode, so every web process counts the same hits. A refused request is a
429 ``rate_limited`` JSON error with ``Retry-After``. ``RATE_LIMITS`` in the settings
(``CHATFLOW_RATE_LIMITS`` in the environment) replaces the defaults below, or ``off``
turns them off (benchmarks); see the README.
"""
from __future__ import annotations

import logging
import math

from flask import current_app, request
from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter


log = logging.getLogger("chatflow")

# what -> limits, per client address ("ip") or per chat token ("chat")
DEFAULTS = {
    "start_chat": "20/minute;300/hour",  # per client address
    "customer": "120/minute",  # a chat's customer commands, per chat
    "bad_token": "60/minute",  # refused tokens (401/404 on a token), per client address
}


class RateLimits:
    """The limits of one installation; ``spec`` is None (the defaults), ``"off"``, or a
    dict overriding some of DEFAULTS ("" turns one off)."""

    def __init__(self, spec, redis_url: str | None, prefix: str):
        self.limits = {}
        if spec != "off":
            spec = dict(DEFAULTS, **(spec or {}))
            unknown = sorted(set(spec) - set(DEFAULTS))
            if unknown:
                raise ValueError(f"RATE_LIMITS: unknown limit {unknown[0]!r} (known: {', '.join(DEFAULTS)})")
            self.limits = {what: parse_many(text.replace(";", ",")) for what, text in spec.items() if text}
        uri = "memory://" if not redis_url else "redis://" + redis_url.split("://", 1)[1]
        self.limiter = MovingWindowRateLimiter(storage_from_string(uri)) if self.limits else None
        # refused tokens are counted in this process only, when one is refused (tokens
        # are 256 random bits: this only slows a guesser down; N web processes let N
        # times as many through)
        self.local = MovingWindowRateLimiter(storage_from_string("memory://")) if self.limits else None
        self.prefix = prefix

    def hit(self, what: str, key: str) -> None:
        """Count one request of ``what`` for ``key``; ApiError 429 once over a limit."""
        from .http import ApiError

        for item in self.limits.get(what, ()):
            try:
                allowed = self.limiter.hit(item, self.prefix, what, key)
            except Exception as e:  # the store (Redis) is away: let customers through, and say so
                log.warning("rate limit %s not checked: %s", what, type(e).__name__)
                return
            if not allowed:
                reset, _ = self.limiter.get_window_stats(item, self.prefix, what, key)
                retry = max(1, math.ceil(reset - _now()))
                raise ApiError(429, "rate_limited", f"too many requests: at most {item} for this {_KEYS[what]}; "
                               f"try again in {retry} s", {"retry_after": retry, "limit": str(item)})



_KEYS = {"start_chat": "address", "customer": "chat", "bad_token": "address"}


def _now() -> float:
    import time

    return time.time()


def limits() -> RateLimits:
    return current_app.extensions["chatflow_limits"]


def client() -> str:
    return request.remote_addr or "unknown"


def start_chat() -> None:
    limits().hit("start_chat", client())


def customer(token_hash: str) -> None:
    limits().hit("customer", token_hash)


def token_refused() -> None:
    """Count a refused token (customer or agent) against the client's address; past the
    limit the refusal is a 429 instead of the 401/404 (a right token still works: an
    office behind one address is not locked out by one stale token)."""
    from .http import ApiError

    rl = limits()
    if rl.local is None:
        return
    for item in rl.limits.get("bad_token", ()):
        if not rl.local.hit(item, rl.prefix, "bad_token", client()):
            raise ApiError(429, "rate_limited", "too many refused tokens from this address; try again later",
                           {"retry_after": 60, "limit": str(item)})
