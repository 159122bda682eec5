"""The widget on someone else's site (another origin, a strict Content-Security-Policy),
keyboard use, labelled controls, and layouts from phone to desktop width, with a
screenshot of each page."""
from __future__ import annotations

import threading

import pytest
from playwright.sync_api import expect
from werkzeug.serving import make_server


# Every visible control without an accessible name, in the page and in open shadow roots.
UNLABELLED = """
() => {
  const out = [];
  const visit = (root) => {
    for (const el of root.querySelectorAll('input, select, textarea, button, a[href]')) {
      if (el.type === 'hidden' || !el.getClientRects().length) continue;
      const named = (el.labels && el.labels.length) || el.getAttribute('aria-label')
        || el.getAttribute('aria-labelledby') || el.title
        || ((el.tagName === 'BUTTON' || el.tagName === 'A') && el.textContent.trim());
      if (!named) out.push(el.outerHTML.slice(0, 120));
    }
    for (const el of root.querySelectorAll('*')) if (el.shadowRoot) visit(el.shadowRoot);
  };
  visit(document);
  return out;
}
"""
PHONE = {"width": 390, "height": 844}
OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"
FOCUSED_IN_WIDGET = "() => document.activeElement?.shadowRoot?.activeElement?.outerHTML || ''"


@pytest.fixture
def serve_page():
    """serve_page(html) → the origin of a second server answering that page at every path.
    It listens on the loopback interface too (Chromium lets a page reach a more private
    address only with a permission) but is another origin: localhost, another port."""
    servers = []

    def serve(html: str) -> str:
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [html.encode()]

        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://localhost:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()


def test_widget_on_another_site_with_a_strict_csp(live, pages, shot, serve_page):
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; script-src {live.url}; connect-src {live.url}; style-src 'self'">
<title>Another shop</title></head>
<body><h1>Plans</h1><a href="/">Home</a>
<script src="{live.url}/widget.js" data-title="Questions?" defer></script></body></html>"""
    shop = serve_page(html)
    page = pages.open(name="shop")
    page.goto(f"{shop}/pricing?plan=pro")
    page.get_by_role("button", name="Questions?").click()
    page.locator("#cf-first").fill("Do you ship to Norway?")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator(".msg.mine .text")).to_have_text(["Do you ship to Norway?"])
    chat = page.evaluate(f"() => JSON.parse(localStorage.getItem('chatflow.widget:{live.url}'))")
    alice = live.create_agent("alice")
    seen = live.api("GET", f"/api/chats/{chat['id']}", token=alice)
    assert seen["page_url"] == f"{shop}/pricing?plan=pro"
    assert seen["customer"]["online"] is True
    live.api("POST", f"/api/chats/{chat['id']}/join", token=alice, status=200)
    live.api("POST", f"/api/chats/{chat['id']}/reply", {"text": "Yes, in 3 days."}, token=alice, status=201)
    expect(page.locator(".msg:not(.mine) .text")).to_have_text(["Yes, in 3 days."])
    shot(page, "widget-other-site")
    page.goto("about:blank")  # leaving: the keepalive presence request crosses origins too
    live.wait_for(lambda: not live.api("GET", f"/api/chats/{chat['id']}", token=alice)["customer"]["online"],
                  what="the customer to be offline")


def test_keyboard_labels_and_phone_layouts(live, pages, shot):
    alice = live.create_agent("alice", name="Alice Smith")
    demo = pages.open(live.url + "/demo", viewport=PHONE, name="demo")
    assert demo.evaluate(OVERFLOW) <= 0
    shot(demo, "demo-phone")
    # the launcher is reached with Tab after the page's own links
    for _ in range(10):
        demo.keyboard.press("Tab")
        if "launcher" in demo.evaluate(FOCUSED_IN_WIDGET):
            break
    else:
        raise AssertionError("Tab never reached the chat button")
    demo.keyboard.press("Enter")
    expect(demo.get_by_label("Your name (optional)")).to_be_focused()
    assert demo.evaluate(UNLABELLED) == []
    demo.keyboard.press("Escape")
    expect(demo.get_by_role("dialog")).to_be_hidden()
    assert "launcher" in demo.evaluate(FOCUSED_IN_WIDGET)
    demo.keyboard.press("Enter")
    demo.get_by_label("Your name (optional)").fill("Dora")
    demo.locator("#cf-first").fill("A question from my phone")
    demo.get_by_role("button", name="Start chat").click()
    expect(demo.locator(".msg.mine")).to_have_count(1)
    box = demo.get_by_role("dialog").bounding_box()
    assert box["width"] == PHONE["width"]  # the open widget fills a phone's screen
    shot(demo, "widget-phone")

    # the console on a phone: the list, then the chat alone with a way back
    console = pages.open(viewport=PHONE, name="console-phone")
    live.sign_in(console, "/", alice)
    expect(console.locator(".chat-link", has_text="Dora")).to_be_visible()
    assert console.evaluate(OVERFLOW) <= 0
    shot(console, "console-phone-list")
    console.locator(".chat-link", has_text="Dora").click()
    expect(console.get_by_role("link", name="← Chats")).to_be_visible()
    expect(console.locator(".chat-list-pane")).to_be_hidden()
    expect(console.locator("#messages")).to_contain_text("A question from my phone")
    assert console.evaluate(OVERFLOW) <= 0
    assert console.evaluate(UNLABELLED) == []
    shot(console, "console-phone-chat")
    console.get_by_role("link", name="← Chats").click()
    expect(console.locator(".chat-list-pane")).to_be_visible()

    # the console on a desktop: list, chat and details side by side; keyboard only
    desk = pages.open(name="console-desktop")
    live.sign_in(desk, "/", alice)
    link = desk.locator(".chat-link", has_text="Dora")
    link.focus()
    desk.keyboard.press("Enter")
    expect(desk.locator("#chat-title")).to_have_text("Dora")
    list_box = desk.locator(".chat-list-pane").bounding_box()
    chat_box = desk.locator("#chat").bounding_box()
    details_box = desk.locator("#details").bounding_box()
    assert list_box["x"] < chat_box["x"] < details_box["x"]
    assert desk.evaluate(UNLABELLED) == []
    desk.get_by_role("button", name="Join Chat").focus()
    desk.keyboard.press("Enter")
    expect(desk.locator("#composer-text")).to_be_focused()
    shot(desk, "console-desktop")

    rules = pages.open(viewport=PHONE, name="rules-phone")
    live.sign_in(rules, "/rules", live.admin_token)
    expect(rules.locator("#active-summary")).to_contain_text("Version 1 is active")
    assert rules.evaluate(OVERFLOW) <= 0
    assert rules.evaluate(UNLABELLED) == []
    shot(rules, "rules-phone")

    signin = pages.open(viewport=PHONE, name="signin")
    signin.goto(live.url + "/")
    expect(signin.get_by_label("Agent token")).to_be_focused()
    signin.keyboard.type("not-a-token")
    signin.keyboard.press("Enter")
    expect(signin.locator("#signin-error")).to_contain_text("not valid")
    shot(signin, "console-signin")
