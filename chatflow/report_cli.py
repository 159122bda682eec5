"""``chatflow report``: the analytics of a period, read straight from the service's
database (``DATABASE_URL``, ``--database-url``, or the SQLite file of ``--data-dir``), as
tables for the terminal, JSON or CSV. The figures are those of ``GET /api/analytics/report``."""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time

FORMATS = ("table", "json", "csv")


def register(sub) -> None:
    p = sub.add_parser("report", help="analytics of a period: chats, response times, agents, SLA, rules",
                       description="Print the analytics of a period, read from the service's database.")
    p.add_argument("--from", dest="start", metavar="DATE", help="start (ISO date or date-time, UTC unless a zone "
                   "is given; default: 7 days before --to)")
    p.add_argument("--to", dest="end", metavar="DATE", help="end, exclusive; a bare date includes that day "
                   "(default: now)")
    p.add_argument("--channel", help="only chats of this channel")
    p.add_argument("--department", help="only chats of this department")
    p.add_argument("--agent", help="only chats whose responsible agent is this one")
    p.add_argument("--wait-minutes", type=str, default=None, metavar="N",
                   help="count chats whose customer waited longer than N minutes (default 10)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--database-url", default=None, help="the database (default: $DATABASE_URL, else the SQLite "
                   "file in --data-dir)")
    p.add_argument("--data-dir", default=None, help="where `chatflow serve` keeps its SQLite file (default: "
                   "$CHATFLOW_DATA_DIR or var/)")
    p.set_defaults(func=cmd_report)


def _database(args) -> str | None:
    """The SQLAlchemy URL to read, or None when the embedded SQLite file does not exist
    (a report must not create an empty database)."""
    from server import store as S

    url = args.database_url or os.environ.get("DATABASE_URL")
    if url:
        return S.database_url(url, "unused")
    data_dir = args.data_dir or os.environ.get("CHATFLOW_DATA_DIR") or "var"
    path = os.path.join(data_dir, "chatflow.db")
    return f"sqlite:///{path}" if os.path.exists(path) else None


def cmd_report(args) -> int:
    from server import store as S
    from server.api_analytics import build_report, query_from
    from server.http import ApiError

    url = _database(args)
    if url is None:
        print("chatflow report: no database: set DATABASE_URL (or --database-url), or --data-dir where "
              "`chatflow serve` keeps chatflow.db", file=sys.stderr)
        return 2
    params = {k: v for k, v in (("from", args.start), ("to", args.end), ("channel", args.channel),
                                ("department", args.department), ("agent", args.agent),
                                ("wait_minutes", args.wait_minutes)) if v is not None}
    db = S.make_db(url)
    try:
        try:
            q = query_from(params, time.time())
        except ApiError as e:
            name = e.details["parameter"]
            message = e.message.removeprefix(f"{name}: ")
            print(f"chatflow report: --{name.replace('_', '-')}: {message}", file=sys.stderr)
            return 2
        runtime = _Runtime(db)
        data = build_report(runtime, q, ("overview", "agents", "rules", "sla"),
                            [r.id for r in runtime.ruleset().rules] if runtime.ruleset() is not None else [])
    finally:
        db.dispose()
    out = {"json": render_json, "csv": render_csv, "table": render_table}[args.format](data)
    sys.stdout.write(out)
    return 0


class _Runtime:
    """What build_report reads of a runtime: its database and the active rule set (its
    rules are listed even when they never ran; its SLA policies give the SLA figures)."""

    def __init__(self, db):
        self.db = db
        self._ruleset = False

    def ruleset(self):
        if self._ruleset is False:
            self._ruleset = _active_ruleset(self.db)
        return self._ruleset


def _active_ruleset(db):
    """The active compiled rule set, or None when none is stored."""
    from sqlalchemy import select

    from dsl.loader import load_rule_set
    from server import store as S

    with db.connect() as conn:
        row = conn.execute(select(S.rulesets).where(S.rulesets.c.active.is_(True))).mappings().first()
    if row is None:
        return None
    return load_rule_set([], defaults=row["defaults"], texts=row["files"]).ruleset


# ------------------------------------------------------------------ output

