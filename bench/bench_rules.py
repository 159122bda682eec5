"""(A) Rule language benchmark: parse + compile + lint of a generated rule file.

A file of N rules (1,000 by default) is generated with the variety of a real rule set:
event rules and state rules, titles, priorities, schedules, every comparison operator,
functions (lower, len, in_schedule, hour, weekday), `not`, parentheses, `STATE for D`,
and 1–3 actions of every kind. It must compile without errors (it is checked).

Measured, best of several rounds:
  .rules  dsl.parser.parse(text) → dsl.compiler.compile_files([file]) → dsl.lint.lint(ruleset)
  YAML    the same file through dsl.yaml_form.dump_yaml, then load_yaml(text) → compile → lint
  end to end  dsl.loader.load_rule_set([], defaults=True, texts={name: text}) + lint
Grammar load: dsl.parser.grammar() timed in fresh processes with TMPDIR pointing at a
private folder: the first process builds the LALR tables and writes Lark's cache there
(cold); the next ones load the cache (the cached figure is their best and median).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

import common  # noqa: F401,E402  (puts the project root on sys.path)

from common import ROOT, Clock, best, best_of, fmt_c, fmt_s, table  # noqa: E402

EVENTS_WITH_MESSAGE = ("chat.created", "message.created", "message.edited")
OTHER_EVENTS = ("chat.assigned", "chat.joined", "chat.closed", "message.read", "customer.left",
                "customer.returned", "chat.tagged", "chat.reopened", "chat.unassigned")
CHANNELS = ("widget", "email", "telegram", "facebook", "whatsapp", "api")
AGENTS = ("alice", "bob", "carol", "dave", "erin", "frank", "gina", "hugo")
DEPTS = ("sales", "support", "billing", "night", "vip")
TAGS = ("vip", "pricing", "refund", "bug", "returning", "new", "enterprise", "urgent")
WORDS = ("refund", "invoice", "price", "cancel", "order", "login", "password", "crash", "upgrade")
STATES_FOR = ("chat.awaiting_agent", "chat.idle", "chat.unread_by_assignee", "chat.unread_by_customer",
              "chat.assigned", "chat.unassigned", "customer.offline", "chat.awaiting_customer")
DURATIONS = ("30s", "90s", "2m", "5m", "10m", "15m", "30m", "1h", "1h30m", "4h", "1d")
SCHEDULES = ("support_hours", "weekend", "night_desk")
TEMPLATES = ("new_chat", "new_message", "assigned", "unattended", "unread_messages", "unread_replies")


def _q(s: str) -> str:
    return json.dumps(s)


def _comparison(rng: random.Random, has_message: bool) -> str:
    choices = [
        lambda: f"chat.channel == {_q(rng.choice(CHANNELS))}",
        lambda: f"chat.channel in [{', '.join(_q(c) for c in rng.sample(CHANNELS, 2))}]",
        lambda: f"chat.channel not in [{', '.join(_q(c) for c in rng.sample(CHANNELS, 2))}]",
        lambda: f"chat.priority >= {rng.randint(1, 4)}",
        lambda: f"chat.priority < {rng.randint(1, 4)}",
        lambda: f"chat.message_count > {rng.randint(1, 20)}",
        lambda: f"chat.tags contains {_q(rng.choice(TAGS))}",
        lambda: f"chat.page_url contains {_q('/' + rng.choice(WORDS))}",
        lambda: f"chat.page_url starts with \"https://shop.example/{rng.choice(WORDS)}\"",
        lambda: f"chat.department == {_q(rng.choice(DEPTS))}",
        lambda: "chat.assignee is none",
        lambda: "chat.assignee is not none",
        lambda: f"chat.assignee != {_q(rng.choice(AGENTS))}",
        lambda: f"customer.email ends with {_q(rng.choice(('.de', '.com', '@corp.example')))}",
        lambda: f"customer.language in [\"de\", \"fr\", \"{rng.choice(('es', 'it', 'nl'))}\"]",
        lambda: f"chat.fields.plan == {_q(rng.choice(('gold', 'silver', 'free')))}",
        lambda: f"customer.fields.tier >= {rng.randint(1, 3)}",
        lambda: f"lower(customer.name) starts with {_q(rng.choice(('a', 'mar', 'jo')))}",
        lambda: f"len(chat.subscribers) < {rng.randint(1, 5)}",
        lambda: f"in_schedule({_q(rng.choice(SCHEDULES))})",
        lambda: f"not in_schedule({_q(rng.choice(SCHEDULES))})",
        lambda: f"hour(now, \"Europe/Berlin\") >= {rng.randint(6, 20)}",
        lambda: "weekday(now, \"Europe/Berlin\") in [\"sat\", \"sun\"]",
        lambda: f"event.actor == {_q(rng.choice(('customer', 'agent', 'rule')))}",
        lambda: f"assignee.status == {_q(rng.choice(('online', 'away', 'offline')))}",
        lambda: "customer.online",
        lambda: f"chat.subscribers contains {_q(rng.choice(AGENTS))}",
    ]
    if has_message:
        choices += [
            lambda: f"message.text contains {_q(rng.choice(WORDS))}",
            lambda: f"message.text matches /(?i)\\b({rng.choice(WORDS)}|{rng.choice(WORDS)})\\b/",
            lambda: f"message.author == {_q(rng.choice(('customer', 'agent', 'bot')))}",
            lambda: "message.kind == \"note\" and len(message.mentions) > 0",
            lambda: "message.via in [\"email\", \"api\"]",
        ]
    return rng.choice(choices)()


def _condition(rng: random.Random, has_message: bool, state_rule: bool) -> str:
    parts = []
    if state_rule:
        parts.append(f"{rng.choice(STATES_FOR)} for {rng.choice(DURATIONS)}")
    for _ in range(rng.randint(1 if state_rule else 1, 4)):
        c = _comparison(rng, has_message)
        if rng.random() < 0.25:
            d = _comparison(rng, has_message)
            c = f"({c} or {d})"
        elif rng.random() < 0.1:
            c = f"not ({c})"
        parts.append(c)
    return " and ".join(parts)


def _action(rng: random.Random, has_message: bool, state_rule: bool) -> str:
    choices = [
        lambda: f"assign agent {_q(rng.choice(AGENTS))}",
        lambda: f"assign department {_q(rng.choice(DEPTS))} by {rng.choice(('round_robin', 'least_busy'))}",
        lambda: f"tag {_q(rng.choice(TAGS))}",
        lambda: f"untag {_q(rng.choice(TAGS))}",
        lambda: f"notify {rng.choice(('subscribers', 'assignee', 'operators'))} template {_q(rng.choice(TEMPLATES))}",
        lambda: f"notify department {_q(rng.choice(DEPTS))} except actor message \"Look at {{{{ chat.id }}}}\"",
        lambda: f"notify agent {_q(rng.choice(AGENTS))} template \"unattended\"",
        lambda: "reply \"Thanks {{ customer.name }}, an agent will be with you shortly.\"",
        lambda: "note \"Checked by a rule; channel {{ chat.channel }}\"",
        lambda: f"set priority {rng.randint(0, 4)}",
        lambda: f"set field plan = {_q(rng.choice(('gold', 'silver')))}",
        lambda: "set field origin = chat.page_url",
        lambda: f"subscribe agent {_q(rng.choice(AGENTS))}",
        lambda: "email customer template \"unread_replies\"",
    ]
    if state_rule:
        choices.append(lambda: "close")
    return rng.choice(choices)()


def generate(n: int = 1000, seed: int = 3) -> str:
    """The text of a rule file with ``n`` rules (and three schedules)."""
    rng = random.Random(seed)
    out = ["# Generated for the rule language benchmark (bench/bench_rules.py).", ""]
    for i in range(n):
        state_rule = rng.random() < 0.25
        event = None
        if not state_rule:
            event = rng.choice(EVENTS_WITH_MESSAGE + OTHER_EVENTS)
        has_message = event in EVENTS_WITH_MESSAGE
        title = f" \"Generated rule {i}: {rng.choice(WORDS)} handling\"" if rng.random() < 0.7 else ""
        lines = [f"rule g{i:04d}{title} {{"]
        if rng.random() < 0.3:
            lines.append(f"  priority {rng.randint(0, 50)}")
        if event:
            lines.append(f"  on {event}")
        if state_rule or rng.random() < 0.9:
            lines.append(f"  when {_condition(rng, has_message, state_rule)}")
        actions = [_action(rng, has_message, state_rule) for _ in range(rng.randint(1, 3))]
        if len(actions) == 1:
            lines.append(f"  then {actions[0]}")
        else:
            lines.append("  then {")
            lines += [f"    {a}" for a in actions]
            lines.append("  }")
        lines.append("}")
        out += lines + [""]
    out += [
        'schedule support_hours "Office hours" {', '  timezone "Europe/Berlin"', "  mon-fri 09:00-18:00", "}", "",
        'schedule weekend {', '  timezone "Europe/Berlin"', "  sat-sun 00:00-24:00", "}", "",
        'schedule night_desk "Night desk" {', '  timezone "America/New_York"', "  mon-sun 22:00-06:00", "}", "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------- measurements

def _pipeline_rules(text: str):
    from dsl.compiler import compile_files
    from dsl.lint import lint
    from dsl.parser import parse

    rf = parse(text, "bench.rules")
    result = compile_files([rf])
    return rf, result, lint(result.ruleset) if result.ruleset else []


def _steps(parse_fn, text, path, rounds):
    """Best time of each step and of the three together."""
    from dsl.compiler import compile_files
    from dsl.lint import lint

    t_parse, _, rf = best_of(lambda: parse_fn(text, path), rounds)
    t_compile, _, result = best_of(lambda: compile_files([rf]), rounds)
    if not result.ok:
        errs = "; ".join(f"{d.span}: {d.code} {d.message}" for d in result.errors[:3])
        raise RuntimeError(f"the generated {path} does not compile: {errs}")
    t_lint, _, findings = best_of(lambda: lint(result.ruleset), rounds)

    def all_three():
        r = compile_files([parse_fn(text, path)])
        return lint(r.ruleset)
    t_total, _, _ = best_of(all_three, rounds)
    return {"parse": t_parse, "compile": t_compile, "lint": t_lint, "total": t_total,
            "findings": len(findings), "warnings": len(result.diagnostics), "rules": len(result.ruleset.rules)}


_GRAMMAR_PROBE = (
    "import sys, time; sys.path.insert(0, {root!r}); import dsl.parser as p; "
    "w = time.perf_counter(); c = time.process_time(); p.grammar(); "
    "print(time.perf_counter() - w, time.process_time() - c)"
)


def grammar_load(repeats: int = 7) -> dict:
    """Cold build and cached load of the grammar, each in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="chatflow-bench-lark-") as tmp:
        env = dict(os.environ, TMPDIR=tmp, TEMP=tmp, TMP=tmp)
        probe = _GRAMMAR_PROBE.format(root=str(ROOT))

        def once() -> float:
            out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                                 check=True, timeout=120)
            wall, cpu = map(float, out.stdout.strip().splitlines()[-1].split())
            return Clock(wall, cpu)
        cold = once()
        cached_files = [f for f in os.listdir(tmp) if f.startswith(".lark_cache")]
        warm = [once() for _ in range(repeats)]
    return {"cold": cold, "cached_best": best(warm),
            "cached_median": Clock(statistics.median(c.wall for c in warm), statistics.median(c.cpu for c in warm)),
            "cache_written": bool(cached_files), "repeats": repeats}


