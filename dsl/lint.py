"""Lint findings over a compiled rule set (SPEC §3.5): rules that check but are likely wrong.

Each finding has a stable code, listed in LINT_CODES with a one-line explanation (shown by
``chatflow lint --explain CODE`` and in the README). ``# chatflow: ignore=CODE`` markers are
applied by :func:`apply_ignores` for both check and lint findings.
"""
from __future__ import annotations

from . import ast, vocabulary as V
from .compiler import RuleSet
from .errors import Diagnostic
from .templates import reads_message


LINT_CODES = {
    "always_true": "the condition is true whatever the chat: the `when` can go",
    "always_false": "the condition can never be true: the rule never fires",
    "unreachable_rule": "an earlier rule with `stop` fires on every event this rule could, so this one never runs",
    "conflicting_assign": "two rules can assign different agents on the same event; the later one wins",
    "rule_cycle": "rules cause events that trigger each other in a loop (cut at depth 10 at run time)",
    "empty_target": "a `notify` whose target is always empty: nobody is ever notified",
    "unknown_value": "a comparison with a value the fact never takes",
    "unknown_template": "a template name the product does not ship (define it on the server)",
    "no_change_condition": "a rule `on chat.updated` without a change condition fires at every change of any field",
    "backlog_unbounded": "the backlog is on with no `at most` and no `capacity`: an agent without max_chats takes every waiting chat",
    "sla_unreachable": "an SLA policy never applies: its `when` is never true, or an earlier policy takes every chat",
    "sla_target_unset": "a rule reads an SLA state of a target no policy sets: it is never true",
    "sla_due_soon_unset": "a rule reads `chat.sla_due_soon` but no policy setting that target has `due_soon`",
    "conflicting_status": "one rule sets the chat's status twice (close, reopen, snooze, set status): only the last counts",
    "unobserved_duration": "a `(CONDITION) for D` reads facts no event of the chat changes: its anchor is late, "
                           "or it only counts the chat's age",
    "private_text": "a reply (or a field) reads the message of a rule that can run on a private note; "
                    "on a note the engine skips it",
    "answers_auto_reply": "a reply or customer email in a rule that requires an automatic reply: it never runs",
}


def _conjuncts(expr) -> list:
    while isinstance(expr, ast.Paren):
        expr = expr.expr
    if expr is None:
        return []
    if isinstance(expr, ast.And):
        out = []
        for i in expr.items:
            out.extend(_conjuncts(i))
        return out
    return [expr]


def _equalities(expr) -> dict:
    """fact -> literal for top-level conjuncts ``fact == literal``."""
    out = {}
    for c in _conjuncts(expr):
        if isinstance(c, ast.Compare) and c.op == "==":
            if isinstance(c.left, ast.Ref) and isinstance(c.right, ast.Literal):
                out[c.left.name] = c.right.value
            elif isinstance(c.right, ast.Ref) and isinstance(c.left, ast.Literal):
                out[c.right.name] = c.left.value
    return out


def _exclusive(a, b) -> bool:
    """True when two conditions cannot both hold (by a conflicting ``fact == literal``)."""
    ea, eb = _equalities(a), _equalities(b)
    if any(k in eb and eb[k] != v for k, v in ea.items()):
        return True
    na, nb = _none_tests(a), _none_tests(b)
    return any(k in nb and nb[k] != v for k, v in na.items())


def _none_tests(expr) -> dict:
    """fact -> True (is none) / False (is not none) for top-level conjuncts."""
    out = {}
    for c in _conjuncts(expr):
        if isinstance(c, ast.IsNone) and isinstance(c.operand, ast.Ref):
            out[c.operand.name] = not c.negated
    return out


