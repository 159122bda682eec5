"""Webhooks: the ``webhook_deliveries`` rows rules produced, posted after the commit.

A rule names a webhook (``webhook "crm"``); the server's settings say where it goes
(``WEBHOOKS = {"crm": {"url": …, "secret": …}}``), so no rule text chooses a URL. Each
delivery is a signed JSON POST:

    X-Chatflow-Signature: sha256=HEX(HMAC-SHA256(secret, f"{timestamp}.{body}"))
    X-Chatflow-Timestamp: the Unix time of this attempt
    X-Chatflow-Delivery:  the delivery's id (the same on every retry: receivers dedupe by it)

Only hosts in ``WEBHOOK_HOSTS`` are posted to (anything else is ``refused``, never
tried); redirects are not followed. A failed attempt (no connection, a timeout, a 5xx,
408 or 429) is tried again after a backoff that doubles each time, up to
``WEBHOOK_MAX_ATTEMPTS``; any other answer but a 2xx fails at once. Each attempt claims
its row with a lease, so two processes never post one at the same time, and a process
that dies mid-attempt leaves a lease that runs out: the row is tried again (a receiver
can see a delivery twice, never lose one).

Who posts: in embedded mode a background thread of the web process (:class:`Sender`); in
scaled mode RQ jobs (``server.jobs.deliver_webhooks``) on their own queue, enqueued by the
worker that stored the rows and, for retries that come due, by ``chatflow scheduler``.
Nothing here runs inside the engine's transaction: a slow receiver holds back no chat.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import re
import ssl
import threading
import time
from urllib.parse import urlsplit

from sqlalchemy import and_, func, or_, select, update

from dsl.errors import Diagnostic
from dsl.vocabulary import WEBHOOK_NAME

from . import store as S

log = logging.getLogger("chatflow.webhooks")

USER_AGENT = "chatflow-webhooks/1"
KEEP_RESPONSE = 200  # characters of a refusing answer kept as last_error
READ_AT_MOST = 64 * 1024  # bytes of an answer read (and dropped): a receiver cannot make us buffer more
RETRY_STATUSES = frozenset({408, 429})  # besides 5xx and no answer at all


class WebhookSettingsError(ValueError):
    """The WEBHOOKS / WEBHOOK_HOSTS settings cannot be used as written."""


def check_settings(settings: dict) -> None:
    """Refuse at start what would fail every delivery: a bad name, URL or secret."""
    hooks = settings.get("WEBHOOKS") or {}
    if not isinstance(hooks, dict):
        raise WebhookSettingsError("WEBHOOKS is a mapping of name to {url, secret}")
    for name, spec in hooks.items():
        if not isinstance(name, str) or not re.fullmatch(WEBHOOK_NAME, name):
            raise WebhookSettingsError(f"webhook name {name!r}: letters, digits, `_`, `.` and `-` (at most 100)")
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str) or not isinstance(spec.get("secret"), str):
            raise WebhookSettingsError(f"webhook {name!r} needs a url and a secret (strings)")
        parts = urlsplit(spec["url"])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookSettingsError(f"webhook {name!r}: the url must be http(s)://host/…")
        if len(spec["secret"]) < 16:
            raise WebhookSettingsError(f"webhook {name!r}: the secret must be at least 16 characters")
    hosts = settings.get("WEBHOOK_HOSTS") or ()
    if isinstance(hosts, str) or not all(isinstance(h, str) for h in hosts):
        raise WebhookSettingsError("WEBHOOK_HOSTS is a list of host names")


def host_allowed(url: str, hosts) -> bool:
    """Whether the URL's host is in the allowlist: exact names (any case), or
    ``*.example.com`` for its subdomains."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    for allowed in hosts or ():
        allowed = allowed.lower().rstrip(".")
        if allowed.startswith("*.") and host.endswith(allowed[1:]) and host != allowed[2:]:
            return True
        if host == allowed:
            return True
    return False


