"""Scenario files (SPEC §4): load them with located errors, run each test on a virtual
clock through the same Engine the service runs, and compare what happened with what the
test expects.

Time jumps from input to deadline to expectation; nothing sleeps, so a simulated week
takes milliseconds. Inputs at time t are applied before deadlines due at t.
"""
from __future__ import annotations

import re
import time as _time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import yaml

from dsl.errors import ChatflowError, Diagnostic, SourceError, Span
from dsl.parser import duration_seconds

from .commands import customer_view
from .core import Engine
from .model import CommandRefused, World

DEFAULT_START = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()

STEPS = {
    # step name -> (command, {scenario key: command parameter}) ; "chat" is always chat_id
    "start_chat": ("start_chat", {"customer": "customer", "channel": "channel", "page_url": "page_url",
                                  "text": "text", "fields": "fields", "department": "department"}),
    "customer_message": ("customer_message", {"text": "text"}),
    "email_reply": ("email_reply", {"text": "text", "subject": "subject", "auto_reply": "auto_reply"}),
    "customer_leaves": ("customer_leaves", {}),
    "customer_returns": ("customer_returns", {}),
    "customer_reads": ("customer_reads", {}),
    "join": ("join", {"agent": "agent"}),
    "read": ("read", {"agent": "agent"}),
    "subscribe": ("subscribe", {"agent": "agent"}),
    "unsubscribe": ("unsubscribe", {"agent": "agent"}),
    "lock": ("lock", {"agent": "agent"}),
    "unlock": ("unlock", {"agent": "agent"}),
    "reply": ("reply", {"agent": "agent", "text": "text", "canned": "canned", "article": "article"}),
    "note": ("note", {"agent": "agent", "text": "text"}),
    "assign": ("assign", {"agent": "agent", "department": "department", "by": "by"}),
    "close": ("close", {"agent": "agent"}),
    "reopen": ("reopen", {"agent": "agent"}),
    "edit_message": ("edit_message", {"agent": "agent", "message": "message", "text": "text"}),
    "delete_message": ("delete_message", {"agent": "agent", "message": "message"}),
    "agent_status": ("agent_status", {"agent": "agent", "status": "status"}),
    "snooze": ("snooze", {"agent": "agent", "for": "duration", "until_next": "until_next"}),
    "set_status": ("set_status", {"agent": "agent", "status": "status"}),
    "tag": ("tag", {"agent": "agent", "tag": "tag"}),
    "untag": ("untag", {"agent": "agent", "tag": "tag"}),
    "set_priority": ("set_priority", {"agent": "agent", "priority": "priority"}),
}
NO_CHAT_STEPS = {"agent_status"}
EXPECT_KEYS = {"at", "from", "to", "fired", "not_fired", "notified", "emails", "webhooks", "replies", "chat",
               "pending", "customer_sees"}
WEBHOOK_KEYS = ("name", "event", "chat", "rule")  # what a `webhooks:` entry may pin down
TEST_KEYS = {"name", "steps", "expect"}
TOP_KEYS = {"rules", "defaults", "start", "agents", "tests", "canned", "articles", "name"}
AGENT_KEYS = {"id", "name", "departments", "access_chats", "channels", "status", "max_chats", "capacity",
              "email", "notifications"}


class ScenarioError(SourceError):
    """A scenario file that cannot be run as written."""


# ---------------------------------------------------------------- loading

class _Node(dict):
    """A mapping that remembers where it stood in the YAML file."""

    line = 1
    column = 1


class _List(list):
    line = 1
    column = 1


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node):
    loader.flatten_mapping(node)
    out = _Node()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (list, dict)):  # YAML allows it; no scenario key is one
            raise ScenarioError([Diagnostic(Span.point(loader.name, key_node.start_mark.line + 1,
                                                       key_node.start_mark.column + 1),
                                            "scenario_error", "a key must be a plain value, not a list or a mapping")])
        if key in out:
            raise ScenarioError([Diagnostic(Span.point(loader.name, key_node.start_mark.line + 1,
                                                       key_node.start_mark.column + 1),
                                            "scenario_error", f"duplicate key `{key}`")])
        out[key] = loader.construct_object(value_node, deep=True)
    out.line, out.column = node.start_mark.line + 1, node.start_mark.column + 1
    return out