def lint(ruleset: RuleSet) -> list[Diagnostic]:
    """Warnings for a compiled rule set (the compiler's own warnings are not repeated)."""
    found: list[Diagnostic] = []

    def warn(span, code, message, hint=None):
        found.append(Diagnostic(span, code, message, "warning", hint))

    rules = list(ruleset.rules)
    for r in rules:
        if r.when is not None and r.constant is True:
            warn(r.when.span, "always_true", f"the condition of `{r.id}` is always true",
                 "drop the `when`, or fix the comparison")
        elif r.when is not None and r.constant is False:
            warn(r.when.span, "always_false", f"the condition of `{r.id}` is never true; the rule never fires")
        if r.on == V.UPDATE_EVENT and not _has_change_condition(r.when):
            _check_unguarded_update(r, warn)
        _check_durations(r, warn)
        _check_statuses(r, warn)
        _check_private_text(r, warn)
        for a in r.actions:
            if a.kind == "notify":
                _check_target(r, a, warn)
            if a.kind in ("notify", "email") and a.template and a.template not in V.KNOWN_TEMPLATES:
                warn(a.span, "unknown_template", f"template `{a.template}` is not shipped",
                     "shipped: " + ", ".join(V.KNOWN_TEMPLATES))

    # unreachable: an earlier rule on the same event that always stops when this could fire
    stoppers: dict[str, list] = {}  # event -> earlier rules with `stop`: (rule, conjuncts)
    for later in rules:
        if later.on is not None:
            later_keys = None
            for earlier, keys in stoppers.get(later.on, ()):
                if keys is not None:
                    if later_keys is None:
                        later_keys = set(_conjuncts(later.when))
                    if not keys <= later_keys:
                        continue
                warn(later.id_span, "unreachable_rule",
                     f"`{later.id}` never runs: `{earlier.id}` (at {earlier.span}) stops every `{later.on}` it could fire on")
                break
            if any(a.kind == "stop" for a in later.actions):
                always = later.when is None or later.constant is True
                stoppers.setdefault(later.on, []).append((later, None if always else set(_conjuncts(later.when))))

    # conflicting assigns on the same event
    assigners: dict[str, list] = {}  # event -> [(rule, targets)] in order
    for r in rules:
        targets = _assign_targets(r)
        if targets and r.on is not None:
            assigners.setdefault(r.on, []).append((r, targets))
    for group in assigners.values():
        for i, (a, agents_a) in enumerate(group):
            for b, agents_b in group[i + 1:]:
                if agents_a == agents_b or _exclusive(a.when, b.when):
                    continue
                warn(b.id_span, "conflicting_assign",
                     f"`{a.id}` and `{b.id}` can both assign on `{a.on}` ({_show(agents_a)} vs {_show(agents_b)}); the later one wins",
                     "make the conditions exclusive, or add `stop` to the first")

    routing = ruleset.routing
    if routing.backlog and not routing.bounded and routing.span is not None:
        warn(routing.span, "backlog_unbounded",
             "the backlog has no bound: an agent without `max_chats` who comes online takes every waiting chat",
             "add `at most N per D` or `capacity CHANNEL N` to the routing block")

    found.extend(_cycles(rules))
    found.extend(_sla_findings(ruleset))
    return found


def _sla_findings(ruleset: RuleSet) -> list[Diagnostic]:
    """Policies that never apply; SLA states no policy can make true."""
    found = []
    catch_all = None  # the first policy that takes every chat
    for p in ruleset.slas:
        if catch_all is not None:
            found.append(Diagnostic(p.id_span, "sla_unreachable",
                                    f"policy `{p.id}` never applies: `{catch_all.id}` (at {catch_all.span}) before it "
                                    "takes every chat", "warning", "policies are tried in order: put the general one last"))
        elif p.when is not None and p.constant is False:
            found.append(Diagnostic(p.when.span, "sla_unreachable",
                                    f"policy `{p.id}` never applies: its `when` is never true", "warning"))
        if p.when is not None and p.constant is True:
            found.append(Diagnostic(p.when.span, "always_true", f"the condition of policy `{p.id}` is always true",
                                    "warning", "drop the `when`, or fix the comparison"))
        if catch_all is None and (p.when is None or p.constant is True):
            catch_all = p
    set_targets = {t for p in ruleset.slas for t in p.targets}
    warned = {t for p in ruleset.slas for t in p.targets if p.due_soon is not None}
    for r in ruleset.rules:
        for node in _sla_calls(r.when):
            target = node.args[0].value
            if target not in set_targets:
                hint = ("no `sla` policy is declared: add one such as `sla standard { first_response 1h }`"
                        if not ruleset.slas else f"add `{target} DURATION` to a policy")
                found.append(Diagnostic(node.span, "sla_target_unset",
                                        f"no SLA policy sets `{target}`: `{node.name}(\"{target}\")` is never true",
                                        "warning", hint))
            elif node.name == "chat.sla_due_soon" and target not in warned:
                found.append(Diagnostic(node.span, "sla_due_soon_unset",
                                        f"no policy that sets `{target}` has `due_soon`: this is never true", "warning",
                                        "add `due_soon DURATION` to the policy: how long before the due time to warn"))
    return found


