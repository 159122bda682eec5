"""``chatflow test`` (scenario files on a virtual clock, like ``promtool test rules``) and
``chatflow dry-run`` (the timeline of one scenario: why each rule fired or did not)."""
from __future__ import annotations

import json
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from dsl.errors import SourceError


def register(sub) -> None:
    p = sub.add_parser("test", help="run scenario files on a virtual clock")
    p.add_argument("paths", nargs="+", metavar="PATH", help="scenario files (.yaml) or folders of them")
    p.add_argument("--run", metavar="REGEX", help="only tests whose name matches")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--coverage", action="store_true", help="report rules and condition branches never exercised")
    p.add_argument("--threshold", type=float, default=None, metavar="N",
                   help="with --coverage: fail when coverage is below N percent")
    p.add_argument("-v", "--verbose", action="store_true", help="a line per test")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("dry-run", help="print the timeline of a scenario; sends nothing")
    p.add_argument("scenario", metavar="SCENARIO")
    p.add_argument("--test", metavar="NAME", help="the test to run (default: the first)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_dry_run)


def _scenario_files(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file()))
        else:
            out.append(p)
    return out


def _show(value) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def cmd_test(args) -> int:
    from engine.coverage import Coverage
    from engine.scenario import load_scenario, prepare, run_test

    started = time.perf_counter()
    coverage = Coverage() if args.coverage else None
    passed = failed = errors = 0
    suites = []
    import re

    pattern = re.compile(args.run) if args.run else None
    for path in _scenario_files(args.paths):
        try:
            scenario = prepare(load_scenario(path))
        except SourceError as e:
            errors += 1
            for d in e.diagnostics:
                print(f"ERROR {d.render(_read(d.span.path))}")
            suites.append((str(path), [], [d.render() for d in e.diagnostics]))
            continue
        if coverage is not None:
            coverage.add_ruleset(scenario.loaded.ruleset)
        results = []
        for test in scenario.tests:
            if pattern and not pattern.search(test.name):
                continue
            result = run_test(scenario, test, observer=coverage.observe if coverage else None)
            if coverage is not None:
                result.fired_rules.update(e.rule for e in result.engine.trace if e.kind == "fired")
                coverage.note_fired(result.fired_rules)
            result.engine = None  # free the world as we go
            results.append(result)
            if result.passed:
                passed += 1
                if args.verbose:
                    print(f"{path}::{test.name} PASSED")
            else:
                failed += 1
                print(f"FAILED {path}::{test.name}")
                for f in result.failures:
                    print(f"  {path}:{f.line}: {f.where}")
                    print(f"    expected: {_show(f.expected)}")
                    print(f"    got:      {_show(f.got)}")
        suites.append((str(path), results, []))
    status = 1 if failed or errors else 0
    if coverage is not None:
        percent, lines = coverage.report()
        print()
        for line in lines:
            print(line)
        print(f"coverage: {percent:.1f}% of rules and condition branches exercised")
        if args.threshold is not None and percent < args.threshold:
            print(f"coverage {percent:.1f}% is below the threshold {args.threshold:g}%")
            status = 1
    if args.junit:
        _write_junit(args.junit, suites)
    elapsed = time.perf_counter() - started
    if not passed and not failed and not errors:
        print("no tests ran")
        return 1 if status == 0 and not args.run else status
    print(f"\n{passed} passed, {failed + errors} failed")
    print(f"in {elapsed:.2f}s")
    return status


def _read(path):
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _write_junit(target, suites) -> None:
    root = ET.Element("testsuites", name="chatflow")
    for path, results, load_errors in suites:
        suite = ET.SubElement(root, "testsuite", name=path, tests=str(len(results) + len(load_errors)),
                              failures=str(sum(not r.passed for r in results)), errors=str(len(load_errors)))
        for r in results:
            case = ET.SubElement(suite, "testcase", classname=path, name=r.name, time=f"{r.seconds:.4f}")
            if not r.passed:
                text = "\n".join(f"line {f.line}: {f.where}: expected {_show(f.expected)}, got {_show(f.got)}"
                                 for f in r.failures)
                ET.SubElement(case, "failure", message=r.failures[0].where).text = text
        for err in load_errors:
            case = ET.SubElement(suite, "testcase", classname=path, name="(load)")
            ET.SubElement(case, "error", message=err.splitlines()[0]).text = err
    ET.ElementTree(root).write(target, encoding="utf-8", xml_declaration=True)