def _construct_sequence(loader, node):
    out = _List(loader.construct_object(n, deep=True) for n in node.value)
    out.line, out.column = node.start_mark.line + 1, node.start_mark.column + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _where(path, node) -> Span:
    return Span.point(path, getattr(node, "line", 1), getattr(node, "column", 1))


def _fail(path, node, message, hint=None):
    raise ScenarioError([Diagnostic(_where(path, node), "scenario_error", message, "error", hint)])


def parse_time(value, path, node) -> float:
    """Seconds from a scenario time: ``0s``, ``90s``, ``2m``, ``1h30m``, ``1d`` (or a number)."""
    if isinstance(value, bool):
        _fail(path, node, f"bad time `{value}`", "times look like 0s, 90s, 2m, 1h30m, 1d")
    if isinstance(value, (int, float)) and value >= 0:
        return float(value)
    if isinstance(value, str):
        if value.strip() in ("0", "0s", "0m", "0h", "0d"):
            return 0.0
        seconds = duration_seconds(value.strip())
        if seconds is not None:
            return float(seconds)
    _fail(path, node, f"bad time `{value}`", "times look like 0s, 90s, 2m, 1h30m, 1d")


def parse_start(value, path, node) -> float:
    if value is None:
        return DEFAULT_START
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
        except ValueError:
            pass
    _fail(path, node, f"bad start time `{value}`", "e.g. 2026-01-05T09:00:00Z")


@dataclass
class Step:
    at: float
    name: str
    args: dict
    error: str | None
    node: object


@dataclass
class Expect:
    start: float
    end: float
    checks: dict
    node: object
    label: str


@dataclass
class TestCase:
    name: str
    steps: list
    expects: list
    node: object