def undeclared(ruleset, settings: dict) -> list[Diagnostic]:
    """An error at each ``webhook`` action naming a webhook the settings do not declare."""
    hooks = settings.get("WEBHOOKS") or {}
    out = []
    for rule in ruleset.rules if ruleset else ():
        for action in rule.actions:
            if action.kind == "webhook" and action.webhook not in hooks:
                declared = ", ".join(sorted(hooks)) or "none"
                out.append(Diagnostic(action.span, "unknown_webhook",
                                      f"rule `{rule.id}` posts to webhook `{action.webhook}`, which the server does not declare",
                                      "error", f"declared webhooks: {declared} (the server's WEBHOOKS setting)"))
    return out


# ---------------------------------------------------------------- signing

def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``timestamp.body`` with the webhook's secret."""
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers, body: bytes, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does (and the tests do): the signature matches and the timestamp
    is within ``tolerance`` seconds of now, so a captured request cannot be replayed later."""
    try:
        timestamp = int(headers["X-Chatflow-Timestamp"])
    except (KeyError, TypeError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), headers.get("X-Chatflow-Signature", ""))


def encode_body(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


# ---------------------------------------------------------------- one attempt

class Outcome:
    """How an attempt went: ``code`` the HTTP status (None without an answer), ``error``
    what went wrong, ``retry`` whether trying again may help."""

    def __init__(self, code=None, error=None, retry=False):
        self.code, self.error, self.retry = code, error, retry

    @property
    def ok(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


def post(url: str, body: bytes, headers: dict, connect_timeout: float, read_timeout: float) -> Outcome:
    """POST ``body`` to ``url``: connecting may take ``connect_timeout`` seconds, each read
    of the answer ``read_timeout``. Redirects are answers like any other (not followed)."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=connect_timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=connect_timeout)
    try:
        conn.connect()
        conn.sock.settimeout(read_timeout)
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read(READ_AT_MOST)
    except TimeoutError as e:
        return Outcome(None, f"timed out: {e}" if str(e) else "timed out", retry=True)
    except (OSError, http.client.HTTPException) as e:
        return Outcome(None, f"{type(e).__name__}: {e}"[:KEEP_RESPONSE], retry=True)
    finally:
        conn.close()
    code = resp.status
    if 200 <= code < 300:
        return Outcome(code)
    answer = text.decode("utf-8", "replace").strip()[:KEEP_RESPONSE]
    error = f"HTTP {code}" + (f": {answer}" if answer else "")
    return Outcome(code, error, retry=code >= 500 or code in RETRY_STATUSES)


# ---------------------------------------------------------------- deliveries

def _lease_seconds(settings: dict) -> float:
    # an attempt lasts at most connect + a few reads; a lease well past that
    return 2 * (float(settings["WEBHOOK_CONNECT_TIMEOUT"]) + 3 * float(settings["WEBHOOK_READ_TIMEOUT"])) + 30