# ---------------------------------------------------------------- dry-run

def cmd_dry_run(args) -> int:
    from engine.scenario import load_scenario, prepare, run_test

    try:
        scenario = prepare(load_scenario(args.scenario))
    except SourceError as e:
        for d in e.diagnostics:
            print(d.render(_read(d.span.path)), file=sys.stderr)
        return 1
    tests = scenario.tests
    if args.test:
        tests = [t for t in tests if t.name == args.test]
        if not tests:
            names = ", ".join(repr(t.name) for t in scenario.tests)
            print(f"chatflow dry-run: no test named {args.test!r} (tests: {names})", file=sys.stderr)
            return 2
    test = tests[0]
    result = run_test(scenario, test, tracing=True)
    t0 = scenario.start
    if args.format == "json":
        print(json.dumps({
            "scenario": scenario.path, "test": test.name,
            "start": datetime.fromtimestamp(t0, timezone.utc).isoformat().replace("+00:00", "Z"),
            "timeline": [_entry_json(e, t0) for e in result.engine.trace],
            "failures": [{"where": f.where, "expected": f.expected, "got": f.got, "line": f.line}
                         for f in result.failures],
        }, default=str, indent=2, ensure_ascii=False))
    else:
        print(render_timeline(scenario, test, result, _color(sys.stdout)))
    return 0 if result.passed else 1


def _color(stream) -> bool:
    import os

    return stream.isatty() and not os.environ.get("NO_COLOR")


def _entry_json(e, t0) -> dict:
    d = {"t": round(e.at - t0, 3), "kind": e.kind}
    for k in ("chat_id", "rule", "event", "event_id", "fired"):
        v = getattr(e, k)
        if v is not None:
            d[k] = v
    detail = dict(e.detail)
    if "why" in detail:
        detail["why"] = [{"depth": dd, "condition": text, "value": v} for dd, text, v in detail["why"]]
    if "due" in detail:
        detail["due"] = round(detail["due"] - t0, 3)
    if detail:
        d["detail"] = detail
    return d