@dataclass
class Scenario:
    path: str
    rules: list
    defaults: bool
    start: float
    agents: list
    canned: dict
    articles: dict
    tests: list
    loaded: object = None  # dsl.loader.Loaded


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file; raises ScenarioError (located) when it cannot be run."""
    path = Path(path)
    p = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError([Diagnostic(Span.point(p, 1, 1), "file_error", f"cannot read scenario: {e}")]) from None
    loader = None
    try:
        loader = _Loader(text)  # the reader refuses control characters here already
        loader.name = p
        doc = loader.get_single_data()
    except ScenarioError:
        raise
    except yaml.reader.ReaderError as e:  # a character YAML does not allow
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise ScenarioError([Diagnostic(Span.point(p, line, column), "yaml_error",
                                        f"character {e.character!r} is not allowed in YAML")]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        span = Span.point(p, mark.line + 1, mark.column + 1) if mark else Span.point(p, 1, 1)
        raise ScenarioError([Diagnostic(span, "yaml_error", str(getattr(e, "problem", e)))]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(doc, dict):
        _fail(p, doc, "a scenario file is a mapping with `tests:`")
    for key in doc:
        if key not in TOP_KEYS:
            _fail(p, doc, f"unknown key `{key}`", "keys: " + ", ".join(sorted(TOP_KEYS)))
    rules = doc.get("rules") or []
    if isinstance(rules, str):
        rules = [rules]
    if not isinstance(rules, list) or not all(isinstance(r, str) and r for r in rules):
        # a mapping or a number among them crashed the path arithmetic (found by atheris)
        _fail(p, rules if isinstance(rules, (list, dict)) else doc, "`rules` is a rule file's path or a list of them",
              "e.g. `rules: [rules/routing.rules]`")
    rule_paths = [str((path.parent / r).resolve()) if not Path(r).is_absolute() else r for r in rules]
    agents = doc.get("agents") or []
    if not isinstance(agents, list):
        _fail(p, agents, "`agents` is a list")
    for a in agents:
        if not isinstance(a, dict) or "id" not in a:
            _fail(p, a, "an agent needs an `id`")
        for key in a:
            if key not in AGENT_KEYS:
                _fail(p, a, f"unknown agent key `{key}`", "keys: " + ", ".join(sorted(AGENT_KEYS)))
    canned = _named_texts(doc.get("canned"), p, "shortcut")
    articles = _articles(doc.get("articles"), p)
    tests = []
    for t in doc.get("tests") or []:
        tests.append(_test(t, p))
    if not tests:
        _fail(p, doc, "no tests in this scenario file", "add `tests:` with steps and expect")
    return Scenario(p, rule_paths, doc.get("defaults", True) is not False,
                    parse_start(doc.get("start"), p, doc), agents, canned, articles, tests)


def _named_texts(value, path, key) -> dict:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    for item in value:
        if not isinstance(item, dict) or key not in item or "text" not in item:
            _fail(path, item, f"each canned response has `{key}` and `text`")
        out[str(item[key])] = str(item["text"])
    return out


def _articles(value, path) -> dict:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): (v if isinstance(v, dict) else {"title": str(v)}) for k, v in value.items()}
    out = {}
    for item in value:
        if not isinstance(item, dict) or "slug" not in item:
            _fail(path, item, "each article has a `slug` (and `title`, `body`)")
        out[str(item["slug"])] = dict(item)
    return out


def _test(t, path) -> TestCase:
    if not isinstance(t, dict) or "name" not in t:
        _fail(path, t, "a test needs a `name`")
    for key in t:
        if key not in TEST_KEYS:  # `expects:` must not pass as a test that checks nothing
            from dsl.errors import did_you_mean

            _fail(path, t, f"unknown test key `{key}`", did_you_mean(key, TEST_KEYS) or "keys: " + ", ".join(sorted(TEST_KEYS)))
    steps = []
    for s in t.get("steps") or []:
        if not isinstance(s, dict) or "at" not in s:
            _fail(path, s, "a step needs `at` and one command")
        names = [k for k in s if k not in ("at", "error")]
        if len(names) != 1 or names[0] not in STEPS:
            bad = next((k for k in names if k not in STEPS), None)
            from dsl.errors import did_you_mean

            hint = (did_you_mean(bad, STEPS) if bad else None) or "steps: " + ", ".join(STEPS)
            _fail(path, s, f"unknown step `{bad}`" if bad else "a step has exactly one command", hint)
        name = names[0]
        args = s[name] if s[name] is not None else {}
        if not isinstance(args, dict):
            _fail(path, s, f"`{name}` takes a mapping of arguments")
        allowed = set(STEPS[name][1]) | ({"chat"} if name not in NO_CHAT_STEPS else set())
        for k in args:
            if k not in allowed:
                _fail(path, args, f"`{name}` has no argument `{k}`", "arguments: " + ", ".join(sorted(allowed)))
        if name not in NO_CHAT_STEPS and "chat" not in args:
            _fail(path, args, f"`{name}` needs `chat`")
        steps.append(Step(parse_time(s["at"], path, s), name, dict(args), s.get("error"), s))
    expects = []
    for e in t.get("expect") or []:
        if not isinstance(e, dict):
            _fail(path, e, "an expectation is a mapping")
        for k in e:
            if k not in EXPECT_KEYS:
                from dsl.errors import did_you_mean

                _fail(path, e, f"unknown expectation `{k}`",
                      did_you_mean(k, EXPECT_KEYS) or "expectations: " + ", ".join(sorted(EXPECT_KEYS)))
        if "webhooks" in e:
            _check_webhooks_expectation(path, e)
        if "at" in e:
            start = end = parse_time(e["at"], path, e)
            label = f"at {e['at']}"
        elif "from" in e and "to" in e:
            start, end = parse_time(e["from"], path, e), parse_time(e["to"], path, e)
            label = f"from {e['from']} to {e['to']}"
            if end < start:
                _fail(path, e, "`to` is before `from`")
        else:
            _fail(path, e, "an expectation needs `at`, or `from` and `to`")
        expects.append(Expect(start, end, {k: v for k, v in e.items() if k not in ("at", "from", "to")}, e, label))
    return TestCase(str(t["name"]), steps, expects, t)


# ---------------------------------------------------------------- running

@dataclass
class Failure:
    where: str  # "at 2m: notified"
    expected: object
    got: object
    line: int = 0


@dataclass
class TestResult:
    file: str
    name: str
    failures: list = field(default_factory=list)
    seconds: float = 0.0
    engine: object = None
    fired_rules: set = field(default_factory=set)  # every rule that fired, for coverage

    @property
    def passed(self) -> bool:
        return not self.failures


def build_world(scenario: Scenario) -> World:
    world = World()
    for a in scenario.agents:
        args = {k: a[k] for k in a}
        if isinstance(args.get("notifications"), dict):  # YAML 1.1 reads a bare `off` as false
            args["notifications"] = {k: "off" if v is False else v for k, v in args["notifications"].items()}
        try:
            world.add_agent(**args)
        except CommandRefused as e:
            _fail(scenario.path, a, f"agent `{a.get('id')}`: {e.message}")
    return world


def _fmt_time(seconds: float) -> str:
    s = int(seconds)
    if s != seconds:
        return f"{seconds:g}s"
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    out = "".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v)
    return out or "0s"


def run_test(scenario: Scenario, test: TestCase, tracing: bool = False, observer=None) -> TestResult:
    """Run one test from a fresh world; the result lists each expectation that failed."""
    started = _time.perf_counter()
    result = TestResult(scenario.path, test.name)
    world = build_world(scenario)
    engine = Engine(scenario.loaded.ruleset, world, articles=scenario.articles, canned=scenario.canned,
                    tracing=tracing, observer=observer)
    result.engine = engine
    t0 = scenario.start
    steps = sorted(test.steps, key=lambda s: s.at)  # stable: file order within one time
    points = sorted({s.at for s in steps} | {e.end for e in test.expects})
    si = 0
    for point in points:
        # deadlines strictly before this point, then the inputs at it, then its deadlines
        _run_until(engine, t0 + point, inclusive=False)
        while si < len(steps) and steps[si].at == point:
            _apply(engine, scenario, steps[si], t0, result)
            si += 1
        engine.run_due(t0 + point)
        engine.now = t0 + point
        for exp in test.expects:
            if exp.end == point:
                _check(engine, world, exp, t0, result)
        if not tracing:
            _drain(engine, result, t0, [e.start for e in test.expects if e.end > point])
    result.seconds = _time.perf_counter() - started
    return result


def _drain(engine: Engine, result: TestResult, t0: float, starts: list) -> None:
    """Forget what no later expectation can look at, so a long simulation keeps a flat
    memory (the fired rule ids are kept for coverage)."""
    result.fired_rules.update(e.rule for e in engine.trace if e.kind == "fired")
    keep_from = t0 + min(starts) if starts else float("inf")
    if engine.effects and engine.effects[0].at < keep_from:
        engine.effects = [e for e in engine.effects if e.at >= keep_from]
    if engine.trace and engine.trace[0].at < keep_from:
        engine.trace = [e for e in engine.trace if e.at >= keep_from]


def _run_until(engine: Engine, until: float, inclusive: bool) -> None:
    while True:
        due = engine.next_due()
        if due is None or due > until or (due == until and not inclusive):
            return
        engine.run_due(due)


def _apply(engine: Engine, scenario: Scenario, step: Step, t0: float, result: TestResult) -> None:
    command, mapping = STEPS[step.name]
    args = {}
    for key, value in step.args.items():
        args["chat_id" if key == "chat" else mapping[key]] = value
    where = f"at {_fmt_time(step.at)}: {step.name}"
    try:
        engine.execute(command, t0 + step.at, **args)
    except CommandRefused as e:
        if engine.tracing:
            engine._log("refused", t0 + step.at, step.args.get("chat"),
                        detail={"command": step.name, "code": e.code, "message": e.message})
        if step.error != e.code:
            result.failures.append(Failure(f"{where} was refused", step.error or "accepted", e.code,
                                           getattr(step.node, "line", 0)))
        return
    except TypeError as e:  # a step missing an argument its command needs
        result.failures.append(Failure(f"{where}: bad arguments", "valid arguments", str(e),
                                       getattr(step.node, "line", 0)))
        return
    if step.error:
        result.failures.append(Failure(f"{where} should have been refused", step.error, "accepted",
                                       getattr(step.node, "line", 0)))


def _check_webhooks_expectation(path, e) -> None:
    entries = e["webhooks"]
    if entries is None:
        return
    if not isinstance(entries, list):
        _fail(path, e, "`webhooks` is a list of webhook names or of {name, event, chat, rule}")
    for w in entries:
        if isinstance(w, dict):
            unknown = [k for k in w if k not in WEBHOOK_KEYS]
            if unknown or "name" not in w:
                _fail(path, w if getattr(w, "line", None) else e,
                      f"a `webhooks` entry takes {', '.join(WEBHOOK_KEYS)} (name required)"
                      + (f"; not `{unknown[0]}`" if unknown else ""))
        elif not isinstance(w, str):
            _fail(path, e, "a `webhooks` entry is a webhook name or {name, event, chat, rule}")


def _webhook_want(w) -> dict:
    return {k: str(w[k]) for k in WEBHOOK_KEYS if k in w} if isinstance(w, dict) else {"name": str(w)}


def _webhooks_match(want: list, got: list) -> bool:
    """Exactly as many deliveries as entries, each entry matching its own delivery on
    the keys it gives (the most specific entries are placed first)."""
    if len(want) != len(got):
        return False
    free = list(got)
    for w in sorted(want, key=len, reverse=True):
        found = next((g for g in free if all(g.get(k) == v for k, v in w.items())), None)
        if found is None:
            return False
        free.remove(found)
    return True


def _in_window(at, exp, t0) -> bool:
    return t0 + exp.start <= at <= t0 + exp.end


def _check(engine: Engine, world: World, exp: Expect, t0: float, result: TestResult) -> None:
    fired = [e.rule for e in engine.trace if e.kind == "fired" and _in_window(e.at, exp, t0)]
    effects = [e for e in engine.effects if _in_window(e.at, exp, t0)]
    line = getattr(exp.node, "line", 0)

    def fail(what, expected, got):
        result.failures.append(Failure(f"{exp.label}: {what}", expected, got, line))

    c = exp.checks
    if "fired" in c:
        missing = [r for r in c["fired"] if r not in fired]
        if missing:
            fail("fired", list(c["fired"]), sorted(set(fired)))
    if "not_fired" in c:
        wrong = [r for r in c["not_fired"] if r in fired]
        if wrong:
            fail("not_fired", f"none of {list(c['not_fired'])}", sorted(set(wrong)))
    if "notified" in c:
        got: dict = {}
        for e in effects:
            if e.kind == "notify":
                got.setdefault(e.recipient, []).append(e.template)
        want = {str(k): sorted(v if isinstance(v, list) else [v]) for k, v in (c["notified"] or {}).items()}
        got = {k: sorted(v) for k, v in got.items()}
        if want != got:
            fail("notified", want, got)
    if "emails" in c:
        want = sorted((str(e.get("to")), str(e.get("template"))) for e in (c["emails"] or []))
        got = sorted((e.recipient, e.template) for e in effects if e.kind == "email")
        if want != got:
            fail("emails", [{"to": t, "template": m} for t, m in want], [{"to": t, "template": m} for t, m in got])
        for e in c["emails"] or []:
            if isinstance(e, dict) and "texts" in e:  # what the email shows of the chat
                sent = [x for x in effects if x.kind == "email" and (x.recipient, x.template) == (str(e["to"]), str(e["template"]))]
                shown = [_email_texts(x) for x in sent]
                if [str(t) for t in e["texts"] or []] not in shown:
                    fail(f"emails to {e['to']}: texts", list(e["texts"] or []), shown[0] if len(shown) == 1 else shown)
    if "webhooks" in c:
        want = [_webhook_want(w) for w in (c["webhooks"] or [])]
        got = [{"name": e.recipient, "event": (e.data.get("event") or {}).get("type"), "chat": e.chat_id,
                "rule": e.rule} for e in effects if e.kind == "webhook"]
        if not _webhooks_match(want, got):
            fail("webhooks", want, [{k: v for k, v in g.items() if v is not None} for g in got])
    if "replies" in c:
        want = [str(x) for x in (c["replies"] or [])]
        got = [e.text for e in effects if e.kind == "reply"]
        if want != got:
            fail("replies", want, got)
    if "pending" in c:
        want = sorted((str(p["rule"]), str(p["chat"]), parse_time(p["due"], "", p)) for p in (c["pending"] or []))
        got = sorted((r, ch, due - t0) for r, ch, due in engine.pending())
        if want != got:
            fail("pending", [_pending(p) for p in want], [_pending(p) for p in got])
    if "customer_sees" in c:
        for chat_id, texts in (c["customer_sees"] or {}).items():
            chat = world.chats.get(str(chat_id))
            got = [m.text for m in customer_view(chat)] if chat else None
            if got != [str(t) for t in (texts or [])]:
                fail(f"customer_sees {chat_id}", list(texts or []), got)
    if "chat" in c:
        for chat_id, fields in (c["chat"] or {}).items():
            chat = world.chats.get(str(chat_id))
            if chat is None:
                fail(f"chat {chat_id}", "a chat", "no such chat")
                continue
            for key, want in (fields or {}).items():
                if key == "sla":
                    got = _sla_view(engine, world, chat, t0 + exp.end)
                    sub = {k: got.get(k) for k in (want or {})}
                    if sub != dict(want or {}):
                        fail(f"chat {chat_id}.sla", dict(want or {}), got)
                    continue
                got = _chat_value(chat, key)
                if got is _MISSING:
                    fail(f"chat {chat_id}.{key}", "a chat field", "no such field")
                elif key == "snoozed_until":  # a scenario time, like `at`
                    shown = None if got is None else _fmt_time(got - t0)
                    if (None if want is None else parse_time(want, "", fields)) != (None if got is None else got - t0):
                        fail(f"chat {chat_id}.snoozed_until", want, shown)
                elif key in ("subscribers", "tags"):
                    if sorted(map(str, want or [])) != sorted(got):
                        fail(f"chat {chat_id}.{key}", sorted(want or []), sorted(got))
                elif key == "fields":
                    sub = {k: got.get(k, _MISSING) for k in (want or {})}
                    want = {k: _expected_value(v) for k, v in (want or {}).items()}
                    if sub != want:
                        fail(f"chat {chat_id}.fields", dict(want or {}), {k: v for k, v in sub.items() if v is not _MISSING})
                elif want != got:
                    fail(f"chat {chat_id}.{key}", want, got)


def _email_texts(effect) -> list:
    """The message texts an email effect carries: a transcript's or a summary's messages,
    a customer email's unread replies."""
    data = effect.data or {}
    return [m["text"] for m in (data.get("messages") if "messages" in data else data.get("replies")) or []]