def run(n_rules: int = 1000, rounds: int = 3, log=print) -> dict:
    text = generate(n_rules)
    log(f"[rules] generated {n_rules} rules, {len(text.splitlines()):,} lines, {len(text) / 1024:.0f} KiB")
    from dsl.parser import grammar, parse

    grammar()  # the in-process parser is built once per process; the grammar rows time that apart
    res = {"n_rules": n_rules, "lines": len(text.splitlines()), "kib": len(text) / 1024}
    res["rules"] = _steps(parse, text, "bench.rules", rounds)
    log(f"[rules] .rules: total {fmt_c(res['rules']['total'])}")

    try:
        from dsl.yaml_form import dump_yaml, load_yaml
    except ImportError as e:
        res["yaml"] = None
        res["yaml_missing"] = f"dsl.yaml_form not importable ({e})"
        log(f"[rules] YAML: {res['yaml_missing']}")
    else:
        rf = parse(text, "bench.rules")
        t_dump, _, ytext = best_of(lambda: dump_yaml(rf), rounds)
        res["yaml"] = _steps(load_yaml, ytext, "bench.yaml", rounds)
        res["yaml"]["dump"] = t_dump
        res["yaml"]["kib"] = len(ytext) / 1024
        log(f"[rules] YAML: total {fmt_c(res['yaml']['total'])}")

    from dsl.lint import lint
    from dsl.loader import load_rule_set

    def e2e():
        loaded = load_rule_set([], defaults=True, texts={"bench.rules": text})
        return lint(loaded.ruleset)
    res["e2e"], _, _ = best_of(e2e, rounds)

    res["grammar"] = grammar_load()
    log(f"[rules] grammar: cold {fmt_c(res['grammar']['cold'])}, cached {fmt_c(res['grammar']['cached_best'])}")
    return res


