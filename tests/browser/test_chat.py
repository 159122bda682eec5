"""A customer in the widget and an operator in the console, each in a browser context of
their own, chat end to end: everything each one sees arrives live."""
from __future__ import annotations

from playwright.sync_api import expect



def _start_chat(page, text: str, name: str | None = None, email: str | None = None):
    page.get_by_role("button", name="Chat with us").click()
    if name:
        page.get_by_label("Your name (optional)").fill(name)
    if email:
        page.get_by_label("Email (optional").fill(email)
    page.locator("#cf-first").fill(text)
    page.get_by_role("button", name="Start chat").click()
    expect(page.locator(".msg.mine .text").last).to_have_text(text)


def _widget_chat(page) -> dict:
    """The chat id and token the widget keeps in the shop's localStorage."""
    return page.evaluate("() => JSON.parse(localStorage.getItem('chatflow.widget:' + location.origin))")


def test_customer_and_operator_chat_live(live, pages, shot):
    alice = live.create_agent("alice", name="Alice Smith")
    customer = pages.open(live.url + "/demo/pricing", name="customer")
    _start_chat(customer, "Hi, is the Pro plan billed monthly?", name="Ann", email="ann@example.com")
    chat = _widget_chat(customer)

    operator = pages.open(name="operator")
    live.sign_in(operator, "/", alice)
    row = operator.locator(".chat-link", has_text="Ann")
    expect(row).to_contain_text("Unassigned")
    expect(row.locator(".count")).to_have_text("1")
    row.click()
    expect(operator.locator("#messages")).to_contain_text("Hi, is the Pro plan billed monthly?")
    expect(operator.locator("#chat-sub")).to_contain_text("/demo/pricing")
    expect(operator.locator("#chat-sub")).to_contain_text("Online")
    # opening the chat read it: the unread count is gone
    expect(row.locator(".count")).to_have_count(0)

    operator.get_by_role("button", name="Join Chat").click()
    expect(operator.locator("#chat-sub")).to_contain_text("You are responsible")
    expect(row).to_contain_text("You are responsible")
    expect(operator.locator("#composer-text")).to_be_focused()
    operator.locator("#composer-text").type("Yes, monthly: cancel any time.")
    operator.keyboard.press("Enter")  # the default shortcut sends
    expect(operator.locator("#composer-text")).to_have_value("")

    # the reply arrives in the widget over the customer's stream, and is marked read there
    expect(customer.locator(".msg:not(.mine) .text")).to_have_text(["Yes, monthly: cancel any time."])
    expect(customer.locator(".msg:not(.mine) .who")).to_contain_text("alice")
    live.wait_for(lambda: live.api("GET", f"/api/widget/chats/{chat['id']}", token=chat["token"])["unread"] == 0,
                  what="the widget to mark the reply read")

    # the customer's answer arrives in the console live: alice is notified and sees it
    customer.locator("#cf-text").fill("Great, thanks!")
    customer.keyboard.press("Enter")
    expect(operator.locator(".toast")).to_contain_text("New message")
    expect(operator.locator("#messages")).to_contain_text("Great, thanks!")
    shot(operator, "console-chat")
    shot(customer, "widget-chat")

    # a reload keeps the chat, and the open panel
    customer.reload()
    expect(customer.locator(".msg .text")).to_have_text(
        ["Hi, is the Pro plan billed monthly?", "Yes, monthly: cancel any time.", "Great, thanks!"])
    assert _widget_chat(customer)["id"] == chat["id"]

    # leaving the page makes the customer offline, and the console says so
    customer.goto("about:blank")
    live.wait_for(lambda: not live.api("GET", f"/api/chats/{chat['id']}", token=alice)["customer"]["online"],
                  what="the customer to be offline")
    expect(operator.locator("#chat-sub")).to_contain_text("Offline", timeout=8000)
