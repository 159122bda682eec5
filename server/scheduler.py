"""``chatflow scheduler``: the one process that claims due deadlines and relays the
outbox in scaled mode.

Deadlines are claimed with a lease (``lease_until``): a claimed chat goes to a worker; if
the worker dies before storing the chat, the lease runs out and the deadline is claimed
again, so none is lost, and the engine's episode memory keeps it from firing twice.
Events a web process could not enqueue (Redis down) are relayed from the outbox, and
webhook deliveries whose retry came due are handed to a delivery job. The analytics'
days that are over are kept on a thread beside the ticks (server.analytics_keeper).
"""
from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import and_, func, or_, select, update

from . import store as S

log = logging.getLogger("chatflow.scheduler")

LEASE_SECONDS = 60
RELAY_AFTER = 2.0  # seconds an event may wait for the web's own enqueue before relaying
RELAY_AGAIN = 30.0  # seconds before relaying the same chat again
BATCH = 100
WEBHOOK_EVERY = 1.0  # seconds between delivery jobs the scheduler enqueues


class Scheduler:
    def __init__(self, runtime, queue, clock=time.time, webhook_queue=None):
        self.runtime = runtime
        self.queue = queue
        self.webhook_queue = webhook_queue
        self.clock = clock
        self._relayed: dict[str, float] = {}
        self._webhooks_handed = 0.0
        self._agent_mail_handed = 0.0

    def claim_due(self, now: float) -> list:
        """Chats with deadlines due by ``now`` whose lease is free; they are leased."""
        db = self.runtime.db
        free = or_(S.timers.c.lease_until.is_(None), S.timers.c.lease_until < now)
        with db.begin() as conn:
            chats = [r[0] for r in conn.execute(
                select(S.timers.c.chat_id).where(and_(S.timers.c.due <= now, free))
                .group_by(S.timers.c.chat_id).order_by(func.min(S.timers.c.due)).limit(BATCH * 20))]
            if chats:
                conn.execute(update(S.timers).where(and_(S.timers.c.chat_id.in_(chats), S.timers.c.due <= now, free))
                             .values(lease_until=now + LEASE_SECONDS))
        return chats

    def unrelayed(self, now: float) -> list:
        with self.runtime.db.connect() as conn:
            chats = [r[0] for r in conn.execute(
                select(S.events.c.chat_id).where(and_(S.events.c.processed_at.is_(None),
                                                      S.events.c.at <= now - RELAY_AFTER))
                .group_by(S.events.c.chat_id).limit(BATCH * 20))]
        fresh = [c for c in chats if now - self._relayed.get(c, 0) >= RELAY_AGAIN]
        for c in fresh:
            self._relayed[c] = now
        if len(self._relayed) > 100_000:
            self._relayed = {c: t for c, t in self._relayed.items() if now - t < RELAY_AGAIN}
        return fresh

    def tick(self) -> tuple[int, int]:
        """One round: (chats whose deadlines were handed out, chats relayed)."""
        now = self.clock()
        due = self.claim_due(now)
        for i in range(0, len(due), BATCH):
            self.queue.enqueue("server.jobs.run_due_chats", due[i:i + BATCH], now, job_timeout=300,
                               result_ttl=60, failure_ttl=86400)
        relay = self.unrelayed(now)
        for i in range(0, len(relay), BATCH):
            self.queue.enqueue("server.jobs.process_chats", relay[i:i + BATCH], job_timeout=300,
                               result_ttl=60, failure_ttl=86400)
        self.hand_over_webhooks(now)
        self.hand_over_agent_mail(now)
        return len(due), len(relay)

    def hand_over_agent_mail(self, now: float) -> bool:
        """Enqueue a job when a batch of agents' notification emails has come due (its
        window ended with nothing else to send it), at most once per WEBHOOK_EVERY."""
        if now - self._agent_mail_handed < WEBHOOK_EVERY:
            return False
        from .agent_mail import next_due

        due = next_due(self.runtime.db, float(self.runtime.settings.get("AGENT_EMAIL_WINDOW", 300)))
        if due is None or due > now:
            return False
        self._agent_mail_handed = now
        self.queue.enqueue("server.jobs.send_agent_emails", job_timeout=300, result_ttl=60, failure_ttl=86400)
        return True

    def hand_over_webhooks(self, now: float) -> bool:
        """Enqueue a delivery job when webhook deliveries are due (a retry after its
        backoff, or rows a worker could not enqueue), at most once per WEBHOOK_EVERY
        seconds: the job claims each row, so a second one would find nothing."""
        if self.webhook_queue is None or now - self._webhooks_handed < WEBHOOK_EVERY:
            return False
        from .webhooks import due_ids

        if not due_ids(self.runtime.db, now, limit=1):
            return False
        self._webhooks_handed = now
        self.webhook_queue.enqueue("server.jobs.deliver_webhooks", job_timeout=600, result_ttl=60,
                                   failure_ttl=86400)
        return True

    def run(self, interval: float = 0.25, stop=None) -> None:
        """Ticks every ``interval`` seconds until ``stop`` is set; the analytics' past days
        are kept meanwhile on a thread of their own (server.analytics_keeper), so a day's
        walk never holds up a tick."""
        from .analytics_keeper import start_keeper

        stop = stop if stop is not None else threading.Event()
        start_keeper(self.runtime.db, self.runtime.settings, self.clock, stop)
        while not stop.is_set():
            try:
                self.tick()
            except Exception as e:  # Redis or the database away: try again next round
                log.warning("scheduler tick failed: %s: %s", type(e).__name__, e)
                time.sleep(1.0)
            time.sleep(interval)
