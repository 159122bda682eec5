"""The analytics page: a small history made through the API on the test clock (chats on
two days, joins, replies, a note, an escalation), the figures the test counts itself shown
as tiles, per day and per agent; a filter changes them; a bad period or threshold is shown
at its field; the layout fits a phone."""
from __future__ import annotations

import urllib.request
from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect

MIN = 60.0
PHONE = {"width": 390, "height": 844}


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).date().isoformat()


def _history(live) -> dict:
    """Three chats, on two days: c1 answered twice by alice (bob adds a note) and closed;
    c2 on telegram, joined by alice and left unread until the escalation fires; a day
    later c3 in department support, answered after 30 s and closed by bob."""
    alice = live.create_agent("alice", name="Alice", departments=["sales"])
    bob = live.create_agent("bob", name="Bob", departments=["support"])
    clock, api = live.clock, live.api
    started = []

    def start_chat(text, **fields):
        started.append(clock())
        chat = api("POST", "/api/widget/chats", {"text": text, **fields}, token=None, status=201)
        return chat["chat"]["id"], chat["token"]

    c1, c1_token = start_chat("I need help with my tent")
    clock.advance(2 * MIN)
    api("POST", f"/api/chats/{c1}/join", token=alice, status=200)
    clock.advance(1 * MIN)
    api("POST", f"/api/chats/{c1}/note", {"text": "VIP customer"}, token=bob, status=201)
    clock.advance(2 * MIN)
    api("POST", f"/api/chats/{c1}/reply", {"text": "Hello!"}, token=alice, status=201)
    clock.advance(1 * MIN)
    api("POST", f"/api/widget/chats/{c1}/messages", {"text": "One more thing"}, token=c1_token, status=201)
    clock.advance(2 * MIN)
    api("POST", f"/api/chats/{c1}/reply", {"text": "Sure"}, token=alice, status=201)
    clock.advance(2 * MIN)
    api("POST", f"/api/chats/{c1}/close", token=alice, status=200)

    c2, c2_token = start_chat("Anyone?", channel="telegram")
    clock.advance(1 * MIN)
    api("POST", f"/api/chats/{c2}/join", token=alice, status=200)
    api("POST", f"/api/widget/chats/{c2}/messages", {"text": "Hello??"}, token=c2_token, status=201)
    clock.advance(10 * MIN)  # alice has left the customer unread for ten minutes: escalated
    live.wait_for(lambda: any(n["template"] == "unread_messages"
                              for n in api("GET", "/api/notifications", token=bob)["notifications"]),
                  what="the unread escalation")

    clock.advance(24 * 3600)
    c3, _ = start_chat("Where is my order?")
    api("POST", f"/api/chats/{c3}/join", token=bob, status=200)
    api("POST", f"/api/chats/{c3}/assign", {"department": "support"}, token=bob, status=200)
    clock.advance(30)
    api("POST", f"/api/chats/{c3}/reply", {"text": "On its way"}, token=bob, status=201)
    api("POST", f"/api/chats/{c3}/close", token=bob, status=200)
    return {"started": started, "alice": alice}


def _tile(page, figure):
    return page.locator(f'#tiles [data-figure="{figure}"] .value')


def _agent(page, agent, figure):
    return page.locator(f'#agents-table tr[data-agent="{agent}"] td[data-figure="{figure}"]')