def _sla_calls(expr) -> list:
    out, stack = [], [expr] if expr is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Call) and node.name in V.SLA_STATES and node.args \
                and isinstance(node.args[0], ast.Literal) and node.args[0].value in V.SLA_TARGETS:
            out.append(node)
        for attr in ("items", "args"):
            stack.extend(getattr(node, attr, ()) or ())
        for attr in ("operand", "left", "right", "expr"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, (str, int, bool)):
                stack.append(child)
    return sorted(out, key=lambda n: (n.span.line, n.span.column))


def _check_durations(rule, warn) -> None:
    """A duration's anchor moves at the chat's events and deadlines: a fact that changes
    without one (``assignee.open_chats``, ``now``) is noticed late, and a condition of facts
    no event changes holds from the chat's start (the duration is the chat's age)."""
    for node in _for_nodes(rule.when):
        inner = node.operand
        while isinstance(inner, ast.Paren):
            inner = inner.expr
        if isinstance(inner, ast.Ref) and inner.name in V.STATES:
            continue
        facts, timed = _facts_read(inner)
        late = sorted(f for f in facts if f in V.UNOBSERVED_FACTS)
        if late:
            warn(inner.span, "unobserved_duration",
                 f"`{late[0]}` changes with no event of the chat: the duration starts only at the chat's next "
                 "event or deadline after it does",
                 "hold a condition on the chat's own facts and states")
        elif not timed and facts and all(f in V.STATIC_FACTS or f.startswith(V.STATIC_FIELD_PREFIX) for f in facts):
            from .formatter import format_expr

            warn(inner.span, "unobserved_duration",
                 f"no event changes `{format_expr(inner)}`: it holds from the chat's start, so the duration is the chat's age",
                 f"to count from the chat's start write `chat.open for {node.duration.text}` beside the condition")


_STATUS_ACTIONS = {"close": "closed", "reopen": "open", "snooze": "snoozed", "set_status": "pending"}


def _check_statuses(rule, warn) -> None:
    """``then { snooze for 2h  close }``: the chat ends closed, the snooze's events were
    for nothing (and its reopening never comes)."""
    first = None
    for a in rule.actions:
        if a.kind not in _STATUS_ACTIONS:
            continue
        if first is not None and _STATUS_ACTIONS[a.kind] != _STATUS_ACTIONS[first.kind]:
            from .formatter import format_action

            warn(a.span, "conflicting_status",
                 f"`{rule.id}` sets the status twice: `{format_action(first)}`, then `{format_action(a)}`",
                 "keep one; the chat ends with the last")
            return
        first = first or a


def _for_nodes(expr) -> list:
    out, stack = [], [expr] if expr is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, ast.For):
            out.append(node)
        stack.extend(_sub_nodes(node))
    return sorted(out, key=lambda n: (n.span.line, n.span.column))


def _sub_nodes(node) -> list:
    out = list(getattr(node, "items", ()) or ()) + list(getattr(node, "args", ()) or ())
    for attr in ("operand", "left", "right", "expr", "fact", "old", "new"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, bool)):
            out.append(child)
    return out


def _facts_read(expr) -> tuple:
    """(names of the facts a condition reads, whether it reads a state or the time of day
    through a function the engine wakes for)."""
    facts, timed, stack = set(), False, [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Ref):
            if node.name in V.STATES:
                timed = True
            else:
                facts.add(node.name)
        elif isinstance(node, ast.Call) and node.name in ("in_schedule", "hour", "weekday"):
            timed = True
            continue  # the engine wakes at each change of these: their `now` is observed
        elif isinstance(node, ast.For):
            timed = True
        stack.extend(_sub_nodes(node))
    return facts, timed
# What a rule on a message event must require before a customer-facing action may read
# the message: it is then a customer's message or a public reply, never a note.
_PUBLIC_MESSAGE = {("message.kind", "reply"), ("message.author", "customer")}
# Actions whose text, or whatever they store, can reach the customer.
_CUSTOMER_FACING = ("reply", "set_field")


def _reads_message(action) -> bool:
    if action.kind == "reply":
        return reads_message(action.text or "")
    if action.kind == "set_field":
        stack = [action.value]
        while stack:
            n = stack.pop()
            if isinstance(n, ast.Ref) and n.name in ("message.text", "message.subject", "message.mentions"):
                return True
            stack.extend(c for c in (getattr(n, "base", None), getattr(n, "expr", None)) if c is not None)
            stack.extend(getattr(n, "items", ()) or ())
    return False


