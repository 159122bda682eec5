"""A private note never reaches the widget — not its page, not a byte of what it
downloads — while the agents it mentions hear of it live; and the unread escalation
reaches every subscriber's console live when its ten minutes run out."""
from __future__ import annotations

from playwright.sync_api import expect

# Tees every response the widget's fetch() gets from the chat API, the event stream
# included, into window.__widgetNetwork: what the customer's browser received.
CAPTURE = """
(() => {
  const seen = [];
  window.__widgetNetwork = seen;
  const original = window.fetch;
  window.fetch = async function (input, init) {
    const res = await original.apply(this, arguments);
    const url = typeof input === "string" ? input : input.url;
    if (url.includes("/api/widget/") && res.body) {
      const entry = { url, body: "" };
      seen.push(entry);
      const reader = res.clone().body.getReader();
      const decoder = new TextDecoder();
      (async () => {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          entry.body += decoder.decode(value, { stream: true });
        }
      })().catch(() => {});
    }
    return res;
  };
})();
"""

# All the text in the page, the widget's shadow root included.
PAGE_TEXT = """
() => document.documentElement.outerHTML + document.body.innerText
  + (document.getElementById('chatflow-widget')?.shadowRoot?.innerHTML || '')
"""


def _customer_with_chat(live, pages, text: str, name: str):
    page = pages.open(name="customer")
    page.add_init_script(CAPTURE)
    bodies = []
    page.on("requestfinished", lambda r: "/api/widget/" in r.url and not r.url.endswith("/stream")
            and bodies.append(r.response().text()))
    page.goto(live.url + "/demo")
    page.get_by_role("button", name="Chat with us").click()
    page.get_by_label("Your name (optional)").fill(name)
    page.locator("#cf-first").fill(text)
    page.get_by_role("button", name="Start chat").click()
    expect(page.locator(".msg.mine .text")).to_have_text([text])
    chat = page.evaluate("() => JSON.parse(localStorage.getItem('chatflow.widget:' + location.origin))")
    return page, chat, bodies


def test_a_note_never_reaches_the_widget(live, pages, shot):
    alice = live.create_agent("alice", name="Alice Smith")
    bob = live.create_agent("bob", name="Bob Jones")
    customer, chat, bodies = _customer_with_chat(live, pages, "My order #1042 arrived broken", "Ben")
    bob_console = pages.open(name="bob")
    live.sign_in(bob_console, "/", bob)
    expect(bob_console.locator(".chat-link", has_text="Ben")).to_be_visible()

    console = pages.open(name="alice")
    live.sign_in(console, "/", alice)
    console.locator(".chat-link", has_text="Ben").click()
    console.get_by_role("button", name="Join Chat").click()
    expect(console.locator("#chat-sub")).to_contain_text("You are responsible")

    # a private note, with @mention completion
    console.get_by_label("Private note").check()
    box = console.locator("#composer-text")
    box.click()
    box.type("SECRET-7731 refund approved internally, ask @b")
    expect(console.get_by_role("option", name="@bob")).to_be_visible()
    expect(box).to_have_attribute("aria-expanded", "true")
    expect(box).to_have_attribute("aria-activedescendant", "suggestions-0")
    console.keyboard.press("Enter")  # picks the suggestion, does not send
    expect(box).to_have_value("SECRET-7731 refund approved internally, ask @bob ")
    expect(box).to_have_attribute("aria-expanded", "false")
    console.keyboard.press("Enter")
    note = console.locator(".msg.note")
    expect(note).to_contain_text("SECRET-7731")
    expect(note).to_contain_text("Private note")

    # bob hears of the mention live
    expect(bob_console.locator(".toast", has_text="You were mentioned")).to_be_visible()
    expect(bob_console.locator("#bell-count")).not_to_have_text("0")

    console.get_by_label("Reply", exact=True).check()
    box.fill("We are looking into it, Ben.")
    console.keyboard.press("Enter")
    expect(customer.locator(".msg:not(.mine) .text")).to_have_text(["We are looking into it, Ben."])

    # a reload replays the chat over the stream: still no note
    customer.reload()
    expect(customer.locator(".msg:not(.mine) .text")).to_have_text(["We are looking into it, Ben."])
    customer.wait_for_function("() => window.__widgetNetwork.some(e => e.url.endsWith('/stream') "
                               "&& e.body.includes('looking into it'))")
    shot(console, "console-note")
    shot(customer, "widget-after-note")

    page_text = customer.evaluate(PAGE_TEXT)
    assert "looking into it" in page_text and "SECRET-7731" not in page_text
    network = customer.evaluate("() => window.__widgetNetwork")
    assert any(e["url"].endswith("/stream") for e in network)
    assert "looking into it" in "".join(e["body"] for e in network)
    for e in network:
        assert "SECRET-7731" not in e["body"], e["url"]
    assert bodies and not any("SECRET-7731" in b for b in bodies)
    # the agent API does have it: the test looks in the right place
    assert "SECRET-7731" in str(live.api("GET", f"/api/chats/{chat['id']}", token=alice))


def test_the_unread_escalation_appears_live(live, pages, shot):
    alice = live.create_agent("alice")
    bob = live.create_agent("bob")
    customer, chat, _ = _customer_with_chat(live, pages, "Hello? I need help with my tent", "Cleo")
    consoles = {}
    for agent, token in (("alice", alice), ("bob", bob)):
        consoles[agent] = pages.open(name=agent)
        live.sign_in(consoles[agent], "/", token)
        # both were subscribed and told of the new chat when it started
        expect(consoles[agent].locator(".chat-link", has_text="Cleo")).to_contain_text("Unassigned")
    live.api("POST", f"/api/chats/{chat['id']}/join", token=alice, status=200)
    customer.locator("#cf-text").fill("Anyone there?")
    customer.keyboard.press("Enter")
    expect(consoles["alice"].locator(".toast", has_text="New message")).to_be_visible()
    assert not consoles["bob"].locator(".toast", has_text="Unread customer messages").count()

    live.clock.advance(10 * 60 + 1)  # alice has not read the customer for ten minutes

    for agent in ("alice", "bob"):
        toast = consoles[agent].locator(".toast", has_text="Unread customer messages")
        expect(toast).to_contain_text("Cleo")
    bob_console = consoles["bob"]
    expect(bob_console.locator(".chat-link", has_text="Cleo")).to_contain_text("Responsible: alice")
    bob_console.get_by_role("button", name="Notifications").click()
    expect(bob_console.locator("#notification-list")).to_contain_text("Unread customer messages")
    expect(bob_console.locator("#notification-list")).to_contain_text("New chat")
    shot(bob_console, "console-escalation")
    bob_console.keyboard.press("Escape")
    expect(bob_console.locator("#notifications")).to_be_hidden()
    expect(bob_console.get_by_role("button", name="Notifications")).to_be_focused()
    templates = [n["template"] for n in live.api("GET", "/api/notifications", token=bob)["notifications"]]
    assert templates == ["new_chat", "unread_messages"]
