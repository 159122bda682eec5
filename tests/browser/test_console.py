"""The operator console's tools, each checked by what the customer and the other agents
then see: canned responses (Shift+3), articles (Shift+8), edit and delete of own
messages, the reply lock, the send shortcut preference, Unsubscribe and reassignment."""
from __future__ import annotations

from playwright.sync_api import expect


def test_composer_tools_and_chat_commands(live, pages, shot):
    alice = live.create_agent("alice", name="Alice Smith", departments=["sales"])
    bob = live.create_agent("bob", name="Bob Jones", departments=["sales"])
    live.api("PUT", "/api/admin/canned/pro", {"shortcut": "pro", "text": "Pro costs €29 a month."}, status=200)
    live.api("PUT", "/api/admin/canned/bye", {"shortcut": "bye", "text": "Have a nice day!"}, status=200)
    live.api("PUT", "/api/admin/articles/refunds", {"slug": "refunds", "title": "Refund policy",
                                                    "body": "Refunds within 30 days.",
                                                    "url": "https://shop.example/help/refunds"}, status=200)
    customer = pages.open(live.url + "/demo/pricing", name="customer")
    customer.get_by_role("button", name="Chat with us").click()
    customer.locator("#cf-first").fill("How much is Pro, and can I get a refund?")
    customer.keyboard.press("Tab")
    customer.keyboard.press("Enter")  # the Start chat button, from the keyboard
    expect(customer.locator(".msg.mine")).to_have_count(1)
    chat_id = customer.evaluate("() => JSON.parse(localStorage.getItem('chatflow.widget:' + location.origin)).id")
    bob_console = pages.open(name="bob")
    live.sign_in(bob_console, "/", bob)

    console = pages.open(name="alice")
    live.sign_in(console, "/", alice)
    console.locator(".chat-link").first.click()
    console.get_by_role("button", name="Join Chat").click()
    box = console.locator("#composer-text")
    expect(box).to_be_focused()

    # Shift+3: canned responses, filtered as one types
    console.keyboard.press("Shift+Digit3")
    expect(console.locator("#suggestions").get_by_role("option")).to_have_count(2)
    console.keyboard.type("pr")
    expect(console.locator("#suggestions").get_by_role("option")).to_have_count(1)
    console.keyboard.press("Enter")
    expect(box).to_have_value("Pro costs €29 a month.")
    console.keyboard.press("Enter")
    expect(customer.locator(".msg:not(.mine) .text")).to_have_text(["Pro costs €29 a month."])

    # Shift+8: article search, embedded as a reply
    console.keyboard.press("Shift+Digit8")
    console.keyboard.type("refund")
    expect(console.locator("#suggestions").get_by_role("option", name="Refund policy")).to_be_visible()
    console.keyboard.press("Enter")
    expect(console.locator("#attachment")).to_contain_text("Refund policy")
    console.keyboard.press("Enter")
    expect(console.locator(".msg", has_text="Refunds within 30 days.")).to_contain_text("Article: refunds")
    expect(customer.locator(".msg:not(.mine) .text").last).to_contain_text("Refunds within 30 days.")

    # edit an own message: the customer sees the new text, marked edited
    console.get_by_role("button", name="Edit message 2").click()
    edit = console.get_by_role("textbox", name="Edit message")
    expect(edit).to_be_focused()
    edit.fill("Pro costs €29 a month, billed monthly.")
    console.get_by_role("button", name="Save").click()
    expect(customer.locator(".msg:not(.mine) .text").first).to_have_text("Pro costs €29 a month, billed monthly.")
    expect(customer.locator(".msg:not(.mine) .who").first).to_contain_text("edited")

    # delete one: it disappears for the customer and shows as deleted to agents
    console.once("dialog", lambda d: d.accept())
    console.get_by_role("button", name="Delete message 3").click()
    expect(console.locator('.msg[data-position="3"]')).to_contain_text("This message was deleted.")
    expect(customer.locator(".msg:not(.mine) .text")).to_have_text(["Pro costs €29 a month, billed monthly."])

    # the send shortcut preference: Ctrl/Cmd+Enter sends, Enter makes a new line
    console.get_by_label("Send with").select_option("ctrl_enter")
    expect(console.locator("#composer-hint")).to_contain_text("Ctrl/Cmd+Enter sends")
    box.click()
    console.keyboard.type("Anything else?")
    console.keyboard.press("Enter")
    console.keyboard.type("We are here until 18:00.")
    expect(box).to_have_value("Anything else?\nWe are here until 18:00.")
    console.keyboard.press("Control+Enter")
    expect(customer.locator(".msg:not(.mine) .text").last).to_have_text("Anything else?\nWe are here until 18:00.")
    assert live.api("GET", "/api/me", token=alice)["reply_shortcut"] == "ctrl_enter"

    # the lock: other agents cannot take over while it holds
    console.get_by_role("button", name="Lock").click()
    expect(console.get_by_role("button", name="Unlock")).to_be_visible()
    refused = live.api("POST", f"/api/chats/{chat_id}/join", token=bob, status=409)
    assert refused["error"] == "locked"
    bob_console.locator(".chat-link").first.click()
    expect(bob_console.locator("#chat-banner")).to_contain_text("alice is working on this chat")
    bob_console.get_by_role("button", name="Join Chat").click()
    expect(bob_console.locator("#chat-error")).to_contain_text("Another agent locked this chat")
    console.get_by_role("button", name="Unlock").click()
    expect(console.get_by_role("button", name="Lock")).to_be_visible()
    shot(console, "console-tools")

    # Unsubscribe in the top bar of the chat
    console.get_by_role("button", name="Unsubscribe").click()
    expect(console.get_by_role("button", name="Subscribe", exact=True)).to_be_visible()
    assert live.api("GET", f"/api/chats/{chat_id}", token=alice)["subscribed"] is False

    # reassignment on the right: bob is told live
    console.get_by_label("Agent", exact=True).select_option("bob")
    console.get_by_role("button", name="Assign to agent").click()
    expect(console.locator("#chat-sub")).to_contain_text("Responsible: bob")
    expect(console.get_by_role("button", name="Join Chat")).to_be_visible()
    expect(bob_console.locator(".toast", has_text="Assigned to you")).to_be_visible()
    expect(bob_console.locator("#chat-sub")).to_contain_text("You are responsible")
    shot(bob_console, "console-assigned")