def _check_private_text(rule, warn):
    """A reply (or a field, which a reply can show) that reads the message of a rule on
    message.created/edited/deleted, with no condition that the message is public: on a
    note the engine skips the action, so the author likely meant to test it."""
    if rule.on not in ("message.created", "message.edited", "message.deleted"):
        return
    required = {(f, str(v)) for f, v in _equalities(rule.when).items()} if rule.when is not None else set()
    guarded = rule.on != "message.deleted" and bool(required & _PUBLIC_MESSAGE)
    if not guarded:
        for a in rule.actions:
            if a.kind in _CUSTOMER_FACING and _reads_message(a):
                why = ("a deleted message's text never reaches the customer" if rule.on == "message.deleted"
                       else "on a private note it is skipped: a note's text never reaches the customer")
                warn(a.span, "private_text", f"`{a.kind.replace('_', ' ')}` reads the message of `{rule.on}`; {why}",
                     None if rule.on == "message.deleted" else 'add `when message.kind == "reply"`')
    if rule.when is not None and (any(c == ast.Ref("message.is_auto_reply") for c in _conjuncts(rule.when))
                                  or _equalities(rule.when).get("message.is_auto_reply") is True):
        for a in rule.actions:
            if a.kind in ("reply", "reply_article") or (a.kind == "email" and a.target is not None
                                                        and a.target.kind == "customer") \
                    or (a.kind == "email_transcript" and any(t.kind == "customer" for t in a.targets)):
                warn(a.span, "answers_auto_reply",
                     f"`{a.kind.replace('_', ' ')}` never runs here: no rule answers an automatic reply or bounce",
                     "notify agents instead, or tag the chat")


def _show(targets) -> str:
    return ", ".join(sorted(targets))


def _assign_targets(rule) -> frozenset:
    out = set()
    for a in rule.actions:
        if a.kind == "assign_agent":
            out.add(f'agent "{a.agent}"')
        elif a.kind == "assign_department":
            out.add(f'department "{a.department}"')
    return frozenset(out)


def _key(expr):
    # AST equality ignores spans, so the node itself is a structural key
    return expr


def _check_target(rule, action, warn):
    t = action.target
    if t.kind == "mentioned" and rule.on not in ("message.created", "message.edited", "chat.created"):
        warn(action.span, "empty_target", f"`notify mentioned` in `{rule.id}` has no message to take mentions from",
             "use it in a rule `on message.created`")
        return
    if t.kind == "assignee":
        tests = _none_tests(rule.when)
        states = {c.name for c in _conjuncts(rule.when) if isinstance(c, ast.Ref)}
        if tests.get("chat.assignee") is True or "chat.unassigned" in states:
            warn(action.span, "empty_target", f"`notify assignee` in `{rule.id}` runs only when the chat has no assignee")
            return
    if action.except_ == "assignee" and t.kind == "assignee":
        warn(action.span, "empty_target", "`notify assignee except assignee` never notifies anyone")


def _cycles(rules) -> list[Diagnostic]:
    """One finding per loop of event rules whose actions cause events that trigger each
    other (a strongly connected component of the rule graph), with one cycle's path."""
    by_event: dict[str, list] = {}
    for r in rules:
        if r.on and r.constant is not False:
            by_event.setdefault(r.on, []).append(r)
    nodes = [r for r in rules if r.on and r.constant is not False]
    edges: dict[str, list] = {}  # rule id -> [(event, next rule)]
    needs = {r.id: _required_changes(r.when) for r in by_event.get(V.UPDATE_EVENT, ())}
    for r in nodes:
        out, seen_events, seen_updated = [], set(), set()
        for a in r.actions:
            for ev in V.ACTION_EVENTS.get(a.kind, ()):
                if ev == V.UPDATE_EVENT:
                    # one chat.updated per action, with only what it changed: a rule that
                    # needs another field's change is not triggered by it
                    changed = _action_changes(a)
                    for nxt in by_event.get(ev, ()):
                        if nxt.id not in seen_updated and needs[nxt.id] <= changed:
                            seen_updated.add(nxt.id)
                            out.append((ev, nxt))
                elif ev not in seen_events:
                    seen_events.add(ev)
                    out.extend((ev, nxt) for nxt in by_event.get(ev, ()))
        edges[r.id] = out
    found = []
    for component in _components(nodes, edges):
        start = component[0]
        members = {r.id for r in component}
        path = _shortest_cycle(start, edges, members)
        if path is None:
            continue  # a single rule without a self-loop
        found.append(Diagnostic(
            start.id_span, "rule_cycle", "rules trigger each other in a loop: " + " → ".join(path), "warning",
            "guard a rule's condition (e.g. `event.actor != \"rule\"`) to break it"))
    return found


