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

import contextlib
from collections import Counter
import logging
import secrets
import threading
import time
from dataclasses import replace
from typing import NamedTuple

from sqlalchemy import and_, case, func, or_, select, update

from dsl.loader import load_rule_set
from engine.core import Engine
from engine.model import CommandRefused, World
from engine.snapshot import agent_from_row, chat_from_dict, chat_to_dict, event_from_dict, event_to_dict

from . import store as S
from .routing_state import Picks, open_in_channel, routing_lock, waiting_loader

log = logging.getLogger("chatflow")


class Runtime:
    """Commands, rule processing and deadlines over a database."""

    def __init__(self, db, clock=time.time, rules_paths=(), defaults=True, settings=None):
        self.db = db
        self.clock = clock
        self.settings = settings or {}
        # SQLite: one writer at a time in a process (its own rule anyway). PostgreSQL: the
        # chat's row lock orders commands on one chat; different chats go on in parallel
        self.lock = threading.RLock() if db.dialect.name == "sqlite" else contextlib.nullcontext()
        self._compiled = None  # (version, RuleSet)
        self._agents_cache = None  # (agents revision, {id: Agent})
        self.listeners = []  # callables(kind, payload) told of new notifications / messages
        # counts since start, read by /metrics: ("fired", rule) / ("effect", kind) / ("events",)
        self.stats: dict = {}
        self._emails_waiting = True  # check once at start: a previous process may have left some
        # PostgreSQL: chat commands arriving together share a transaction (group commit)
        self._group = None
        if db.dialect.name == "postgresql" and self.settings.get("GROUP_COMMIT", True):
            from .group_commit import GroupCommit

            self._group = GroupCommit(self._run_commands)
        self._webhooks_waiting = True
        # called after a commit that stored webhook deliveries: wakes the embedded sender
        # (server.webhooks.Sender) or enqueues a delivery job (scaled workers)
        self.webhooks_stored = None
        # when agents' batched notification emails may next be due (server.agent_mail);
        # 0: look at once (a previous process may have left some)
        self._agent_mail_next: float | None = 0.0
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
        from .webhooks import undeclared

        missing = undeclared(loaded.ruleset, self.settings)
        if missing:
            from chatflow.report import render_text

            raise SystemExit("chatflow: the rule set names undeclared webhooks:\n" + render_text(missing, loaded.sources))
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
            return self._ruleset_at(conn, conn.execute(select(_ACTIVE_VERSION)).scalar())

    # ------------------------------------------------------------ loading and saving chats

    def _ruleset_at(self, conn, version):
        """The compiled rule set of ``version`` (compiled once per version and process)."""
        compiled = self._compiled
        if compiled and compiled[0] == version:
            return compiled[1]  # the files are read only when the version changed
        row = conn.execute(select(S.rulesets).where(S.rulesets.c.version == version)).mappings().first()
        loaded = load_rule_set([], defaults=row["defaults"], texts=row["files"])
        self._compiled = (row["version"], loaded.ruleset)
        return loaded.ruleset

    def _agents(self, conn, revision=None) -> dict:
        """Every agent, by id. Kept per process while ``revision`` (the agents' counter,
        bumped by a trigger on any change, read with the chat rows) stays the same; each
        caller gets its own dict of the shared Agent objects, which chat commands and
        rules never change (``agent_status`` works on agents read fresh)."""
        cached = self._agents_cache
        if revision is not None and cached is not None and cached[0] == revision:
            return dict(cached[1])
        agents = {row["id"]: agent_from_row(dict(row)) for row in conn.execute(select(S.agents).order_by(S.agents.c.id)).mappings()}
        if revision is not None:
            self._agents_cache = (revision, agents)
            return dict(agents)
        return agents

    def _world(self, conn, chat_row=None, agents=None, shared: "_RoutingState | None" = None) -> World:
        """A World holding one stored chat. The chats of one batch share the agents, the
        capacity counts, the round robin and the rest of routing's state (``shared``), as
        they would in one World; the backlog sees the batch's chats as they stand."""
        world = World()
        if agents is None:
            agents = self._agents(conn, chat_row["agents_revision"] if chat_row is not None else None)
        world.agents = agents
        if shared is None:
            shared = _shared_routing(conn)
        # what routing reads and changes is one for the whole transaction (engine.routing;
        # server.routing_state): counts, round robin, picks, the lock, the waiting chats
        for name in _SHARED:
            setattr(world, name, getattr(shared, name))
        world.waiting_loader = waiting_loader(conn, world, shared.batch, shared.loaded)
        # capacity counts come from every stored chat, read per agent only when a rule or
        # command needs one (indexed by assignee); the commands keep them current for the
        # chats loaded here
        world.open_loader = lambda agent_id: conn.execute(select(func.count()).where(
            and_(S.chats.c.assignee == agent_id, S.chats.c.status == "open"))).scalar() or 0
        world.open_channel_loader = open_in_channel(conn)
        if chat_row is not None:
            chat = chat_from_dict(chat_row["state"])
            world.chats[chat.id] = chat
            world.event_seq = chat_row["event_seq"]
            # the chat's event counter, shared: the backlog of another chat of the batch
            # may give this one events too
            world.chat_seqs[chat.id] = chat_row["event_seq"]
            shared.batch[chat.id] = chat
        return world

    def _chat_rows(self, conn, chat_ids) -> list:
        """The chats' rows, locked for this transaction, in id order (so two batches lock
        in the same order), each with the active rule set's version read in the same query."""
        ids = sorted(set(chat_ids))
        where = S.among(conn, S.chats.c.id, ids)
        q = (select(S.chats, _ACTIVE_VERSION.label("ruleset_version"), _AGENTS_REVISION.label("agents_revision"))
             .where(where).order_by(S.chats.c.id))
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(of=S.chats)
        return conn.execute(q).mappings().all()

    def _chat_values(self, world, chat_id, rule_state=None) -> dict:
        chat = world.chats[chat_id]
        values = dict(channel=chat.channel, status=chat.status, assignee=chat.assignee,
                      customer_id=chat.customer.id, state=chat_to_dict(chat),
                      event_seq=world.seq_of(chat_id), updated_at=self.clock())
        if rule_state is not None:
            values["rule_state"] = rule_state
        return values

    def _save_chat(self, conn, world, chat_id, rule_state=None, new=False, token_hash=None) -> None:
        values = self._chat_values(world, chat_id, rule_state)
        if new:
            chat = world.chats[chat_id]
            values.setdefault("rule_state", {})
            conn.execute(S.chats.insert().values(id=chat_id, created_at=chat.created_at, token_hash=token_hash,
                                                 **values))
        else:
            conn.execute(update(S.chats).where(S.chats.c.id == chat_id).values(**values))

    def _store_events(self, conn, evs) -> None:
        if evs:
            S.insert_rows(conn, S.events, [dict(id=e.id, chat_id=e.chat_id, type=e.type, payload=event_to_dict(e),
                                                at=e.at) for e in evs])

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
        return self.run_command(command, chat_id, **args)[0]

    def run_command(self, command: str, chat_id: str | None, token_hash: str | None = None, **args) -> tuple:
        """:meth:`command`, returning ``(events, chat)``: the chat as the command left it
        (None for agent-wide commands), so a caller can answer without reading it again.
        With ``token_hash`` the chat must be the one that customer token opens.

        On PostgreSQL, chat commands that arrive together share one transaction
        (:mod:`server.group_commit`); each still gets its own answer or refusal."""
        if chat_id is None:
            return self._agent_command(command, **args), None
        cmd = _Command(command, chat_id, token_hash, args)
        if self._group is not None:
            evs, chat = self._group.submit(cmd)
        else:
            with self.lock:
                out = self._run_commands([cmd], single=True)[0]
            if isinstance(out, BaseException):
                raise out
            evs, chat = out
        self.dispatch([chat_id])
        if getattr(self.dispatch, "__func__", None) is Runtime.dispatch:
            chat = self.load_chat(chat_id)  # embedded: the rules have run; show what they did
        return evs, chat

    def _agent_command(self, command: str, **args) -> list:
        """agent_status: touches the agent, and its chats."""
        now = self.clock()
        with self.lock:
            with self.db.begin() as conn:
                world = self._world(conn)
                engine = Engine(self.ruleset(), world)
                evs = engine.apply(command, now, **args)
                agent = world.agents[args["agent"]]
                conn.execute(update(S.agents).where(S.agents.c.id == agent.id).values(status=agent.status))
                affected = [r[0] for r in conn.execute(select(S.chats.c.id).where(
                    and_(S.chats.c.assignee == agent.id, S.chats.c.status == "open")))]
                # an agent who came online takes waiting chats (the routing backlog) here,
                # in the command's transaction: its event reaches no chat of its own
                routed = self._store_routed(conn, world, [e for ev in evs for e in engine.backlog(ev, now)])
                world.rr_last.save()
                # an agent's event concerns each chat it is responsible for: one copy
                # per chat, so each chat processes its own in order
                # (agent events have no chat sequence: a random part keeps their ids unique)
                tag = secrets.token_hex(6)
                self._store_events(conn, [replace(e, chat_id=cid, id=f"{e.id}.{tag}@{cid}")
                                          for e in evs for cid in affected])
                affected += [cid for cid in routed if cid not in affected]
        self.dispatch(affected)
        return evs

    def _run_commands(self, cmds, single: bool = False) -> list:
        """Apply chat commands in one transaction: their chats locked in id order, each
        command on the chat as the commands before it in the batch left it. Returns one
        outcome per command: ``(events, chat)`` or the CommandRefused (or other exception)
        that command raised; a refused command changes nothing. If the transaction itself
        fails, each command is run again in its own (``single`` raises instead)."""
        try:
            with self.db.begin() as conn:
                return self._apply_commands(conn, cmds)
        except Exception as e:
            if single:
                raise
            if len(cmds) == 1:
                return [e]
            log.warning("a group of %d commands failed (%s); running them one by one", len(cmds),
                        type(e).__name__)
            return [self._run_commands([cmd])[0] for cmd in cmds]

    def _apply_commands(self, conn, cmds) -> list:
        now = self.clock()
        rows = {row["id"]: row for row in self._chat_rows(conn, [c.chat_id for c in cmds])}
        if not rows:
            return [CommandRefused("unknown_chat", f"no chat {c.chat_id!r}") for c in cmds]
        first = next(iter(rows.values()))
        ruleset = self._ruleset_at(conn, first["ruleset_version"])
        agents = self._agents(conn, first["agents_revision"])
        shared = _shared_routing(conn)
        articles, canned = self._articles(conn), self._canned(conn)
        repeated = Counter(c.chat_id for c in cmds)
        current: dict = {}  # chat id -> (state dict, event seq) after the batch's commands so far
        changed: dict = {}  # chat id -> World as its last applied command left it
        outcomes, events = [], []
        for cmd in cmds:
            row = rows.get(cmd.chat_id)
            if row is None or (cmd.token_hash is not None and row["token_hash"] != cmd.token_hash):
                # a wrong token and another chat's token get the same answer
                outcomes.append(CommandRefused("unknown_chat", f"no chat {cmd.chat_id!r}"))
                continue
            state, seq = current.get(cmd.chat_id) or (row["state"], row["event_seq"])
            world = self._world(conn, {"state": state, "event_seq": seq}, agents=dict(agents), shared=shared)
            engine = Engine(ruleset, world, articles=articles, canned=canned)
            try:
                evs = engine.apply(cmd.command, now, chat_id=cmd.chat_id, **cmd.args)
            except Exception as e:  # this command only: its world is dropped
                outcomes.append(e)
                continue
            chat = world.chats[cmd.chat_id]
            if repeated[cmd.chat_id] > 1:
                current[cmd.chat_id] = (chat_to_dict(chat), world.seq_of(cmd.chat_id))
            changed[cmd.chat_id] = world
            events += evs
            outcomes.append((evs, chat))
        if changed:
            chat_rows = []
            for cid, world in changed.items():
                values = self._chat_values(world, cid)
                values["id"] = cid
                chat_rows.append(values)
            S.update_rows(conn, S.chats, chat_rows)
            self._store_events(conn, events)
            shared.rr_last.save()
        return outcomes

    def load_chat(self, chat_id: str):
        """The stored chat (engine.model.Chat), or None."""
        with self.db.connect() as conn:
            state = conn.execute(select(S.chats.c.state).where(S.chats.c.id == chat_id)).scalar()
        return None if state is None else chat_from_dict(state)

    def dispatch(self, chat_ids) -> None:
        """Run the rules on these chats' new events. Embedded: right here, after the
        commit. Scaled mode replaces this with an RQ enqueue (server.jobs)."""
        if chat_ids:
            self.process_chats(chat_ids)

    def _articles(self, conn):
        """Articles by slug, read from the table only if a reply or rule asks for one."""
        return _LazyTable(lambda slug: conn.execute(select(S.articles).where(S.articles.c.slug == slug))
                          .mappings().first(), dict)

    def _canned(self, conn):
        return _LazyTable(lambda key: conn.execute(select(S.canned.c.text).where(S.canned.c.shortcut == key))
                          .scalar(), lambda v: v)

    # ------------------------------------------------------------ processing (in batches)

    def process_pending(self, chat_id: str) -> int:
        """Run the rules on a chat's unprocessed events, in order; returns how many."""
        with self.lock:
            count, signals = self._process_batch([chat_id])
        self._publish(signals)
        return count

    def process_chats(self, chat_ids) -> int:
        """Run the rules on the unprocessed events of many chats in one transaction (one
        read of their rows, events and deadlines; one write of each kind). If the batch
        fails, each chat is tried on its own, so one bad chat holds back no other."""
        ids = sorted(set(chat_ids))
        if len(ids) <= 1:
            return sum(self.process_pending(cid) for cid in ids)
        try:
            with self.lock:
                count, signals = self._process_batch(ids)
        except Exception:
            log.warning("a batch of %d chats failed; processing them one by one", len(ids), exc_info=True)
            count = 0
            for cid in ids:
                try:
                    count += self.process_pending(cid)
                except Exception:  # logged; its events stay in the outbox and are relayed again
                    log.exception("processing chat %s failed", cid)
            return count
        self._publish(signals)
        return count

    def _process_batch(self, chat_ids) -> tuple:
        with self.db.begin() as conn:
            rows = self._chat_rows(conn, chat_ids)
            if not rows:
                return 0, []
            ids = [r["id"] for r in rows]
            where = S.among(conn, S.events.c.chat_id, ids)
            pending: dict = {}
            for e in conn.execute(select(S.events.c.seq, S.events.c.chat_id, S.events.c.payload)
                                  .where(and_(S.events.c.processed_at.is_(None), where)).order_by(S.events.c.seq)):
                pending.setdefault(e.chat_id, []).append(e)
            rows = [r for r in rows if r["id"] in pending]
            signals = [("chat", {"chat_id": cid}) for cid in ids if cid not in pending]
            if not rows:
                return 0, signals
            items = self._load(conn, rows)
            seqs, now, deferred = [], 0.0, []
            # in the order they were committed, across the batch's chats (each chat's in
            # its order): what the chats share — capacity, round robin, the backlog's
            # waiting chats — then changes as it did in time, as in one simulated World
            by_chat = {item.chat_id: item for item in items}
            for e in sorted((e for cid in by_chat for e in pending[cid]), key=lambda e: e.seq):
                ev = event_from_dict(e.payload)
                deferred += by_chat[e.chat_id].engine.process([ev], ev.at).deferred
                seqs.append(e.seq)
                now = max(now, ev.at)
            signals += self._store(conn, items, now, deferred)
            self._count(("events",), len(seqs))
            conn.execute(update(S.events).where(S.among(conn, S.events.c.seq, seqs)).values(processed_at=self.clock()))
            return len(seqs), signals

    def _load(self, conn, rows) -> list:
        """Worlds and engines for locked chat rows, with their rule memory and deadlines."""
        ruleset = self._ruleset_at(conn, rows[0]["ruleset_version"])
        ids = [r["id"] for r in rows]
        due: dict = {}
        where = S.among(conn, S.timers.c.chat_id, ids)
        for t in conn.execute(select(S.timers.c.chat_id, S.timers.c.rule_id, S.timers.c.due).where(where)):
            due.setdefault(t.chat_id, {})[t.rule_id] = t.due
        agents = self._agents(conn, rows[0]["agents_revision"])
        shared = _shared_routing(conn)
        articles, canned = self._articles(conn), self._canned(conn)
        items = []
        for row in rows:
            world = self._world(conn, row, agents=agents, shared=shared)
            engine = Engine(ruleset, world, articles=articles, canned=canned, tracing=True, why="fired")
            memory = row["rule_state"] or {}
            engine.load_chat_state(row["id"], {"last": memory.get("last") or {}, "since": memory.get("since") or {},
                                               "timers": due.get(row["id"], {})})
            items.append(_Loaded(row["id"], world, engine))
        return items

    def _store_routed(self, conn, world, evs) -> list:
        """Store the chats the backlog assigned (loaded into ``world`` from outside the
        chats being processed) with their events, unprocessed: each chat's own processing
        runs its rules on them, in order after its earlier events. Returns their ids."""
        ids = list(dict.fromkeys(e.chat_id for e in evs))
        for cid in ids:
            self._save_chat(conn, world, cid)
        self._store_events(conn, evs)
        return ids

    def _store(self, conn, items, now, deferred=()) -> list:
        """Store what the evaluations produced: chats, rule memory, deadlines, effects and
        traces, one statement of each kind. Effects are inserted by their idempotency key
        (``ON CONFLICT DO NOTHING``), so a redelivered event stores none twice. Returns the
        signals to publish once the transaction has committed."""
        chat_rows, timer_rows, note_rows, email_rows, trace_rows, hook_rows = [], [], [], [], [], []
        agent_mail_rows = []
        rule_runs: dict = {}  # (rule, minute) -> [evaluated, fired, effects, last fired]
        for item in items:
            engine, cid = item.engine, item.chat_id
            state = engine.chat_state(cid)
            values = self._chat_values(item.world, cid, rule_state={"last": state["last"], "since": state["since"]})
            values["id"] = cid
            chat_rows.append(values)
            timer_rows += [dict(chat_id=cid, rule_id=rule, due=at) for rule, at in state["timers"].items()]
            for eff in engine.effects:
                self._count(("effect", eff.kind))
                if eff.kind == "notify":
                    note_rows.append(dict(key=eff.idempotency_key, agent_id=eff.recipient, chat_id=eff.chat_id,
                                          rule=eff.rule, template=eff.template, text=eff.text, at=eff.at))
                    # the engine left out agents who turned the template off; those who
                    # want it by email get it in the app and in a batched email
                    agent = item.world.agents.get(eff.recipient)
                    if agent is not None and agent.email and agent.notification_channel(eff.template) == "email":
                        agent_mail_rows.append(note_rows[-1])
                elif eff.kind == "email":
                    email_rows.append(dict(key=eff.idempotency_key, chat_id=eff.chat_id, to_addr=eff.recipient,
                                           template=eff.template, data=eff.data, at=eff.at))
                elif eff.kind == "webhook":
                    hook_rows.append(dict(key=eff.idempotency_key, webhook=eff.recipient, chat_id=eff.chat_id,
                                          rule=eff.rule, event=(eff.data.get("event") or {}).get("type"),
                                          body=eff.data, at=eff.at, status="pending", attempts=0,
                                          next_attempt_at=eff.at, updated_at=eff.at))
            for e in engine.trace:
                if e.kind == "fired":
                    self._count(("fired", e.rule))
                elif e.kind == "cascade_limit":
                    self._count(("cascade_limit",))
            entries = [_trace_json(e) for e in engine.trace if e.kind != "input"]
            if entries:
                trace_rows.append(dict(chat_id=cid, at=now, entries=entries))
            _count_rule_runs(rule_runs, engine.trace)
        ids = [item.chat_id for item in items]
        items[0].world.rr_last.save()  # shared by the batch
        # the chats the backlog assigned: the batch shares them (World.chats of the
        # routing state), so any item's world holds each one as it stands now
        routed = self._store_routed(conn, _routing_world(items), list(deferred)) if deferred else []
        S.update_rows(conn, S.chats, chat_rows)
        conn.execute(S.timers.delete().where(S.among(conn, S.timers.c.chat_id, ids)))
        S.insert_rows(conn, S.timers, timer_rows)
        _insert_missing(conn, S.notifications, note_rows)
        if _insert_missing(conn, S.emails, email_rows):
            self._emails_waiting = True
        if _insert_missing(conn, S.webhook_deliveries, hook_rows):
            self._webhooks_waiting = True
        if _insert_missing(conn, S.agent_email_items, agent_mail_rows):
            self._agent_mail_next = 0.0
        S.insert_rows(conn, S.traces, trace_rows)
        if rule_runs:
            _add_rule_runs(conn, rule_runs)
        # a redelivered notification was not stored again; its wake-up costs a stream one read
        signals = [("notification", {"agent_id": r["agent_id"], "chat_id": r["chat_id"]}) for r in note_rows]
        return signals + [("chat", {"chat_id": cid}) for cid in ids] + [("routed", {"chat_id": cid}) for cid in routed]

    def _count(self, key, n=1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def _publish(self, signals) -> None:
        """Tell listeners (the live streams) what changed; they read the database for it.
        Each signal once (a batch notifies one agent of one chat many times); a listener
        with a ``many`` method gets them all in one call (one Redis message per batch)."""
        routed = [p["chat_id"] for kind, p in signals if kind == "routed"]
        if routed:  # chats the backlog assigned: their new events are theirs to process
            self.dispatch(sorted(set(routed)))
        seen, unique = set(), []
        for kind, payload in signals:
            if kind == "routed":
                continue
            key = (kind, payload.get("agent_id"), payload.get("chat_id"))
            if key not in seen:
                seen.add(key)
                unique.append((kind, payload))
        for listener in self.listeners:
            try:
                many = getattr(listener, "many", None)
                if many is not None:
                    many(unique)
                else:
                    for kind, payload in unique:
                        listener(kind, payload)
            except Exception:  # a broken listener must not undo a committed change
                log.exception("listener failed")

    def after_change(self) -> None:
        """Deliver what the last changes produced outside the database (emails; webhooks
        are handed to their sender, never posted here). Only when an email was stored
        since the last delivery (or one failed to go out)."""
        if self._webhooks_waiting:
            self._webhooks_waiting = False
            if self.webhooks_stored is not None:
                try:
                    self.webhooks_stored()
                except Exception:  # the rows wait; the scheduler (or the next change) hands them over
                    log.exception("handing webhooks over failed")
        self.send_agent_mail()
        if not self._emails_waiting:
            return
        self._emails_waiting = False
        if self.settings.get("MAILDIR") or self.settings.get("SMTP_URL"):
            from .mail import deliver_pending

            with self.lock:
                _, failed = deliver_pending(self.db, self.settings, self.clock())
            if failed:
                self._emails_waiting = True  # a failed one is tried again next time

    def send_agent_mail(self) -> int:
        """Collect and send the agents' batched notification emails whose window has ended
        (nothing to do: one comparison). Returns how many were sent."""
        due = self._agent_mail_next
        if due is None or self.clock() < due or not (self.settings.get("MAILDIR") or self.settings.get("SMTP_URL")):
            return 0
        from . import agent_mail

        window = float(self.settings.get("AGENT_EMAIL_WINDOW", 300))
        with self.lock:
            sent = agent_mail.deliver(self.db, self.settings, self.clock())
        self._agent_mail_next = agent_mail.next_due(self.db, window)
        return sent

    # ------------------------------------------------------------ deadlines

    def next_due(self) -> float | None:
        with self.db.connect() as conn:
            return conn.execute(select(func.min(S.timers.c.due))).scalar()

    def run_due(self, now: float | None = None, chat_ids=None) -> int:
        """Fire every deadline due by ``now`` (default: the clock), of all chats or of
        ``chat_ids`` (claimed by the scheduler); returns how many chats. They are fired
        in batches; a batch that fails is retried chat by chat, and a chat that fails on
        its own is postponed a minute, so it holds back no other deadline."""
        now = self.clock() if now is None else now
        if chat_ids is not None:
            due_chats = list(chat_ids)
        else:
            with self.db.connect() as conn:
                due_chats = [r[0] for r in conn.execute(
                    select(S.timers.c.chat_id).where(S.timers.c.due <= now).group_by(S.timers.c.chat_id)
                    .order_by(func.min(S.timers.c.due)))]
        done = 0
        for i in range(0, len(due_chats), BATCH):
            batch = due_chats[i:i + BATCH]
            try:
                done += self._run_due_batch(batch, now)
                continue
            except Exception:
                if len(batch) > 1:
                    log.warning("a batch of %d due chats failed; firing them one by one", len(batch), exc_info=True)
                else:
                    log.exception("deadline of chat %s failed; retried later", batch[0])
                    self._postpone(batch[0], now)
                    continue
            for chat_id in batch:
                try:
                    done += self._run_due_batch([chat_id], now)
                except Exception:  # one chat's failure must not hold back every other deadline
                    log.exception("deadline of chat %s failed; retried later", chat_id)
                    self._postpone(chat_id, now)
        return done

    def _run_due_batch(self, chat_ids, now: float) -> int:
        with self.lock:
            with self.db.begin() as conn:
                rows = self._chat_rows(conn, chat_ids)
                if not rows:
                    return 0
                items = self._load(conn, rows)
                deferred = []
                for item in items:
                    deferred += item.engine.run_due(now).deferred
                signals = self._store(conn, items, now, deferred)
        self._publish(signals)
        return len(items)

    def _postpone(self, chat_id: str, now: float, seconds: float = 60.0) -> None:
        """Move a failing chat's due deadlines a minute on, so it is retried, not spun on."""
        with self.db.begin() as conn:
            conn.execute(update(S.timers).where(and_(S.timers.c.chat_id == chat_id, S.timers.c.due <= now))
                         .values(due=now + seconds))


BATCH = 100  # chats per transaction when firing deadlines
_ACTIVE_VERSION = select(S.rulesets.c.version).where(S.rulesets.c.active.is_(True)).scalar_subquery()
_AGENTS_REVISION = select(S.revisions.c.value).where(S.revisions.c.name == "agents").scalar_subquery()


# World attributes routing shares across the chats of one transaction
_SHARED = ("open_by_agent", "open_by_channel", "rr_last", "picks", "before_pick", "foreign", "chat_seqs")


class _RoutingState:
    """Routing's state for one transaction, over the database (server.routing_state):
    the World attributes in _SHARED, the chats of the batch (``batch``, id -> Chat, as
    their engines change them) and the waiting chats loaded for the backlog (``loaded``)."""

    def __init__(self, conn):
        self.open_by_agent, self.open_by_channel, self.foreign, self.chat_seqs = {}, {}, set(), {}
        self.rr_last, self.picks, self.before_pick = _RoundRobin(conn), Picks(conn), routing_lock(conn)
        self.batch, self.loaded = {}, {}


def _shared_routing(conn) -> _RoutingState:
    return _RoutingState(conn)


def _routing_world(items) -> World:
    """A World in which every chat the batch's backlog loaded can be found."""
    world = World(chat_seqs=items[0].world.chat_seqs)
    for item in items:
        world.chats.update({cid: item.world.chats[cid] for cid in item.world.foreign if cid in item.world.chats})
    return world


class _RoundRobin:
    """World.rr_last over the ``round_robin`` table: a department's last pick is read
    when a rule or command first asks for it, and the picks made are stored by
    :meth:`save` in the same transaction."""

    def __init__(self, conn):
        self._conn, self._seen, self._changed = conn, {}, {}

    def get(self, department, default=None):
        if department not in self._seen:
            self._seen[department] = self._conn.execute(
                select(S.round_robin.c.agent_id).where(S.round_robin.c.department == department)).scalar()
        found = self._seen[department]
        return default if found is None else found

    def __setitem__(self, department, agent_id) -> None:
        self._seen[department] = self._changed[department] = agent_id

    def save(self) -> None:
        if not self._changed:
            return
        insert = _dialect_insert(self._conn)
        stmt = insert(S.round_robin)
        self._conn.execute(stmt.on_conflict_do_update(index_elements=["department"],
                                                      set_={"agent_id": stmt.excluded.agent_id}),
                           [{"department": d, "agent_id": a} for d, a in self._changed.items()])
        self._changed = {}


def _dialect_insert(conn):
    """The INSERT construct with ON CONFLICT of the connection's database."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


class _Command(NamedTuple):
    command: str
    chat_id: str
    token_hash: str | None
    args: dict


class _Loaded(NamedTuple):
    chat_id: str
    world: World
    engine: Engine


_RUN_KINDS = {"rule": 0, "fired": 1, "effect": 2}


def _count_rule_runs(counts: dict, trace) -> None:
    """Add a trace's evaluations, firings and effects to ``counts`` by rule and minute."""
    for e in trace:
        i = _RUN_KINDS.get(e.kind)
        if i is None or e.rule is None:
            continue
        row = counts.get((e.rule, int(e.at // 60)))
        if row is None:
            row = counts[(e.rule, int(e.at // 60))] = [0, 0, 0, None]
        row[i] += 1
        if i == 1 and (row[3] is None or e.at > row[3]):
            row[3] = e.at


def _add_rule_runs(conn, counts: dict) -> None:
    """Add the counts into rule_runs (analytics' per-rule figures), one upsert per batch."""
    t = S.rule_runs
    stmt = _dialect_insert(conn)(t)
    new = stmt.excluded
    stmt = stmt.on_conflict_do_update(index_elements=["rule", "minute", "shard"], set_={
        "evaluated": t.c.evaluated + new.evaluated, "fired": t.c.fired + new.fired,
        "effects": t.c.effects + new.effects,
        "last_fired": case((new.last_fired.is_(None), t.c.last_fired),
                           (or_(t.c.last_fired.is_(None), new.last_fired > t.c.last_fired), new.last_fired),
                           else_=t.c.last_fired)})
    # the shard is the database session's process id: no two open transactions write one
    # row, so a batch waiting on a lock (or slow to commit) holds back no other worker
    shard = conn.connection.dbapi_connection.info.backend_pid if conn.dialect.name == "postgresql" else 0
    conn.execute(stmt, [{"rule": rule, "minute": minute, "shard": shard, "evaluated": c[0], "fired": c[1],
                         "effects": c[2], "last_fired": c[3]} for (rule, minute), c in sorted(counts.items())])


def _insert_missing(conn, table, rows) -> int:
    """Insert the rows whose ``key`` is not stored yet (``ON CONFLICT (key) DO NOTHING``,
    sent as one pipelined executemany); returns how many rows were offered."""
    if not rows:
        return 0
    unique = list({r["key"]: r for r in rows}.values())
    S.insert_rows(conn, table, unique, conflict_key=["key"])
    return len(unique)


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


_PLAIN = (bool, int, float, str, type(None))


def _trace_json(e) -> dict:
    """A trace entry as stored (its detail shared, not copied: it is written at once)."""
    d = {"kind": e.kind, "at": e.at}
    if e.rule is not None:
        d["rule"] = e.rule
    if e.event is not None:
        d["event"] = e.event
    if e.event_id is not None:
        d["event_id"] = e.event_id
    if e.fired is not None:
        d["fired"] = e.fired
    detail = e.detail
    if detail:
        why = detail.get("why")
        if why:  # an explained rule: (depth, text, value) as named fields, values shown plainly
            detail = {**detail, "why": [{"depth": dd, "condition": t, "value": v if isinstance(v, _PLAIN) else str(v)}
                                        for dd, t, v in why]}
        d["detail"] = detail
    return d