def test_analytics_page(live, pages, shot):
    history = _history(live)
    days = sorted({_day(t) for t in history["started"]})
    today = _day(live.clock())

    with urllib.request.urlopen(live.url + "/analytics", timeout=10) as resp:  # served like the other pages
        assert "script-src 'self';" in resp.headers["Content-Security-Policy"]
        assert f'data-today="{today}"' in resp.read().decode()

    page = pages.open(name="admin")
    live.sign_in(page, "/analytics", history["alice"])
    expect(page.locator("#signin-error")).to_contain_text("not an admin")
    live.sign_in(page, "/analytics", live.admin_token)

    # the default period: the last seven days by the service's clock
    week_start = (datetime.fromisoformat(today) - timedelta(days=6)).date().isoformat()
    expect(page.get_by_label("From", exact=True)).to_have_value(week_start)
    expect(page.get_by_label("To", exact=True)).to_have_value(today)
    expect(page.locator("#report-status")).to_contain_text(f"Figures for {week_start} to {today} (UTC), all chats")

    # the overview, as counted above: 3 chats; c1 and c3 answered and closed; c2 escalated
    # and waiting past ten minutes
    for figure, value in (("started", "3"), ("answered", "2"), ("closed", "2"), ("escalated_unread", "1"),
                          ("waited_longer", "1")):
        expect(_tile(page, figure)).to_have_text(value)
    expect(page.locator('#tiles [data-figure="waited_longer"] dt')).to_have_text("Waited longer than 10 min")
    # c1's first response came after 5 minutes, c3's after 30 s
    expect(_tile(page, "first_response_time")).to_have_text("2 min 45 s")
    expect(page.locator('#tiles [data-figure="first_response_time"] .detail')).to_contain_text("2 chats")
    # responses: c1's after 5 and 2 minutes, c3's after 30 s
    expect(_tile(page, "response_time")).to_have_text("2 min")

    # per agent
    expected = {"alice": {"chats_handled": "1", "replies": "2", "notes": "0", "joins": "2"},
                "bob": {"chats_handled": "1", "replies": "1", "notes": "1", "joins": "1"}}
    for agent, figures in expected.items():
        for figure, value in figures.items():
            expect(_agent(page, agent, figure)).to_have_text(value)
    expect(_agent(page, "alice", "time_to_join")).to_have_text("1 min 30 s")  # 2 min (c1) and 1 min (c2)
    # per rule: every chat subscribed the operators
    expect(page.locator('#rules-table tr[data-rule="default.subscribe_operators"] td[data-figure="fired"]')) \
        .to_have_text("3")
    expect(page.locator('#rules-table tr[data-rule="default.escalate_unread"] td[data-figure="fired"]')) \
        .to_have_text("1")

    # the chart: seven days of three bars, and the same numbers in a table
    chart = page.locator("#daily-chart svg")
    expect(chart.locator("rect")).to_have_count(7 * 3)
    expect(page.locator("#daily-chart svg > title")).to_contain_text("3 started, 2 answered, 2 closed in all")
    page.get_by_text("The numbers of the chart").click()
    counts = {d: sum(1 for t in history["started"] if _day(t) == d) for d in days}
    for d, n in counts.items():
        expect(page.locator(f'#daily-table tr[data-day="{d}"] td').first).to_have_text(str(n))
    expect(page.locator("#daily-table tbody tr")).to_have_count(7)
    shot(page, "analytics-desktop")

    # a filter: telegram has c2 only, started and escalated, never answered
    page.get_by_label("Channel", exact=True).select_option("telegram")
    expect(page.locator("#report-status")).to_contain_text("channel telegram")
    expect(_tile(page, "started")).to_have_text("1")
    expect(_tile(page, "answered")).to_have_text("0")
    expect(_tile(page, "escalated_unread")).to_have_text("1")
    expect(_agent(page, "alice", "replies")).to_have_text("0")
    assert "channel=telegram" in page.url  # kept in the address for a reload or a link
    page.get_by_label("Channel", exact=True).select_option("")
    page.get_by_label("Agent", exact=True).select_option("bob")
    expect(_tile(page, "started")).to_have_text("1")
    expect(page.locator("#agents-table tbody tr")).to_have_count(1)
    expect(_agent(page, "bob", "replies")).to_have_text("1")
    page.get_by_label("Agent", exact=True).select_option("")
    expect(_tile(page, "started")).to_have_text("3")

    # a bad period: the API's refusal is shown at the field it names
    after = (datetime.fromisoformat(today) + timedelta(days=1)).date().isoformat()
    page.get_by_label("From", exact=True).fill(after)
    error = page.locator("#error-from")
    expect(error).to_contain_text("the period is empty")
    expect(page.get_by_label("From", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#report-status")).to_contain_text("Not updated")
    expect(_tile(page, "started")).to_have_text("3")  # the last figures stay
    page.get_by_label("From", exact=True).fill(week_start)
    expect(error).to_be_empty()
    page.get_by_label("Wait minutes", exact=True).fill("0")
    page.get_by_label("Wait minutes", exact=True).press("Enter")
    expect(page.locator("#error-wait_minutes")).to_contain_text("above 0")
    page.get_by_label("Wait minutes", exact=True).fill("1")
    page.get_by_label("Wait minutes", exact=True).press("Enter")
    # with one minute, c1's first wait (5 minutes) and second (2 minutes) were long too
    expect(_tile(page, "waited_longer")).to_have_text("2")
    expect(page.locator("#error-wait_minutes")).to_be_empty()
    expect(page.locator('#tiles [data-figure="waited_longer"] dt')).to_have_text("Waited longer than 1 min")

    # a phone: one column, nothing wider than the screen
    page.set_viewport_size(PHONE)
    expect(chart.locator("rect")).to_have_count(7 * 3)
    page.wait_for_function("() => document.querySelector('#daily-chart svg').getAttribute('width') < 400")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "analytics-phone")

    # the rules page and an admin's console link here
    page.goto(live.url + "/rules")
    expect(page.get_by_role("link", name="Analytics")).to_have_attribute("href", "/analytics")
    page.goto(live.url + "/")
    expect(page.get_by_role("link", name="Analytics")).to_have_attribute("href", "/analytics")