def render(res) -> str:
    rows = []
    for form in ("rules", "yaml"):
        r = res.get(form)
        label = ".rules text" if form == "rules" else "YAML"
        if r is None:
            rows.append([label, "—", "—", "—", "—", res.get("yaml_missing", "")])
            continue
        note = f"{r['rules']} rules compiled; {r['warnings']} compiler warnings; {r['findings']} lint findings"
        if form == "yaml":
            note += f"; dump_yaml {fmt_s(r['dump'].cpu)}, {r['kib']:.0f} KiB"
        rows.append([label, fmt_s(r["parse"].cpu), fmt_s(r["compile"].cpu), fmt_s(r["lint"].cpu), fmt_c(r["total"]),
                     note])
    rows.append(["load_rule_set + lint (with defaults)", "", "", "", fmt_c(res["e2e"]), "end to end, .rules"])
    g = res["grammar"]
    t1 = table(["form", "parse (CPU)", "compile (CPU)", "lint (CPU)", "parse+compile+lint", "notes"], rows,
               f"(A) Rule language: {res['n_rules']:,} rules ({res['lines']:,} lines, {res['kib']:.0f} KiB)")
    t2 = table(["grammar()", "time", "notes"], [
        ["cold (builds LALR tables, writes cache)", fmt_c(g["cold"]), "fresh process, empty TMPDIR"],
        ["cached, best", fmt_c(g["cached_best"]), f"best of {g['repeats']} fresh processes"],
        ["cached, median", fmt_c(g["cached_median"]), "cache file written: " + ("yes" if g["cache_written"] else "NO")],
    ])
    scale = 1000 / res["n_rules"]
    targets = []
    for form in ("rules", "yaml"):
        r = res.get(form)
        name = f"{'.rules' if form == 'rules' else 'YAML'} parse+compile+lint of 1,000 rules < 0.5 s"
        if r is None:
            targets.append([name, "not measured: " + res.get("yaml_missing", ""), "n/a"])
        elif scale == 1:
            targets.append([name, fmt_c(r["total"]), "MET" if r["total"].cpu < 0.5 else "MISSED"])
        else:
            targets.append([name, f"{fmt_c(r['total'])} for {res['n_rules']} rules (quick run)", "n/a"])
    targets.append(["grammar load < 10 ms once cached (median of fresh processes)",
                    fmt_c(g["cached_median"]) + " median; best " + fmt_c(g["cached_best"]),
                    "MET" if g["cached_median"].cpu < 0.010 else "MISSED"])
    return t1 + "\n\n" + t2 + "\n\n" + table(["target", "measured", "verdict"], targets)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rules", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--write", metavar="PATH", help="only write the generated rule file to PATH")
    a = p.parse_args(argv)
    if a.write:
        with open(a.write, "w", encoding="utf-8") as f:
            f.write(generate(a.rules))
        return
    print(render(run(a.rules, a.rounds)))


if __name__ == "__main__":
    main()
