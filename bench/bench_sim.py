"""(C) Simulator benchmark: the engine on a virtual clock, as the scenario runner drives it.

Day: N chats (10,000 by default) of 20 steps each, their starts spread over one simulated
day, all steps merged in time order. The driver does what engine/scenario.py's run_test
does: deadlines strictly before t, then the inputs at t, then the deadlines due at t.
Agents act as a person would: the assignee replies, reads and closes; with no assignee a
visible agent joins first. A refused step (the chat was closed by a rule meanwhile,
a lock …) is counted, not fatal. The rule set is the shipped defaults,
rules/examples/routing.rules (state rules with 2m/30m deadlines, a schedule,
`assign department "night" by least_busy`) and four more typical rules (below). Agents
have a capacity (max_chats), as in production.

The day runs in a child process, so its peak RSS (ru_maxrss) is its own; the time
counted is the driver loop (steps and rule sets are built before the clock starts).

Week: one chat over seven simulated days (customer away for days, reopen, 30 deadlines),
timed from a fresh Engine to the last deadline, best and median of many repetitions; and
the same week as a scenario file through engine.scenario.run_test when it is available.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import common  # noqa: F401,E402  (puts the project root on sys.path)

from common import ROOT, fmt_s, table  # noqa: E402

START = 1_767_571_200.0  # 2026-01-05T00:00:00Z, a Monday
DAY = 86_400.0

EXTRA_RULES = '''
rule tag_refund "Refund requests are tagged" {
  on message.created
  when message.author == "customer" and message.text contains "refund"
  then tag "refund"
}

rule vip_priority "Corporate customers get priority" {
  on chat.created
  when customer.email ends with "@corp.example"
  then {
    set priority 3
    tag "vip"
  }
}

rule docs_to_support "Chats from the docs go to support" {
  on chat.created
  when chat.page_url contains "/docs" and in_schedule("support_hours")
  then assign department "support"
}

rule nudge_customer "Nudge a customer who has not answered for 15 minutes" {
  when chat.awaiting_customer for 15m and chat.open
  then reply "Are you still there, {{ customer.name }}?"
}
'''

AGENTS = (
    [{"id": "alice", "departments": ["sales"], "max_chats": 12}]
    + [{"id": f"sales{i}", "departments": ["sales"], "max_chats": 8} for i in range(4)]
    + [{"id": f"support{i}", "departments": ["support"], "max_chats": 8} for i in range(8)]
    + [{"id": f"night{i}", "departments": ["night"], "max_chats": 10} for i in range(6)]
    + [{"id": f"billing{i}", "departments": ["billing", "support"], "max_chats": 6} for i in range(3)]
    + [{"id": "tess", "departments": ["support"], "channels": ["telegram"]},
       {"id": "dave", "access_chats": False}]
)
PAGES = ("https://shop.example/pricing", "https://shop.example/docs/api", "https://shop.example/",
         "https://shop.example/checkout", "https://shop.example/blog/news")
CHANNELS = ("widget",) * 6 + ("email", "telegram", "api")
TEXTS = ("Hi, I need help with my order", "Can I get a refund?", "The login does not work",
         "What does the gold plan cost?", "Thanks!", "Still waiting…", "ok", "My invoice is wrong")

# the 20 steps of one chat
SCRIPT = ("start_chat", "customer_message", "join", "read", "reply", "customer_reads", "customer_message",
          "read", "reply", "note", "customer_message", "customer_leaves", "customer_returns",
          "customer_message", "read", "reply", "customer_reads", "customer_message", "reply", "close")


def load_rules():
    from dsl.loader import load_rule_set

    loaded = load_rule_set([ROOT / "rules" / "examples" / "routing.rules"], defaults=True,
                           texts={"bench_extra.rules": EXTRA_RULES})
    if loaded.ruleset is None:
        raise RuntimeError("; ".join(f"{d.code} {d.message}" for d in loaded.diagnostics))
    return loaded.ruleset


def make_world():
    from engine.model import World

    world = World()
    for a in AGENTS:
        world.add_agent(**a)
    return world


def day_steps(n_chats: int, seed: int = 5) -> list:
    """[(t, seq, chat index, step)] of every chat, in time order."""
    rng = random.Random(seed)
    out = []
    seq = 0
    for c in range(n_chats):
        t = START + rng.random() * DAY
        for step in SCRIPT:
            out.append((t, seq, c, step))
            seq += 1
            r = rng.random()
            if r < 0.05:
                t += rng.uniform(1200, 2700)  # a long silence: the 30m auto_close may win
            elif r < 0.4:
                t += rng.uniform(60, 480)
            else:
                t += rng.uniform(5, 60)
    out.sort()
    return out


class Driver:
    """Applies scripted steps to an Engine like engine/scenario.py does."""

    def __init__(self, engine, seed: int = 9, drain: bool = False):
        self.engine = engine
        self.drain = drain  # hand effects and trace off after each step, as an outbox would
        self.fired = self.effects = 0
        self.world = engine.world
        self.rng = random.Random(seed)
        self.refused = 0
        self.applied = 0
        self.agents = [a for a in self.world.agents.values() if a.access_chats]

    def until(self, t: float) -> None:
        """Deadlines strictly before t."""
        eng = self.engine
        while True:
            due = eng.next_due()
            if due is None or due >= t:
                return
            eng.run_due(due)

    def apply(self, t: float, cid: str, step: str) -> None:
        from engine.model import CommandRefused

        self.until(t)
        try:
            self._apply(t, cid, step)
            self.applied += 1
        except CommandRefused:
            self.refused += 1
        self.engine.run_due(t)
        if self.drain:
            self._drain()

    def _drain(self):
        eng = self.engine
        self.fired += sum(1 for e in eng.trace if e.kind == "fired")
        self.effects += len(eng.effects)
        eng.trace.clear()
        eng.effects.clear()

    def _agent(self, chat):
        if chat.assignee is not None:
            return chat.assignee
        visible = [a for a in self.agents if a.sees(chat)]
        return self.rng.choice(visible).id

    def _apply(self, t, cid, step):
        eng, rng = self.engine, self.rng
        if step == "start_chat":
            i = int(cid[1:])
            domain = "corp.example" if i % 7 == 0 else "example.com"
            eng.execute("start_chat", t, chat_id=cid,
                        customer={"id": f"u{i}", "name": f"Customer {i}", "email": f"u{i}@{domain}"},
                        channel=rng.choice(CHANNELS), page_url=rng.choice(PAGES), text=rng.choice(TEXTS))
            return
        chat = self.world.chats[cid]
        if step in ("customer_message", "customer_leaves", "customer_returns", "customer_reads"):
            args = {"text": rng.choice(TEXTS)} if step == "customer_message" else {}
            eng.execute(step, t, chat_id=cid, **args)
        elif step == "join":
            eng.execute("join", t, chat_id=cid, agent=self._agent(chat))
        elif step in ("read", "reply", "note"):
            agent = self._agent(chat)
            if step == "reply" and chat.assignee is None:
                eng.execute("join", t, chat_id=cid, agent=agent)
            args = {"text": "Let me check that for you."} if step == "reply" else \
                {"text": "@alice could you look at this?"} if step == "note" else {}
            eng.execute(step, t, chat_id=cid, agent=agent, **args)
        elif step == "close":
            eng.execute("close", t, chat_id=cid, agent=chat.assignee)


def simulate_day(n_chats: int, drain: bool = False) -> dict:
    """Run the day in this process; returns figures (called in a child process).

    ``drain``: the driver empties ``engine.effects`` and ``engine.trace`` after every step
    (counting them first), as a service handing effects to an outbox would; this shows how
    much of the time and memory goes to what the engine keeps."""
    from engine.core import Engine

    rss0 = _rss_mb()
    ruleset = load_rules()
    steps = day_steps(n_chats)
    ids = [f"c{i}" for i in range(n_chats)]
    engine = Engine(ruleset, make_world())
    driver = Driver(engine, drain=drain)
    rss_ready = _rss_mb()
    w0, c0 = time.perf_counter(), time.process_time()
    for t, _, c, step in steps:
        driver.apply(t, ids[c], step)
    driver.until(math.inf)
    elapsed, wall = time.process_time() - c0, time.perf_counter() - w0
    fired = driver.fired + sum(1 for e in engine.trace if e.kind == "fired")
    return {
        "drain": drain, "chats": n_chats, "steps": len(steps), "seconds": elapsed, "wall": wall, "applied": driver.applied,
        "refused": driver.refused, "fired": fired, "effects": driver.effects + len(engine.effects),
        "trace_entries": len(engine.trace), "events": engine.world.event_seq,
        "peak_rss_mb": _peak_rss_mb(), "rss_start_mb": rss0, "rss_ready_mb": rss_ready,
        "rss_end_mb": _rss_mb(), "span_hours": (steps[-1][0] - steps[0][0]) / 3600 if steps else 0,
    }


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec,
    so a child would report its parent's peak when that was higher."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------- one chat, one week

H, M = 3600.0, 60.0
WEEK = [  # (seconds from Monday 00:00, command, args); agent "alice" or "support0"
    (8 * H, "start_chat", {"customer": {"id": "w1", "name": "Wendy", "email": "w@example.com"},
                           "page_url": "https://shop.example/pricing", "text": "Hi, a question on pricing"}),
    (8 * H + 1 * M, "customer_message", {"text": "Anyone there?"}),
    (8 * H + 20 * M, "join", {"agent": "alice"}),
    (8 * H + 21 * M, "read", {"agent": "alice"}),
    (8 * H + 23 * M, "reply", {"agent": "alice", "text": "Hello Wendy, how can I help?"}),
    (8 * H + 40 * M, "customer_leaves", {}),
    (1 * DAY + 10 * H, "customer_returns", {}),
    (1 * DAY + 10 * H + 1 * M, "customer_message", {"text": "Sorry, I was away. Is there a refund?"}),
    (1 * DAY + 10 * H + 20 * M, "join", {"agent": "alice"}),
    (1 * DAY + 10 * H + 21 * M, "reply", {"agent": "alice", "text": "Yes, within 30 days."}),
    (1 * DAY + 10 * H + 40 * M, "customer_reads", {}),
    (1 * DAY + 10 * H + 41 * M, "customer_message", {"text": "Great, thanks"}),
    (1 * DAY + 10 * H + 50 * M, "note", {"agent": "alice", "text": "@support0 please process the refund"}),
    (2 * DAY + 15 * H, "customer_message", {"text": "Did the refund go through?"}),
    (2 * DAY + 15 * H + 10 * M, "join", {"agent": "support0"}),
    (2 * DAY + 15 * H + 12 * M, "reply", {"agent": "support0", "text": "It did, today."}),
    (2 * DAY + 15 * H + 13 * M, "close", {"agent": "support0"}),
    (4 * DAY + 9 * H, "customer_message", {"text": "One more question"}),
    (4 * DAY + 9 * H + 1 * M, "customer_leaves", {}),
    (4 * DAY + 9 * H + 20 * M, "customer_returns", {}),
    (4 * DAY + 9 * H + 22 * M, "join", {"agent": "alice"}),
    (4 * DAY + 9 * H + 23 * M, "reply", {"agent": "alice", "text": "Sure, go ahead"}),
    (4 * DAY + 9 * H + 24 * M, "customer_leaves", {}),
    (6 * DAY + 20 * H, "customer_returns", {}),
    (6 * DAY + 20 * H + 1 * M, "customer_message", {"text": "Never mind, all good"}),
    (6 * DAY + 20 * H + 25 * M, "close", {}),
]


def simulate_week(ruleset) -> dict:
    from engine.core import Engine
    from engine.model import CommandRefused

    engine = Engine(ruleset, make_world())
    driver = Driver(engine)
    refused = 0
    for at, command, args in WEEK:
        t = START + at
        driver.until(t)
        try:
            engine.execute(command, t, chat_id="w1", **args)
        except CommandRefused:
            refused += 1
        engine.run_due(t)
    driver.until(START + 7 * DAY)
    return {"fired": sum(1 for e in engine.trace if e.kind == "fired"), "refused": refused,
            "events": engine.world.event_seq}


def week_scenario_yaml() -> str:
    """The same week as a scenario file (SPEC §4) for engine.scenario."""
    lines = ["rules: [%s]" % json.dumps(str(ROOT / "rules" / "examples" / "routing.rules")),
             "start: 2026-01-05T00:00:00Z", "agents:"]
    for a in AGENTS:
        lines.append("  - " + json.dumps(a))
    lines += ["tests:", "  - name: one chat, one week", "    steps:"]
    step_names = {"start_chat": "start_chat"}
    for at, command, args in WEEK:
        a = dict(args)
        a = {"chat": "w1", **a}
        lines.append(f"      - {{at: {int(at)}s, {step_names.get(command, command)}: {json.dumps(a)}}}")
    lines += ["    expect:", "      - {at: %ds, chat: {w1: {status: closed}}}" % int(7 * DAY - 1)]
    return "\n".join(lines) + "\n"


def week(repeats: int = 30) -> dict:
    ruleset = load_rules()
    times, walls = [], []
    info = None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        info = simulate_week(ruleset)
        times.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
    out = {"best": min(times), "median": statistics.median(times), "wall_median": statistics.median(walls),
           "repeats": repeats, **info}
    try:
        from engine.scenario import load_scenario, prepare, run_test
    except ImportError as e:
        out["scenario"] = f"engine.scenario not importable ({e})"
        return out
    with tempfile.TemporaryDirectory(prefix="chatflow-bench-week-") as tmp:
        path = os.path.join(tmp, "week.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(week_scenario_yaml())
        try:
            scenario = prepare(load_scenario(path))
            stimes = []
            for _ in range(repeats):
                c0 = time.process_time()
                result = run_test(scenario, scenario.tests[0])
                stimes.append(time.process_time() - c0)
            out["scenario"] = {"best": min(stimes), "median": statistics.median(stimes),
                               "failures": [f"{f.where}: expected {f.expected}, got {f.got}"
                                            for f in result.failures][:3]}
        except Exception as e:  # the runner is being written by someone else: report, not fail
            out["scenario"] = f"scenario run failed: {type(e).__name__}: {e}"[:200]
    return out


# ---------------------------------------------------------------- entry points

def _child_day(n_chats: int, drain: bool) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child-day", str(n_chats)] + (["--drain"] if drain else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"the simulated day failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(n_chats: int = 10_000, drained: bool = True, log=print) -> dict:
    log(f"[sim] day: {n_chats:,} chats × {len(SCRIPT)} steps in a child process …")
    # the simulator (engine.scenario.run_test) forgets records no expectation can still
    # look at, so the measured day drains after each step as it does
    day = _child_day(n_chats, True)
    log(f"[sim] day: {fmt_s(day['seconds'])} CPU, {fmt_s(day['wall'])} wall, peak RSS {day['peak_rss_mb']:.0f} MB")
    day_drained = None
    if drained:
        day_drained = _child_day(n_chats, False)
        log(f"[sim] day, every record kept: {fmt_s(day_drained['seconds'])}, peak RSS {day_drained['peak_rss_mb']:.0f} MB")
    wk = week()
    log(f"[sim] week: best {fmt_s(wk['best'])}")
    return {"day": day, "day_drained": day_drained, "week": wk}


def render(res) -> str:
    d, w = res["day"], res["week"]
    per_step = d["seconds"] / d["steps"] if d["steps"] else 0
    t1 = table(["run", "CPU time", "peak RSS", "notes"], [
        [f"day: {d['chats']:,} chats × {len(SCRIPT)} steps", f"{fmt_s(d['seconds'])} (wall {fmt_s(d['wall'])})",
         f"{d['peak_rss_mb']:.0f} MB",
         f"{d['steps']:,} steps ({fmt_s(per_step)}/step, {d['refused']:,} refused), {d['events']:,} events, "
         f"{d['fired']:,} rules fired, {d['effects']:,} effects (drained after each step, as run_test does); "
         f"RSS before the run {d['rss_ready_mb']:.0f} MB, after {d['rss_end_mb']:.0f} MB; "
         f"steps span {d['span_hours']:.1f} h"],
    ] + ([[
        "day, same steps, every effect and trace entry kept (as dry-run keeps them; diagnostic)",
        f"{fmt_s(res['day_drained']['seconds'])} (wall {fmt_s(res['day_drained']['wall'])})",
        f"{res['day_drained']['peak_rss_mb']:.0f} MB",
        f"{res['day_drained']['fired']:,} rules fired, {res['day_drained']['effects']:,} effects (same run otherwise); "
        "what keeping every record costs"]] if res.get("day_drained") else []) + [
        ["week: one chat, Engine driven directly",
         f"{fmt_s(w['best'])} best / {fmt_s(w['median'])} median (wall median {fmt_s(w['wall_median'])})", "",
         f"{len(WEEK)} inputs, {w['events']} events, {w['fired']} rules fired, {w['refused']} refused; "
         f"{w['repeats']} repetitions"],
        ["week: same chat as a scenario file (engine.scenario.run_test)",
         (f"{fmt_s(w['scenario']['best'])} best / {fmt_s(w['scenario']['median'])} median"
          if isinstance(w["scenario"], dict) else "—"), "",
         (("expectation failures: " + "; ".join(w["scenario"]["failures"])) if isinstance(w["scenario"], dict)
          and w["scenario"]["failures"] else "run_test only (loading excluded)") if isinstance(w["scenario"], dict)
         else w["scenario"]],
    ], "(C) Simulator")
    full = d["chats"] == 10_000
    targets = [
        ["10,000 chats × 20 steps, one day, < 10 s",
         f"{fmt_s(d['seconds'])} CPU (wall {fmt_s(d['wall'])})" + ("" if full else f" ({d['chats']:,} chats, quick run)"),
         ("MET" if d["seconds"] < 10 else "MISSED") if full else "n/a"],
        ["… with memory < 500 MB (peak RSS of the process)", f"{d['peak_rss_mb']:.0f} MB",
         ("MET" if d["peak_rss_mb"] < 500 else "MISSED") if full else "n/a"],
        ["a simulated week of one chat < 50 ms", f"{fmt_s(w['best'])} best / {fmt_s(w['median'])} median",
         "MET" if w["median"] < 0.050 else "MISSED"],
    ]
    return t1 + "\n\n" + table(["target", "measured", "verdict"], targets)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chats", type=int, default=10_000)
    p.add_argument("--child-day", type=int, metavar="N", help=argparse.SUPPRESS)
    p.add_argument("--drain", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child_day:
        print(json.dumps(simulate_day(a.child_day, a.drain)))
        return
    print(render(run(a.chats)))


if __name__ == "__main__":
    main()
