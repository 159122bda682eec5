"""The traffic a fault test sends through the web processes, and the checks of what the
service made of it once the fault is over.

Every chat belongs to one agent, alice, who sees them all (the default rules subscribe
her and notify her of each customer message). Chats come in three kinds:

* ``plain``: the customer talks; nobody joins;
* ``joined``: alice joins after the first message and never reads: ``unread_3s`` falls
  due three seconds later and must fire exactly once;
* ``email``: the customer gave an address; alice joins and replies, the customer leaves:
  ``email_offline_2s`` falls due two seconds later, one email must reach the SMTP server.

Customers' messages go out at a steady rate from a few threads; each chat's steps run in
order on one thread. What the server acknowledged is recorded, so the checks compare the
database (and the SMTP server, and the event streams) with what was really accepted.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from scaled_service import ADMIN, Failure, Http

MESSAGES_PER_CHAT = 10  # the chat's first text and nine more


@dataclass
class Chat:
    index: int
    kind: str  # plain | joined | email
    id: str | None = None
    token: dict | None = None
    acked: list = field(default_factory=list)  # texts the service answered 201 for
    unknown: list = field(default_factory=list)  # texts whose request broke without an answer
    refused: list = field(default_factory=list)  # (text, status) answered with an error


def chat_kind(i: int) -> str:
    return "joined" if i % 5 == 1 else "email" if i % 10 == 3 else "plain"


class Workload:
    def __init__(self, port: int, messages: int, threads: int = 4, rate: float = 150.0):
        self.port = port
        self.chats = [Chat(i, chat_kind(i)) for i in range(max(1, messages // MESSAGES_PER_CHAT))]
        self.threads, self.rate = threads, rate
        self.sent = 0  # messages sent so far (acknowledged or not)
        self.errors: list[str] = []
        self.latencies: dict[str, list] = {}
        self._lock = threading.Lock()
        self._next_at = time.monotonic()
        c = Http(port)
        try:
            status, body = c.call("POST", "/api/admin/agents", {"id": "alice", "name": "Alice"}, ADMIN)
            if status != 201:
                raise Failure(f"creating alice: {status} {body}")
            self.alice = {"Authorization": "Bearer " + body["token"]}
        finally:
            c.close()

    @property
    def total(self) -> int:
        return len(self.chats) * MESSAGES_PER_CHAT

    def _pace(self) -> None:
        """Hold a thread until its message's slot: ``rate`` messages a second in all."""
        with self._lock:
            at = self._next_at = max(self._next_at + 1.0 / self.rate, time.monotonic() - 1.0)
            self.sent += 1
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _timed(self, c: Http, kind: str, method, path, body=None, headers=None):
        t0 = time.perf_counter()
        status, data = c.call(method, path, body, headers)
        with self._lock:
            self.latencies.setdefault(kind, []).append(time.perf_counter() - t0)
        return status, data

    def _message(self, c: Http, chat: Chat, n: int) -> None:
        text = f"m{chat.index}-{n}"
        self._pace()
        try:
            if n == 0:
                customer = {"name": f"Customer {chat.index}"}
                if chat.kind == "email":
                    customer["email"] = f"c{chat.index}@example.com"
                status, data = self._timed(c, "start_chat", "POST", "/api/widget/chats",
                                           {"text": text, "customer": customer})
                if status == 201:
                    chat.id, chat.token = data["chat"]["id"], {"Authorization": "Bearer " + data["token"]}
            else:
                status, data = self._timed(c, "message", "POST", f"/api/widget/chats/{chat.id}/messages",
                                           {"text": text}, chat.token)
        except OSError as e:
            chat.unknown.append(text)
            self.errors.append(f"{text}: {type(e).__name__}: {e}")
            return
        if status == 201:
            chat.acked.append(text)
        else:
            chat.refused.append((text, status))
            self.errors.append(f"{text}: HTTP {status} {data}")

    def _step(self, c: Http, chat: Chat, path: str, body=None, headers=None, kind="agent") -> None:
        try:
            status, data = self._timed(c, kind, "POST", path, body, headers)
        except OSError as e:
            self.errors.append(f"{path}: {type(e).__name__}: {e}")
            return
        if status not in (200, 201):
            self.errors.append(f"{path}: HTTP {status} {data}")

    def _chat_steps(self, chat: Chat):
        """The chat's steps in order, as callables of a connection."""
        yield lambda c: self._message(c, chat, 0)
        if chat.kind in ("joined", "email"):
            yield lambda c: chat.id and self._step(c, chat, f"/api/chats/{chat.id}/join", headers=self.alice)
        for n in range(1, MESSAGES_PER_CHAT):
            yield lambda c, n=n: chat.id and self._message(c, chat, n)
        if chat.kind == "email":
            yield lambda c: chat.id and self._step(c, chat, f"/api/chats/{chat.id}/reply", {"text": "On it"},
                                                   self.alice)
            yield lambda c: chat.id and self._step(c, chat, f"/api/widget/chats/{chat.id}/presence",
                                                   {"online": False}, chat.token, kind="presence")

    def run(self, seconds: float) -> float:
        """Send everything (bounded by ``seconds``); returns the wall time it took."""
        deadline = time.monotonic() + seconds
        t0 = time.monotonic()

        def loop(mine):
            c = Http(self.port)
            try:
                steps = [self._chat_steps(ch) for ch in mine]
                while steps and time.monotonic() < deadline:
                    for it in list(steps):  # one step of each of this thread's chats in turn
                        step = next(it, None)
                        if step is None:
                            steps.remove(it)
                        else:
                            step(c)
            finally:
                c.close()

        ts = [threading.Thread(target=loop, args=(self.chats[i::self.threads],), daemon=True)
              for i in range(self.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(max(1.0, deadline - time.monotonic()) + 30)
        if any(t.is_alive() for t in ts):
            raise Failure(f"the traffic did not end within {seconds} s")
        return time.monotonic() - t0

    def start(self, seconds: float) -> threading.Thread:
        """:meth:`run` on a thread of its own."""
        t = threading.Thread(target=self.run, args=(seconds,), daemon=True)
        t.start()
        return t


# ---------------------------------------------------------------- what the service made of it

def settled(service, workload: Workload, smtp=None) -> bool:
    """Whether the service has finished with the traffic: no event unprocessed, no due
    deadline waiting, every email sent (and counted at the SMTP server)."""
    if service.scalar("SELECT count(*) FROM events WHERE processed_at IS NULL"):
        return False
    if service.scalar("SELECT count(*) FROM timers WHERE due <= :now", now=time.time()):
        return False
    email_chats = sum(1 for ch in workload.chats if ch.kind == "email" and ch.id)
    if service.scalar("SELECT count(*) FROM emails WHERE sent_at IS NOT NULL") < email_chats:
        return False
    if service.scalar("SELECT count(*) FROM emails WHERE sent_at IS NULL"):
        return False
    return smtp is None or smtp.total() >= email_chats


def settle_state(service, workload: Workload, smtp=None) -> str:
    """What :func:`settled` still waits for, in words."""
    now = time.time()
    due = service.rows("SELECT chat_id, rule_id, due, lease_until FROM timers WHERE due <= :now ORDER BY due",
                       now=now)
    return (f"{service.scalar('SELECT count(*) FROM events WHERE processed_at IS NULL')} events unprocessed; "
            f"{len(due)} deadlines due, e.g. "
            + ", ".join(f"{r[1]} of {r[0]} due {now - r[2]:.1f} s ago, lease "
                        f"{'none' if r[3] is None else f'{r[3] - now:+.1f} s'}" for r in due[:3])
            + f"; {service.scalar('SELECT count(*) FROM emails WHERE sent_at IS NULL')} emails unsent, "
            f"{service.scalar('SELECT count(*) FROM emails')} stored"
            + ("" if smtp is None else f", {smtp.total()} at the SMTP server"))


def problems(service, workload: Workload, smtp=None, streams=(), streams_complete=True) -> list[str]:
    """Every broken promise, as a sentence naming the chat, message or notification.
    ``streams_complete=False`` checks the streams for duplicates only (see
    test_stream_gaps.py for the notifications a stream can miss)."""
    out = []
    stored = {}  # chat id -> Counter of customer texts
    for cid, texts in service.rows(
            "SELECT id, ARRAY(SELECT m->>'text' FROM jsonb_array_elements(state::jsonb->'messages') m "
            "WHERE m->>'author' = 'customer') FROM chats"):
        stored[cid] = Counter(texts)
    ours = {ch.id for ch in workload.chats if ch.id}
    for cid in set(stored) - ours:
        out.append(f"chat {cid} was stored but no start was acknowledged")
    for ch in workload.chats:
        if ch.id is None:
            if ch.acked:
                out.append(f"chat #{ch.index}: acknowledged without an id")
            continue
        have = stored.get(ch.id, Counter())
        for text in ch.acked:
            if have[text] != 1:
                out.append(f"chat {ch.id}: acknowledged message {text!r} stored {have[text]} times")
        for text in ch.unknown:
            if have[text] > 1:
                out.append(f"chat {ch.id}: message {text!r} (request broke) stored {have[text]} times")
        for text, status in ch.refused:
            if have[text]:
                out.append(f"chat {ch.id}: message {text!r} refused with {status} but stored")
        for text in set(have) - set(ch.acked) - set(ch.unknown):
            out.append(f"chat {ch.id}: {text!r} stored but never acknowledged")

    left = service.scalar("SELECT count(*) FROM events WHERE processed_at IS NULL")
    if left:
        out.append(f"{left} events never processed")

    notes = Counter()
    for cid, template, n in service.rows("SELECT chat_id, template, count(*) FROM notifications "
                                         "WHERE agent_id = 'alice' GROUP BY chat_id, template"):
        notes[(cid, template)] = n
    for ch in workload.chats:
        if ch.id is None:
            continue
        customer_messages = sum(stored.get(ch.id, Counter()).values())
        # (lo, hi): a chat alice joined may be processed after the join, and the rules see
        # the chat as it is then (assigned: no new_chat); an email chat's reply may come
        # before its 3 s are up
        joined = ch.kind in ("joined", "email")
        want = {"new_chat": (0 if joined else 1, 1), "new_message": (customer_messages - 1,) * 2,
                "unread_3s": {"plain": (0, 0), "joined": (1, 1), "email": (0, 1)}[ch.kind]}
        for template, (lo, hi) in want.items():
            n = (lo, hi) if lo != hi else lo
            if not lo <= notes[(ch.id, template)] <= hi:
                out.append(f"chat {ch.id} ({ch.kind}): {notes[(ch.id, template)]} {template!r} notifications, "
                           f"expected {n}")

    emails = Counter(dict(service.rows("SELECT chat_id, count(*) FROM emails GROUP BY chat_id")))
    unsent = service.scalar("SELECT count(*) FROM emails WHERE sent_at IS NULL")
    if unsent:
        out.append(f"{unsent} emails stored but never sent")
    for ch in workload.chats:
        if ch.id is not None and emails[ch.id] != (1 if ch.kind == "email" else 0):
            out.append(f"chat {ch.id} ({ch.kind}): {emails[ch.id]} emails stored")
    if smtp is not None:
        for mid, n in smtp.twice().items():
            out.append(f"email {mid} reached the SMTP server {n} times")
        expected = sum(1 for ch in workload.chats if ch.kind == "email" and ch.id)
        if len(smtp.by_id) != expected:
            out.append(f"{len(smtp.by_id)} distinct emails at the SMTP server, expected {expected}")

    if streams:
        ids = {r[0] for r in service.rows("SELECT id FROM notifications WHERE agent_id = 'alice'")}
        for s in streams:
            twice = {i: n for i, n in s.received.items() if n > 1}
            if twice:
                out.append(f"stream {s.name}: notifications received more than once: {sorted(twice)[:10]}")
            missing = ids - set(s.received)
            if missing and streams_complete:
                out.append(f"stream {s.name}: {len(missing)} notifications never received, e.g. {sorted(missing)[:5]}")
            extra = set(s.received) - ids
            if extra:
                out.append(f"stream {s.name}: received ids that are not alice's notifications: {sorted(extra)[:5]}")
    return out


def streams_caught_up(service, streams) -> bool:
    """Whether every stream has received alice's newest notification."""
    last = service.scalar("SELECT max(id) FROM notifications WHERE agent_id = 'alice'") or 0
    return all(s.last_id >= last for s in streams)


def stream_misses(service, streams) -> dict:
    """{stream name: alice's notification ids it never received}."""
    ids = {r[0] for r in service.rows("SELECT id FROM notifications WHERE agent_id = 'alice'")}
    return {s.name: sorted(ids - set(s.received)) for s in streams}


def stream_state(service, streams) -> str:
    n = service.scalar("SELECT count(*) FROM notifications WHERE agent_id = 'alice'")
    return f"{n} notifications stored; " + "; ".join(
        f"{s.name}: {len(s.received)} received, last id {s.last_id}, {s.reconnects} reconnects" for s in streams)


def run_under_fault(service, smtp, messages: int, rate: float, fault, settle_seconds: float = 120.0):
    """Start web, two workers and the scheduler, send ``messages`` at ``rate`` with two
    agent streams listening, call ``fault(load)`` while the traffic runs, then wait for
    the service to settle. Returns (load, problems found, figures)."""
    import time as _time

    from scaled_service import AgentStream, wait_until

    port = service.web()
    service.worker("worker0")
    service.worker("worker1")
    service.scheduler()
    service.workers_ready()
    load = Workload(port, messages, rate=rate)
    streams = [AgentStream(port, load.alice, "sse-1"), AgentStream(port, load.alice, "sse-2")]
    figures = {}
    try:
        traffic = load.start(seconds=messages / rate * 3 + 60)
        fault(load)
        traffic.join(messages / rate * 3 + 90)
        if traffic.is_alive():
            raise Failure("the traffic did not end")
        t0 = _time.monotonic()
        try:
            wait_until(lambda: settled(service, load, smtp), settle_seconds, "the service to settle after the fault",
                       poll=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}: {settle_state(service, load, smtp)}") from None
        figures["settled after traffic (s)"] = round(_time.monotonic() - t0, 1)
        try:
            wait_until(lambda: streams_caught_up(service, streams), 40, "the event streams to catch up", poll=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}: {stream_state(service, streams)}") from None
    finally:
        for s in streams:
            s.close()
    figures["stream misses"] = {k: len(v) for k, v in stream_misses(service, streams).items()}
    figures["dead processes"] = [name for name, p in service.procs.items() if p.poll() is not None]
    return load, problems(service, load, smtp, streams, streams_complete=False), figures