def _has_change_condition(expr) -> bool:
    stack = [expr] if expr is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Changed):
            return True
        if isinstance(node, (ast.And, ast.Or)):
            stack.extend(node.items)
        elif isinstance(node, (ast.Not, ast.For, ast.IsNone)):
            stack.append(node.operand)
        elif isinstance(node, ast.Paren):
            stack.append(node.expr)
        elif isinstance(node, ast.Compare):
            stack.extend((node.left, node.right))
    return False


def _check_unguarded_update(rule, warn):
    """``on chat.updated when chat.priority == 4`` fires again at every later change (a tag,
    an assignment …) while the priority stays 4: most likely ``changed to`` was meant."""
    hint = "test what changed: `changed(chat.status)`, `chat.priority changed to 4`"
    for fact, value in _equalities(rule.when).items():
        if V.change_key(fact) is not None:
            from .formatter import format_expr

            hint = f"did you mean `{fact} changed to {format_expr(ast.Literal(value, _kind(value)))}`?"
            break
    span = rule.when.span if rule.when is not None else rule.id_span
    warn(span, "no_change_condition",
         f"`{rule.id}` runs `on {V.UPDATE_EVENT}` without a change condition: it fires at every change of any field",
         hint)


def _kind(value) -> str:
    if value is None:
        return "none"
    return "bool" if isinstance(value, bool) else "int" if isinstance(value, int) else "str"


def _required_changes(expr) -> frozenset:
    """The change keys a condition needs in a chat.updated: those of its top-level
    ``changed(F)`` / ``F changed …`` conjuncts."""
    keys = set()
    for c in _conjuncts(expr):
        if isinstance(c, ast.Changed):
            fact = c.fact
            while isinstance(fact, ast.Paren):
                fact = fact.expr
            key = V.change_key(fact.name) if isinstance(fact, ast.Ref) else None
            if key is not None:
                keys.add(key)
    return frozenset(keys)


def _action_changes(action) -> frozenset:
    keys = V.ACTION_CHANGES.get(action.kind, ())
    if action.kind == "set_field":
        keys = (f"fields.{action.field_name}",)
    return frozenset(keys)


def _components(nodes, edges) -> list:
    """Strongly connected components (Tarjan, iterative), each in rule order."""
    order = {r.id: i for i, r in enumerate(nodes)}
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = 0
    for root in nodes:
        if root.id in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node.id] = low[node.id] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node.id)
            succ = edges[node.id]
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i][1]
                if nxt.id not in index:
                    work.append((nxt, 0))
                elif nxt.id in on_stack:
                    low[node.id] = min(low[node.id], index[nxt.id])
                continue
            if low[node.id] == index[node.id]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w.id)
                    comp.append(w)
                    if w.id == node.id:
                        break
                result.append(sorted(comp, key=lambda r: order[r.id]))
            if work:
                parent = work[-1][0]
                low[parent.id] = min(low[parent.id], low[node.id])
    return sorted(result, key=lambda comp: order[comp[0].id])


def _shortest_cycle(start, edges, members) -> list | None:
    """rule → event → rule … back to ``start``, shortest first (breadth first)."""
    from collections import deque

    queue = deque([(start, [start.id])])
    seen = set()
    while queue:
        rule, path = queue.popleft()
        for ev, nxt in edges[rule.id]:
            if nxt.id == start.id:
                return path + [ev, start.id]
            if nxt.id in members and nxt.id not in seen:
                seen.add(nxt.id)
                queue.append((nxt, path + [ev, nxt.id]))
    return None


def apply_ignores(diagnostics, files) -> list[Diagnostic]:
    """Drop warnings silenced by a ``# chatflow: ignore=CODE`` marker on their line.
    Errors are never silenced: a set that `check` passes must load."""
    markers: dict[tuple, set] = {}
    for rf in files:
        for line, codes in rf.ignores:
            markers.setdefault((rf.path, line), set()).update(codes)
    out = []
    for d in diagnostics:
        codes = markers.get((d.span.path, d.span.line), ())
        if d.severity == "warning" and (d.code in codes or "all" in codes):
            continue
        out.append(d)
    return out