def duration(seconds) -> str:
    """A time for people: 42s, 4m 05s, 2h 03m, 3d 04h; '-' when there is none."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def _table(headers, rows, right=None) -> list[str]:
    right = set(range(1, len(headers))) if right is None else right
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  " + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                      for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def _filters_text(data) -> str:
    f = data["filters"]
    shown = [f"{k} {v}" for k, v in f.items() if v is not None]
    return ", ".join(shown) if shown else "all chats"


def render_table(data) -> str:
    from server.api_analytics import iso

    ov = data["overview"]
    chats = ov["chats"]
    lines = [f"chatflow report {data['period']['from']} .. {data['period']['to']} ({_filters_text(data)})", ""]
    lines.append("Chats")
    lines += _table(["", "chats"], [
        ["started", f"{chats['started']:,}"],
        ["answered (first response in the period)", f"{chats['answered']:,}"],
        ["closed", f"{chats['closed']:,}"],
        ["escalated: unread messages", f"{chats['escalated_unread']:,}"],
        [f"waited longer than {data['wait_minutes']:g} min", f"{chats['waited_longer']:,}"],
    ])
    lines += ["", "Times"]
    lines += _table(["", "count", "median", "p90"], [
        [name, f"{t['count']:,}", duration(t["median"]), duration(t["p90"])]
        for name, t in (("first response", ov["first_response_time"]), ("response", ov["response_time"]),
                        ("resolution", ov["resolution_time"]))])
    e = ov["email"]
    lines += ["", "Email"]
    lines += _table(["", "count"], [["emails sent to customers", f"{e['emails_sent']:,}"],
                               ["customers emailed", f"{e['customers_emailed']:,}"],
                               ["answers received by email", f"{e['answers_received']:,}"],
                               ["customers who answered", f"{e['customers_answered']:,}"]])
    lines += ["", "Agents"]
    lines += _table(["agent", "chats", "replies", "notes", "response median", "joins", "join median", "join p90"], [
        [a["agent"], f"{a['chats_handled']:,}", f"{a['replies']:,}", f"{a['notes']:,}",
         duration(a["response_time_median"]), f"{a['joins']:,}", duration(a["time_to_join"]["median"]),
         duration(a["time_to_join"]["p90"])] for a in data["agents"]])
    if data.get("sla"):
        lines += ["", "SLA"]
        lines += _table(["policy", "target", "achieved", "breached", "achieved %"], [
            [p["policy"] + (f" (within {p['within']})" if p["within"] else ""), target, f"{t['achieved']:,}",
             f"{t['breached']:,}", "-" if t["achieved_rate"] is None else f"{100 * t['achieved_rate']:.0f}%"]
            for p in data["sla"] for target, t in p["targets"].items()], right={2, 3, 4})
    lines += ["", "Rules"]
    lines += _table(["rule", "evaluated", "fired", "effects", "last fired"], [
        [r["rule"], f"{r['evaluated']:,}", f"{r['fired']:,}", f"{r['effects']:,}",
         iso(round(r["last_fired"])) if r["last_fired"] is not None else "-"] for r in data["rules"]])
    return "\n".join(lines) + "\n"


def render_json(data) -> str:
    return json.dumps(data, indent=2) + "\n"


def csv_rows(data):
    """(section, subject, figure, value) rows: one figure per line, times in seconds."""
    ov = data["overview"]
    for k, v in ov["chats"].items():
        yield "chats", "", k, v
    for name in ("first_response_time", "response_time", "resolution_time"):
        for k, v in ov[name].items():
            yield "times", name, k, v
    for k, v in ov["email"].items():
        yield "email", "", k, v
    for a in data["agents"]:
        for k, v in a.items():
            if k == "time_to_join":
                for kk, vv in v.items():
                    yield "agent", a["agent"], f"time_to_join_{kk}", vv
            elif k != "agent":
                yield "agent", a["agent"], k, v
    for r in data["rules"]:
        for k in ("evaluated", "fired", "effects", "last_fired"):
            yield "rule", r["rule"], k, r[k]
    for p in data.get("sla") or ():
        for target, t in p["targets"].items():
            for k in ("achieved", "breached", "achieved_rate"):
                yield "sla", f"{p['policy']}/{target}", k, t[k]


def render_csv(data) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "subject", "figure", "value"])
    for section, subject, figure, value in csv_rows(data):
        w.writerow([section, subject, figure, "" if value is None else value])
    return buf.getvalue()