def render_timeline(scenario, test, result, color=False) -> str:
    from engine.scenario import _fmt_time

    def c(code, text):
        return f"\033[{code}m{text}\033[0m" if color else text

    t0 = scenario.start
    start = datetime.fromtimestamp(t0, timezone.utc).isoformat().replace("+00:00", "Z")
    lines = [f"dry-run {scenario.path} :: {test.name}", f"start {start}; nothing is sent", ""]
    for e in result.engine.trace:
        t = f"+{_fmt_time(e.at - t0):<7}"
        d = e.detail
        if e.kind == "input":
            args = " ".join(f"{'chat' if k == 'chat_id' else k}={_short(v)}" for k, v in d.get("args", {}).items())
            lines.append(f"{t} {c('1', 'input')}   {d.get('command')} {args}")
        elif e.kind == "refused":
            lines.append(f"{t} {c('31', 'refused')} {d.get('command')}: {d.get('code')} {d.get('message', '')}")
        elif e.kind == "event":
            by = f" by {d['agent']}" if d.get("agent") else ""
            rule = f" (rule {d['rule']})" if d.get("rule") else ""
            changes = f" changes: {_changes_text(d['changes'])}" if d.get("changes") else ""
            lines.append(f"{t} {c('36', 'event')}   {e.event} {e.chat_id} actor={d.get('actor')}{by}{rule}{changes}")
        elif e.kind == "rule":
            mark = c("32", "✓ fired    ") if e.fired else c("2", "· not fired")
            kind = "state" if d.get("state_rule") else "event"
            extra = ""
            if d.get("state_rule") and not e.fired and d.get("was_true") and d.get("why") and d["why"][0][2]:
                extra = " (already true before: fires once per episode)"
            lines.append(f"          {mark} {e.rule} [{kind} rule]{extra}")
            for depth, text, value in d.get("why", []):
                shown = _changes_text(value) if text == "changes" else \
                    _sla_text(value, t0) if text == "sla" else _short(value)
                lines.append(f"                {'  ' * depth}{text} = {shown}")
        elif e.kind == "fired":
            continue
        elif e.kind == "timer_armed":
            lines.append(f"{t} {c('35', 'timer')}   armed {e.rule} for {e.chat_id}, due +{_fmt_time(d['due'] - t0)}")
        elif e.kind == "timer_cancelled":
            lines.append(f"{t} {c('35', 'timer')}   cancelled {e.rule} for {e.chat_id} (was due +{_fmt_time(d['due'] - t0)})")
        elif e.kind == "timer_fired" and e.rule == "@snooze":
            lines.append(f"{t} {c('35', 'timer')}   due: the snooze of {e.chat_id} ends")
        elif e.kind == "timer_fired":
            lines.append(f"{t} {c('35', 'timer')}   due: {e.rule} for {e.chat_id}; the chat's state rules are evaluated")
        elif e.kind == "anchor":
            state = (f"became true, held from +{_fmt_time(d['since'] - t0)}" if d.get("since") is not None
                     else "is false again")
            lines.append(f"{t} {c('35', 'anchor')}  ({d.get('condition')}) {state} for {e.chat_id}")
        elif e.kind == "effect":
            what = f"{d['kind']} {d.get('to') or ''}".rstrip()
            tpl = f" [{d['template']}]" if d.get("template") else ""
            txt = f" {_short(d['text'])}" if d.get("text") else ""
            lines.append(f"{t} {c('33', 'effect')}  {what}{tpl}{txt}  ← {e.rule}")
        elif e.kind == "skipped":
            lines.append(f"{t} {c('33', 'skipped')} {d.get('action')} of {e.rule}: {d.get('reason')}")
        elif e.kind == "stop":
            lines.append(f"          stop: {e.rule} ends the evaluation of {e.event}")
        elif e.kind == "backlog":
            taken = ", ".join(d.get("chats") or []) or "no waiting chat it may take"
            lines.append(f"{t} {c('34', 'backlog')} {d.get('agent')} may take waiting chats after {e.event}: {taken}")
        elif e.kind == "cascade_limit":
            lines.append(f"{t} {c('31', 'cascade_limit')} {e.event} not evaluated: chain deeper than 10 events")
    lines.append("")
    if result.passed:
        lines.append(c("32", f"expectations: all {sum(1 for _ in test.expects)} met"))
    else:
        for f in result.failures:
            lines.append(c("31", f"FAILED line {f.line}: {f.where}: expected {_show(f.expected)}, got {_show(f.got)}"))
    return "\n".join(lines)


def _short(v) -> str:
    if isinstance(v, str):
        s = json.dumps(v, ensure_ascii=False)
        return s if len(s) <= 60 else s[:57] + '…"'
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _sla_text(clock, t0) -> str:
    """An SLA state's clock as ``policy standard: first_response running since +0s, due
    +15m (due soon from +10m)``."""
    if not isinstance(clock, dict):
        return _short(clock)
    policy = clock.get("policy")
    if policy is None:
        return "no policy applies"
    head = f"policy {policy}: {clock.get('target')} {clock.get('state')}"
    if clock.get("state") == "none":
        return head + " (no cycle, or the policy sets no such target)"
    from engine.scenario import _fmt_time

    rel = lambda t: "never" if t is None else f"+{_fmt_time(t - t0)}"  # noqa: E731
    text = f"{head} since {rel(clock['start'])}, due {rel(clock['due'])}"
    if clock.get("end") is not None:
        text += f", met {rel(clock['end'])}"
    if clock.get("due_soon_at") is not None:
        text += f" (due soon from {rel(clock['due_soon_at'])})"
    return text


def _changes_text(changes) -> str:
    """A chat.updated's ``{field: [old, new]}`` as ``priority 0 → 4, tags [] → ['vip']``."""
    if not isinstance(changes, dict):
        return _short(changes)
    return ", ".join(f"{k} {_short(old)} → {_short(new)}" for k, (old, new) in changes.items())
