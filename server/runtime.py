"""The live engine: the same engine.core.Engine as ``chatflow test``, run against stored
chats.

Every command is two transactions. The first loads the chat, applies the command and
commits the changed chat with the events it emitted (the outbox). The second runs the
rules on the chat's unprocessed events, stores the effects by their idempotency keys,
the chat, its rule memory and deadlines, and marks the events processed. If the process
dies between the two, ``process_pending`` picks the events up again: nothing is lost,
and no effect is stored twice.
"""
from __future__ import annotations

import threading
import time

from sqlalchemy import and_, func, select, update

from dsl.loader import load_rule_set
from engine.core import Engine
from engine.model import CommandRefused, World
from engine.snapshot import agent_from_row, chat_from_dict, chat_to_dict, event_from_dict, event_to_dict

from . import store as S


class Runtime:
    """Commands, rule processing and deadlines over a database."""

    def __init__(self, db, clock=time.time, rules_paths=(), defaults=True, settings=None):
        self.db = db
        self.clock = clock
        self.settings = settings or {}
        self.lock = threading.RLock()  # one writer at a time in one process (SQLite's rule anyway)
        self._compiled = None  # (version, RuleSet)
        self.listeners = []  # callables(kind, payload) told of new notifications / messages
        # counts since start, read by /metrics: ("fired", rule) / ("effect", kind) / ("events",)
        self.stats: dict = {}
        self._emails_waiting = True  # check once at start: a previous process may have left some
        self._ensure_ruleset(rules_paths, defaults)

    # ------------------------------------------------------------ rule sets

    def _ensure_ruleset(self, rules_paths, defaults) -> None:
        from dsl.loader import expand_paths

        files = {}
        for p in expand_paths(rules_paths):
            files[str(p)] = p.read_text(encoding="utf-8")
        with self.db.begin() as conn:
            active = conn.execute(select(S.rulesets).where(S.rulesets.c.active.is_(True))).mappings().first()
            if active is not None and (not rules_paths or (active["files"] == files and active["defaults"] == defaults)):
                return
        loaded = load_rule_set([], defaults=defaults, texts=files)
        if not loaded.result.ok:
            from chatflow.report import render_text

            raise SystemExit("chatflow: the rule set does not compile:\n" + render_text(loaded.result.errors, loaded.sources))
        self.store_ruleset(files, defaults, activate=True, by="serve")

    def store_ruleset(self, files: dict, defaults: bool, activate: bool, by: str | None) -> int:
        with self.db.begin() as conn:
            if activate:
                conn.execute(update(S.rulesets).values(active=False))
            res = conn.execute(S.rulesets.insert().values(files=files, defaults=defaults, active=activate,
                                                          created_at=self.clock(), created_by=by))
            return res.inserted_primary_key[0]

    def activate(self, version: int) -> bool:
        with self.db.begin() as conn:
            found = conn.execute(select(S.rulesets.c.version).where(S.rulesets.c.version == version)).first()
            if not found:
                return False
            conn.execute(update(S.rulesets).values(active=False))
            conn.execute(update(S.rulesets).where(S.rulesets.c.version == version).values(active=True))
        return True

    def ruleset(self):
        """The active compiled RuleSet (compiled once per version)."""
        with self.db.connect() as conn:
            version = conn.execute(select(S.rulesets.c.version).where(S.rulesets.c.active.is_(True))).scalar()
            if self._compiled and self._compiled[0] == version:
                return self._compiled[1]  # the files are read only when the version changed
            row = conn.execute(select(S.rulesets).where(S.rulesets.c.version == version)).mappings().first()
        loaded = load_rule_set([], defaults=row["defaults"], texts=row["files"])
        self._compiled = (row["version"], loaded.ruleset)
        return loaded.ruleset

    # ------------------------------------------------------------ loading and saving a chat

    def _world(self, conn, chat_row=None) -> World:
        world = World()
        for row in conn.execute(select(S.agents)).mappings():
            world.agents[row["id"]] = agent_from_row(dict(row))
        # capacity counts come from every stored chat, read per agent only when a rule or
        # command needs one (indexed by assignee); the commands keep them current for the
        # one chat loaded here
        world.open_loader = lambda agent_id: conn.execute(select(func.count()).where(
            and_(S.chats.c.assignee == agent_id, S.chats.c.status == "open"))).scalar() or 0
        if chat_row is not None:
            chat = chat_from_dict(chat_row["state"])
            world.chats[chat.id] = chat
            world.event_seq = chat_row["event_seq"]
        return world

    def _chat_row(self, conn, chat_id):
        q = select(S.chats).where(S.chats.c.id == chat_id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        return conn.execute(q).mappings().first()

    def _save_chat(self, conn, world, chat_id, rule_state=None, new=False, token_hash=None) -> None:
        chat = world.chats[chat_id]
        values = dict(channel=chat.channel, status=chat.status, assignee=chat.assignee,
                      customer_id=chat.customer.id, state=chat_to_dict(chat), event_seq=world.event_seq,
                      updated_at=self.clock())
        if rule_state is not None:
            values["rule_state"] = rule_state
        if new:
            conn.execute(S.chats.insert().values(id=chat_id, created_at=chat.created_at, token_hash=token_hash,
                                                 rule_state=rule_state or {}, **values))
        else:
            conn.execute(update(S.chats).where(S.chats.c.id == chat_id).values(**values))

    def _store_events(self, conn, evs) -> None:
        for e in evs:
            conn.execute(S.events.insert().values(id=e.id, chat_id=e.chat_id, type=e.type,
                                                  payload=event_to_dict(e), at=e.at))

    # ------------------------------------------------------------ commands

    def start_chat(self, chat_id: str, token_hash: str, **args):
        """Create a chat; returns its events (already processed)."""
        now = self.clock()
        with self.lock:
            with self.db.begin() as conn:
                if conn.execute(select(S.chats.c.id).where(S.chats.c.id == chat_id)).first():
                    raise CommandRefused("chat_exists", f"chat {chat_id!r} already exists")
                world = self._world(conn)
                engine = Engine(self.ruleset(), world)
                evs = engine.apply("start_chat", now, chat_id=chat_id, **args)
                self._save_chat(conn, world, chat_id, new=True, token_hash=token_hash)
                self._store_events(conn, evs)
        self.dispatch([chat_id])
        return evs

    def command(self, command: str, chat_id: str | None, **args):
        """Apply an input command to a stored chat (outbox), then run the rules on it."""
        now = self.clock()
        with self.lock:
            with self.db.begin() as conn:
                if chat_id is None:  # agent_status: touches the agent, and its chats
                    world = self._world(conn)
                    engine = Engine(self.ruleset(), world)
                    evs = engine.apply(command, now, **args)
                    agent = world.agents[args["agent"]]
                    conn.execute(update(S.agents).where(S.agents.c.id == agent.id).values(status=agent.status))
                    affected = [r[0] for r in conn.execute(select(S.chats.c.id).where(
                        and_(S.chats.c.assignee == agent.id, S.chats.c.status == "open")))]
                    # an agent's event concerns each chat it is responsible for: one copy
                    # per chat, so each chat processes its own in order
                    # (agent events have no chat sequence: a random part keeps their ids unique)
                    import secrets
                    from dataclasses import replace

                    tag = secrets.token_hex(6)
                    self._store_events(conn, [replace(e, chat_id=cid, id=f"{e.id}.{tag}@{cid}")
                                              for e in evs for cid in affected])
                else:
                    row = self._chat_row(conn, chat_id)
                    if row is None:
                        raise CommandRefused("unknown_chat", f"no chat {chat_id!r}")
                    world = self._world(conn, row)
                    engine = Engine(self.ruleset(), world, articles=self._articles(conn), canned=self._canned(conn))
                    evs = engine.apply(command, now, chat_id=chat_id, **args)
                    self._save_chat(conn, world, chat_id)
                    self._store_events(conn, evs)
                    affected = [chat_id]
        self.dispatch(affected)
        return evs

    def dispatch(self, chat_ids) -> None:
        """Run the rules on these chats' new events. Embedded: right here, after the
        commit. Scaled mode replaces this with an RQ enqueue (server.jobs)."""
        for cid in chat_ids:
            self.process_pending(cid)

    def _articles(self, conn):
        """Articles by slug, read from the table only if a reply or rule asks for one."""
        return _LazyTable(lambda slug: conn.execute(select(S.articles).where(S.articles.c.slug == slug))
                          .mappings().first(), dict)

    def _canned(self, conn):
        return _LazyTable(lambda key: conn.execute(select(S.canned.c.text).where(S.canned.c.shortcut == key))
                          .scalar(), lambda v: v)

    # ------------------------------------------------------------ processing

    def process_pending(self, chat_id: str) -> int:
        """Run the rules on a chat's unprocessed events, in order; returns how many."""
        with self.lock:
            count, signals = self._process_pending(chat_id)
            self._publish(signals)
            return count

    def _process_pending(self, chat_id: str) -> tuple:
        with self.db.begin() as conn:
            row = self._chat_row(conn, chat_id)
            if row is None:
                return 0, []
            cond = and_(S.events.c.processed_at.is_(None), S.events.c.chat_id == chat_id)
            pending = conn.execute(select(S.events).where(cond).order_by(S.events.c.seq)).mappings().all()
            if not pending:
                return 0, [("chat", {"chat_id": chat_id})]
            world = self._world(conn, row)
            engine = self._engine(conn, world, chat_id, row)
            now = max(e["at"] for e in pending)
            for e in pending:
                ev = event_from_dict(e["payload"])
                engine.process([ev], ev.at)
            signals = self._commit_engine(conn, world, engine, chat_id, now)
            self._count(("events",), len(pending))
            conn.execute(update(S.events).where(S.events.c.seq.in_([e["seq"] for e in pending]))
                         .values(processed_at=self.clock()))
            return len(pending), signals

    def _engine(self, conn, world, chat_id, row) -> Engine:
        engine = Engine(self.ruleset(), world, articles=self._articles(conn), canned=self._canned(conn), tracing=True)
        due = {r["rule_id"]: r["due"] for r in conn.execute(select(S.timers).where(S.timers.c.chat_id == chat_id)).mappings()}
        engine.load_chat_state(chat_id, {"last": (row["rule_state"] or {}).get("last") or {}, "timers": due})
        return engine

    def _commit_engine(self, conn, world, engine, chat_id, now) -> list:
        """Store what an evaluation produced: chat, rule memory, deadlines, effects, trace.
        Returns the signals to publish once the transaction has committed."""
        state = engine.chat_state(chat_id)
        self._save_chat(conn, world, chat_id, rule_state={"last": state["last"]})
        conn.execute(S.timers.delete().where(S.timers.c.chat_id == chat_id))
        for rule, due in state["timers"].items():
            conn.execute(S.timers.insert().values(chat_id=chat_id, rule_id=rule, due=due))
        new_notes = []
        for eff in engine.effects:
            key = eff.idempotency_key
            if eff.kind == "notify":
                if conn.execute(select(S.notifications.c.id).where(S.notifications.c.key == key)).first():
                    continue  # a redelivered event: already stored
                conn.execute(S.notifications.insert().values(key=key, agent_id=eff.recipient, chat_id=eff.chat_id,
                                                             rule=eff.rule, template=eff.template, text=eff.text,
                                                             at=eff.at))
                new_notes.append(eff)
            elif eff.kind == "email":
                if conn.execute(select(S.emails.c.id).where(S.emails.c.key == key)).first():
                    continue
                conn.execute(S.emails.insert().values(key=key, chat_id=eff.chat_id, to_addr=eff.recipient,
                                                      template=eff.template, data=eff.data, at=eff.at))
                self._emails_waiting = True
        for e in engine.trace:
            if e.kind == "fired":
                self._count(("fired", e.rule))
            elif e.kind == "cascade_limit":
                self._count(("cascade_limit",))
        for eff in engine.effects:
            self._count(("effect", eff.kind))
        entries = [_trace_json(e) for e in engine.trace if e.kind != "input"]
        if entries:
            conn.execute(S.traces.insert().values(chat_id=chat_id, at=now, entries=entries))
        signals = [("notification", {"agent_id": eff.recipient, "chat_id": eff.chat_id}) for eff in new_notes]
        return signals + [("chat", {"chat_id": chat_id})]

    def _count(self, key, n=1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def _publish(self, signals) -> None:
        """Tell listeners (the live streams) what changed; they read the database for it."""
        for listener in self.listeners:
            for kind, payload in signals:
                try:
                    listener(kind, payload)
                except Exception:  # a broken listener must not undo a committed change
                    import logging

                    logging.getLogger("chatflow").exception("listener failed")

    def after_change(self) -> None:
        """Deliver what the last changes produced outside the database (emails). Only
        when an email was stored since the last delivery (or one failed to go out)."""
        if not self._emails_waiting:
            return
        self._emails_waiting = False
        if self.settings.get("MAILDIR") or self.settings.get("SMTP_URL"):
            from .mail import deliver_pending

            with self.lock:
                _, failed = deliver_pending(self.db, self.settings, self.clock())
            self._emails_waiting = failed > 0  # a failed one is tried again next time

    # ------------------------------------------------------------ deadlines

    def next_due(self) -> float | None:
        with self.db.connect() as conn:
            return conn.execute(select(func.min(S.timers.c.due))).scalar()

    def run_due(self, now: float | None = None, chat_ids=None) -> int:
        """Fire every deadline due by ``now`` (default: the clock), of all chats or of
        ``chat_ids`` (claimed by the scheduler); returns how many chats."""
        now = self.clock() if now is None else now
        if chat_ids is not None:
            due_chats = list(chat_ids)
        else:
            with self.db.connect() as conn:
                due_chats = [r[0] for r in conn.execute(
                    select(S.timers.c.chat_id).where(S.timers.c.due <= now).group_by(S.timers.c.chat_id)
                    .order_by(func.min(S.timers.c.due)))]
        done = 0
        for chat_id in due_chats:
            try:
                self._run_due_chat(chat_id, now)
                done += 1
            except Exception:  # one chat's failure must not hold back every other deadline
                import logging

                logging.getLogger("chatflow").exception("deadline of chat %s failed; retried later", chat_id)
                self._postpone(chat_id, now)
        return done

    def _run_due_chat(self, chat_id: str, now: float) -> None:
        with self.lock:
            with self.db.begin() as conn:
                row = self._chat_row(conn, chat_id)
                if row is None:
                    return
                world = self._world(conn, row)
                engine = self._engine(conn, world, chat_id, row)
                engine.run_due(now)
                signals = self._commit_engine(conn, world, engine, chat_id, now)
            self._publish(signals)

    def _postpone(self, chat_id: str, now: float, seconds: float = 60.0) -> None:
        """Move a failing chat's due deadlines a minute on, so it is retried, not spun on."""
        with self.db.begin() as conn:
            conn.execute(update(S.timers).where(and_(S.timers.c.chat_id == chat_id, S.timers.c.due <= now))
                         .values(due=now + seconds))


class _LazyTable:
    """A read-only mapping whose values are looked up one key at a time, when used."""

    def __init__(self, lookup, convert):
        self._lookup, self._convert, self._seen = lookup, convert, {}

    def _get(self, key):
        if key not in self._seen:
            found = self._lookup(key)
            self._seen[key] = None if found is None else self._convert(found)
        return self._seen[key]

    def __contains__(self, key):
        return self._get(key) is not None

    def __getitem__(self, key):
        value = self._get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key, default=None):
        value = self._get(key)
        return default if value is None else value


def _trace_json(e) -> dict:
    d = {"kind": e.kind, "at": e.at}
    for k in ("rule", "event", "event_id", "fired"):
        v = getattr(e, k)
        if v is not None:
            d[k] = v
    detail = dict(e.detail)
    if "why" in detail:
        detail["why"] = [{"depth": dd, "condition": t, "value": v if isinstance(v, (bool, int, float, str, type(None))) else str(v)}
                         for dd, t, v in detail["why"]]
    if detail:
        d["detail"] = detail
    return d
