"""The rules page: the active rule set, an upload refused with its error at its line and
column, the fixed upload activated, a dry-run timeline, and a chat's trace."""
from __future__ import annotations

from playwright.sync_api import expect

RULES = '''# pricing chats
rule route_pricing "Chats started on the pricing page are tagged" {
  on chat.created
  when chat.page_url contains "/pricing"
  then tagg "pricing"
}
'''


def test_rules_page(live, pages, shot):
    page = pages.open(name="admin")
    operator = live.create_agent("alice")
    live.sign_in(page, "/rules", operator)
    expect(page.locator("#signin-error")).to_contain_text("not an admin")

    live.sign_in(page, "/rules", live.admin_token)
    expect(page.locator("#active-summary")).to_contain_text("Version 1 is active")
    expect(page.locator("#version-view")).to_contain_text("the default rules only")

    # an upload with an error: refused, the error at its line and column
    editor = page.get_by_role("textbox", name="Rules")
    editor.fill(RULES)
    page.get_by_role("button", name="Upload and activate").click()
    expect(page.locator("#upload-status")).to_contain_text("Not uploaded: 1 error")
    problem = page.locator("#diagnostics .diagnostic")
    expect(problem).to_have_count(1)
    expect(problem.locator(".where")).to_have_text("custom.rules:5:8")
    expect(problem).to_contain_text("syntax_error")
    expect(problem).to_contain_text("did you mean `tag`?")
    expect(problem.locator("pre")).to_have_text('5 |   then tagg "pricing"\n  |        ^^^^')
    problem.get_by_role("button", name="Go to line 5, column 8").click()
    expect(editor).to_be_focused()
    selected = editor.evaluate("t => t.value.slice(t.selectionStart, t.selectionEnd)")
    assert selected == "tagg"
    assert len(live.api("GET", "/api/admin/rulesets")["rulesets"]) == 1  # nothing stored
    shot(page, "rules-error")

    # fixed: stored as version 2 and activated
    editor.fill(RULES.replace('tagg "pricing"', 'tag "pricing"'))
    page.get_by_role("button", name="Check").click()
    expect(page.locator("#upload-status")).to_contain_text("No errors")
    page.get_by_role("button", name="Upload and activate").click()
    expect(page.locator("#upload-status")).to_contain_text("Version 2 stored and activated")
    expect(page.locator("#active-summary")).to_contain_text("Version 2 is active: 1 file plus the default rules")
    expect(page.locator("#version-view")).to_contain_text('then tag "pricing"')
    assert [v["active"] for v in live.api("GET", "/api/admin/rulesets")["rulesets"]] == [True, False]

    # a dry-run of the example scenario against the active rules: its timeline
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#dryrun-status")).to_contain_text("Expectations met")
    timeline = page.locator("#dryrun-result .timeline")
    fired = timeline.locator("li.k-rule.fired")
    expect(fired.filter(has_text="route_pricing")).to_have_count(1)
    expect(fired.filter(has_text="default.escalate_unread")).to_contain_text("+10m")
    expect(fired.filter(has_text="route_pricing")).to_contain_text('chat.page_url contains "/pricing" = true')
    expect(timeline).to_contain_text("armed default.escalate_unread, due +10m")
    # a scenario mistake is shown at its line
    scenario = page.get_by_role("textbox", name="Scenario")
    scenario.fill(scenario.input_value().replace("start_chat", "strat_chat"))
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#dryrun-problems .where")).to_have_text("scenario.yaml:8:9")
    expect(page.locator("#dryrun-problems")).to_contain_text("did you mean `start_chat`?")

    # a chat's trace: why route_pricing fired for it
    started = live.api("POST", "/api/widget/chats", {"text": "Hi", "page_url": "https://shop.example/pricing"},
                       token=None, status=201)
    chat_id = started["chat"]["id"]
    page.get_by_label("Chat id").fill(chat_id)
    page.get_by_role("button", name="Show trace").click()
    expect(page.locator("#trace-status")).to_contain_text(f"for chat {chat_id}")
    trace = page.locator("#trace-result")
    fired = trace.locator("li.k-rule.fired", has_text="route_pricing")
    expect(fired).to_contain_text('chat.page_url = "https://shop.example/pricing"')  # a fact shows its value
    expect(trace).to_contain_text("effect")
    shot(page, "rules-page")
    # the console links an admin to a chat's trace
    page.goto(f"{live.url}/rules#trace={chat_id}")
    expect(page.locator("#trace-result li.k-rule.fired", has_text="route_pricing")).to_be_visible()