def backoff(settings: dict, attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: WEBHOOK_BACKOFF doubled after each
    failure, at most WEBHOOK_BACKOFF_MAX."""
    return min(float(settings["WEBHOOK_BACKOFF"]) * 2 ** (attempts - 1), float(settings["WEBHOOK_BACKOFF_MAX"]))


def _due_where(now: float):
    t = S.webhook_deliveries.c
    return and_(t.status == "pending", or_(t.next_attempt_at.is_(None), t.next_attempt_at <= now),
                or_(t.lease_until.is_(None), t.lease_until < now))


def due_ids(db, now: float, limit: int = 100) -> list:
    """Pending deliveries due by ``now`` that nobody is attempting, oldest first."""
    t = S.webhook_deliveries
    with db.connect() as conn:
        return conn.execute(select(t.c.id).where(_due_where(now)).order_by(t.c.id).limit(limit)).scalars().all()


def next_due(db) -> float | None:
    """When the next pending delivery is due (its lease counts, when it has one)."""
    t = S.webhook_deliveries.c
    with db.connect() as conn:
        row = conn.execute(select(func.min(t.next_attempt_at), func.min(t.lease_until))
                           .where(t.status == "pending")).first()
    return None if row is None or row[0] is None else row[0]


def _claim(db, delivery_id: int, now: float, lease: float):
    """The row, leased for one attempt by this process; None if another has it (or it is
    not due). The conditional UPDATE decides: of two processes only one changes the row."""
    t = S.webhook_deliveries
    with db.begin() as conn:
        res = conn.execute(update(t).where(and_(t.c.id == delivery_id, _due_where(now)))
                           .values(lease_until=now + lease))
        if res.rowcount != 1:
            return None
        return conn.execute(select(t).where(t.c.id == delivery_id)).mappings().first()


def attempt(db, settings: dict, delivery_id: int, clock=time.time) -> str | None:
    """Claim one delivery and make one attempt; returns its status afterwards, or None
    when it was not this process's to attempt."""
    now = clock()
    row = _claim(db, delivery_id, now, _lease_seconds(settings))
    if row is None:
        return None
    hook = (settings.get("WEBHOOKS") or {}).get(row["webhook"])
    attempts = row["attempts"] + 1
    values = {"attempts": attempts, "lease_until": None, "updated_at": now}
    if hook is None:  # the settings changed since the rule set was activated
        values.update(status="failed", last_error=f"webhook `{row['webhook']}` is not declared (WEBHOOKS)")
    elif not host_allowed(hook["url"], settings.get("WEBHOOK_HOSTS")):
        host = urlsplit(hook["url"]).hostname
        values.update(status="refused", last_error=f"host {host} is not in WEBHOOK_HOSTS")
    else:
        body = encode_body(row["body"])
        timestamp = int(clock())
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Chatflow-Delivery": str(row["id"]), "X-Chatflow-Event": row["event"] or "deadline",
                   "X-Chatflow-Webhook": row["webhook"], "X-Chatflow-Timestamp": str(timestamp),
                   "X-Chatflow-Signature": signature(hook["secret"], timestamp, body)}
        out = post(hook["url"], body, headers, float(settings["WEBHOOK_CONNECT_TIMEOUT"]),
                   float(settings["WEBHOOK_READ_TIMEOUT"]))
        done = clock()
        values.update(response_code=out.code, updated_at=done)
        if out.ok:
            values.update(status="delivered", delivered_at=done, last_error=None)
        else:
            values["last_error"] = out.error
            if out.retry and attempts < int(settings["WEBHOOK_MAX_ATTEMPTS"]):
                values["next_attempt_at"] = done + backoff(settings, attempts)
            else:
                values["status"] = "failed"
            log.warning("webhook %s (delivery %s) attempt %d: %s", row["webhook"], row["id"], attempts, out.error)
    with db.begin() as conn:
        conn.execute(update(S.webhook_deliveries).where(S.webhook_deliveries.c.id == row["id"]).values(**values))
    return values.get("status", "pending")


def deliver_due(db, settings: dict, clock=time.time, limit: int = 100) -> int:
    """Attempt every delivery due now (at most ``limit``); returns how many were attempted."""
    done = 0
    for delivery_id in due_ids(db, clock(), limit):
        try:
            if attempt(db, settings, delivery_id, clock) is not None:
                done += 1
        except Exception:  # one broken row holds back no other; its lease runs out and it is retried
            log.exception("webhook delivery %s failed", delivery_id)
    return done


class Sender:
    """Embedded mode: one background thread posts the deliveries, woken when rules stored
    some, and otherwise when the next retry comes due (looked at every second at most)."""

    def __init__(self, db, settings: dict, clock=time.time, poll: float = 1.0):
        self.db, self.settings, self.clock, self.poll = db, settings, clock, poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chatflow-webhooks", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            wait = self.poll
            try:
                if deliver_due(self.db, self.settings, self.clock):
                    continue  # more may have come due meanwhile
                due = next_due(self.db)
                if due is not None:  # (a leased one counts as due: look again shortly)
                    wait = min(self.poll, max(0.05, due - self.clock()))
            except Exception:  # the database away: try again shortly
                log.exception("webhook sender round failed")
            self._wake.wait(wait)
