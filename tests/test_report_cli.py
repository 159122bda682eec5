"""``chatflow report``: a small history played through the real Runtime into a SQLite
file, then the command's three formats, its errors and exit codes."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import pytest

from chatflow.cli import main
from chatflow.report_cli import duration
from server import store as S
from server.runtime import Runtime

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc).timestamp()
MIN = 60.0


@pytest.fixture
def data_dir(tmp_path):
    """var/chatflow.db with one answered and closed chat and one nobody answered."""
    db = S.make_db(f"sqlite:///{tmp_path / 'chatflow.db'}")
    with db.begin() as conn:
        for agent in ("alice", "bob"):
            conn.execute(S.agents.insert().values(id=agent, departments=[], access_chats=True, status="online",
                                                  is_admin=False, reply_shortcut="enter"))
    now = [T0]
    rt = Runtime(db, clock=lambda: now[0])

    def at(minutes):
        now[0] = T0 + minutes * MIN
        rt.run_due(now[0])

    rt.start_chat("c1", None, customer={"id": "u1"}, text="Hi", department="sales")
    at(1)
    rt.command("join", "c1", agent="alice")
    at(4)
    rt.command("reply", "c1", agent="alice", text="Hello")
    at(5)
    rt.command("note", "c1", agent="bob", text="known customer")
    at(30)
    rt.command("close", "c1", agent="alice")
    rt.start_chat("c2", None, customer={"id": "u2"}, text="Anyone?", channel="telegram")
    at(90)
    db.dispose()
    return tmp_path


def run(capsys, *args):
    code = main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_table_is_readable_in_a_terminal(capsys, data_dir):
    code, out, err = run(capsys, "--data-dir", str(data_dir), "--from", "2026-03-02", "--to", "2026-03-02")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "chatflow report 2026-03-02T00:00:00Z .. 2026-03-03T00:00:00Z (all chats)"
    assert "  started                                      2" in lines
    assert "  waited longer than 10 min                    1" in lines
    assert lines[lines.index("Times"):lines.index("Times") + 6] == [
        "Times",
        "                  count   median      p90",
        "  --------------  -----  -------  -------",
        "  first response      1   4m 00s   4m 00s",
        "  response            1   4m 00s   4m 00s",
        "  resolution          1  30m 00s  30m 00s",
    ]
    assert lines[lines.index("Agents"):lines.index("Agents") + 5] == [
        "Agents",
        "  agent  chats  replies  notes  response median  joins  join median  join p90",
        "  -----  -----  -------  -----  ---------------  -----  -----------  --------",
        "  alice      1        1      0           4m 00s      1       1m 00s    1m 00s",
        "  bob        0        0      1                -      0            -         -",
    ]
    rules = lines[lines.index("Rules") + 3:]
    assert rules[0] == "  default.subscribe_operators           2      2        4  2026-03-02T10:30:00Z"
    assert sorted(r.split()[0] for r in rules) == sorted(
        "default." + r for r in ("subscribe_operators", "notify_responsible", "notify_subscribers", "notify_assigned",
                                 "notify_mentioned", "escalate_unread", "email_unread_replies"))


def test_json_and_csv_carry_the_same_figures(capsys, data_dir):
    args = ("--data-dir", str(data_dir), "--from", "2026-03-02T09:00:00Z", "--to", "2026-03-02T12:00:00+00:00")
    code, out, _ = run(capsys, *args, "--format", "json", "--channel", "telegram")
    assert code == 0
    data = json.loads(out)
    assert data["filters"] == {"channel": "telegram", "department": None, "agent": None}
    assert data["overview"]["chats"]["started"] == 1 and data["overview"]["chats"]["answered"] == 0

    code, out, _ = run(capsys, *args, "--format", "csv", "--wait-minutes", "45")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["section", "subject", "figure", "value"]
    table = {(s, subj, fig): v for s, subj, fig, v in rows[1:]}
    assert table[("chats", "", "started")] == "2"
    assert table[("chats", "", "waited_longer")] == "1"  # c2 waited 60 minutes, c1 4
    assert float(table[("times", "response_time", "median")]) == 4 * MIN
    assert table[("times", "resolution_time", "p90")] == str(30 * MIN)
    assert table[("agent", "bob", "notes")] == "1"
    assert table[("agent", "alice", "time_to_join_median")] == str(1 * MIN)
    assert table[("rule", "default.notify_mentioned", "fired")] == "0"


def test_database_url_wins_over_the_data_dir(capsys, data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{data_dir / 'chatflow.db'}")
    code, out, _ = run(capsys, "--data-dir", str(tmp_path / "elsewhere"), "--from", "2026-03-01", "--format", "json",
                       "--to", "2026-03-05")
    assert code == 0 and json.loads(out)["overview"]["chats"]["started"] == 2


@pytest.mark.parametrize("args, message", [
    (["--from", "March"], "chatflow report: --from: 'March' is not an ISO 8601 date"),
    (["--from", "2026-03-03", "--to", "2026-03-02"], "chatflow report: --from: the period is empty"),
    (["--channel", "fax"], "chatflow report: --channel: 'fax' is not one of widget"),
    (["--wait-minutes", "-5"], "chatflow report: --wait-minutes: '-5' is not a number of minutes"),
])
def test_bad_options_exit_2_naming_the_option(capsys, data_dir, args, message):
    code, out, err = run(capsys, "--data-dir", str(data_dir), *args)
    assert code == 2 and out == ""
    assert err.startswith(message)


def test_no_database_is_exit_2_and_creates_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    code, out, err = run(capsys, "--data-dir", str(tmp_path / "var"))
    assert code == 2 and "no database" in err
    assert not (tmp_path / "var").exists()


def test_bad_format_is_a_usage_error(capsys, data_dir):
    with pytest.raises(SystemExit) as e:
        main(["report", "--data-dir", str(data_dir), "--format", "xml"])
    assert e.value.code == 2


def test_durations_read_as_people_write_them():
    assert [duration(x) for x in (None, 0, 42.4, 65, 3599, 3600, 7380, 86400 + 4 * 3600)] == \
        ["-", "0s", "42s", "1m 05s", "59m 59s", "1h 00m", "2h 03m", "1d 04h"]


def test_sla_figures_in_every_format(capsys, tmp_path):
    """With SLA policies in the active rule set, the table has an SLA section and JSON and
    CSV the same figures; without (the other tests), there is no such section."""
    db = S.make_db(f"sqlite:///{tmp_path / 'chatflow.db'}")
    now = [T0]
    rt = Runtime(db, clock=lambda: now[0])
    rt.store_ruleset({"sla.rules": 'schedule h { mon-fri 09:00-18:00 }\n'
                                   'sla standard { within "h" first_response 15m next_response 1h }\n'},
                     defaults=True, activate=True, by=None)
    with db.begin() as conn:
        conn.execute(S.agents.insert().values(id="alice", departments=[], access_chats=True, status="online",
                                              is_admin=False, reply_shortcut="enter"))
    rt.start_chat("c1", None, customer={"id": "u1"}, text="Hi")
    rt.start_chat("c2", None, customer={"id": "u2"}, text="Anyone?")
    now[0] = T0 + 5 * MIN
    rt.command("join", "c1", agent="alice")
    rt.command("reply", "c1", agent="alice", text="Hello")
    now[0] = T0 + 90 * MIN
    rt.run_due(now[0])
    db.dispose()
    args = ("--data-dir", str(tmp_path), "--from", "2026-03-02", "--to", "2026-03-02")
    code, out, err = run(capsys, *args)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[lines.index("SLA"):lines.index("SLA") + 5] == [
        "SLA",
        "  policy               target          achieved  breached  achieved %",
        "  -------------------  --------------  --------  --------  ----------",
        "  standard (within h)  first_response         1         1         50%",
        "  standard (within h)  next_response          0         0           -",
    ]
    code, out, _ = run(capsys, *args, "--format", "json")
    assert json.loads(out)["sla"] == [{"policy": "standard", "title": None, "within": "h", "targets": {
        "first_response": {"achieved": 1, "breached": 1, "achieved_rate": 0.5},
        "next_response": {"achieved": 0, "breached": 0, "achieved_rate": None}}}]
    code, out, _ = run(capsys, *args, "--format", "csv")
    table = {(s, subj, fig): v for s, subj, fig, v in list(csv.reader(io.StringIO(out)))[1:]}
    assert table[("sla", "standard/first_response", "breached")] == "1"
    assert table[("sla", "standard/next_response", "achieved_rate")] == ""