def _expected_value(value):
    """A field's expected value; a YAML timestamp (``2026-01-02T09:00:00Z``) stands for the
    time a rule stored (seconds since the epoch, as ``now + 1d`` stores it)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return value


_MISSING = object()
CHAT_FIELDS = ("id", "channel", "page_url", "status", "assignee", "department", "subscribers", "tags",
               "priority", "locked_by", "language", "fields", "message_count", "snoozed_until")


def _sla_view(engine, world, chat, at) -> dict:
    """``{policy, TARGET: achieved|breached|due_soon|running}`` of the chat at ``at``: what a
    scenario's ``chat: {C: {sla: …}}`` compares (the targets asked about; ``none`` when a
    target has no cycle or the policy does not set it)."""
    from . import sla
    from .context import Context

    ctx = Context(world, chat, None, at, engine.ruleset)
    out = {"policy": sla.policy_id(ctx)}
    for target in ("first_response", "next_response", "resolution"):
        c = sla.clock(ctx, target)
        out[target] = "none" if c is None else c.as_dict(at)["state"]
    return out


def _chat_value(chat, key):
    if key not in CHAT_FIELDS:
        return _MISSING
    if key == "message_count":
        return len(chat.messages)
    value = getattr(chat, key)
    return list(value) if isinstance(value, (list, tuple, set)) else value


def _pending(p) -> dict:
    return {"rule": p[0], "chat": p[1], "due": _fmt_time(p[2])}


def prepare(scenario: Scenario):
    """Load and compile the scenario's rule set; raises SourceError with its diagnostics."""
    from dsl.loader import load_rule_set

    loaded = load_rule_set(scenario.rules, defaults=scenario.defaults)
    errors = [d for d in loaded.diagnostics if d.severity == "error"]
    if errors:
        raise SourceError(errors)
    scenario.loaded = loaded
    return scenario


def run_file(path, name_filter: str | None = None, tracing: bool = False, observer=None) -> list[TestResult]:
    """Load, compile and run the tests of one scenario file (``name_filter``: a regex)."""
    scenario = prepare(load_scenario(path))
    pattern = re.compile(name_filter) if name_filter else None
    return [run_test(scenario, t, tracing, observer) for t in scenario.tests if not pattern or pattern.search(t.name)]


__all__ = ["load_scenario", "run_file", "run_test", "prepare", "ScenarioError", "TestResult", "ChatflowError"]
