"""The web pages: the operator console (``/``), the rules and analytics pages for admins
(``/rules``, ``/analytics``), the customer widget (``/widget.js``, one ``<script>`` tag)
and a demo shop that embeds it (``/demo``). Plain HTML, CSS and JavaScript modules from
``server/static``: no build step.

The pages hold no data of their own; they call the HTTP API and read its event streams
with the same tokens as any other client. Every page is served with a strict Content
Security Policy (scripts and styles from this origin only, no inline code), and the
widget API answers cross-origin requests, so the widget works on any site.
"""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, current_app, render_template, request, send_from_directory

from dsl.vocabulary import CHANNELS

bp = Blueprint("pages", __name__)

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

DEMO_PAGES = {
    "": ("Acme Outdoor — tents, packs and stoves", "home"),
    "pricing": ("Pricing — Acme Outdoor", "pricing"),
}


def _page(template: str, **context):
    resp = current_app.make_response(render_template(template, **context))
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@bp.get("/")
def console():
    return _page("console.html")


@bp.get("/rules")
def rules():
    return _page("rules.html")


@bp.get("/analytics")
def analytics():
    # "today" by the service's clock, not the browser's: the default period is the last
    # seven days the service has lived (a test clock, or a browser in another zone)
    today = datetime.fromtimestamp(current_app.extensions["chatflow"].clock(), timezone.utc).date()
    return _page("analytics.html", today=today.isoformat(), channels=CHANNELS)


@bp.get("/demo", defaults={"page": ""})
@bp.get("/demo/<page>")
def demo(page):
    if page not in DEMO_PAGES:
        return _page("demo.html", title="Not found — Acme Outdoor", page="missing"), 404
    title, name = DEMO_PAGES[page]
    return _page("demo.html", title=title, page=name)


@bp.get("/widget.js")
def widget_js():
    resp = send_from_directory(current_app.static_folder, "widget.js", max_age=300)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@bp.after_app_request
def _widget_cors(resp):
    # the widget runs inside other sites' pages; it sends the chat token as a header,
    # never a cookie, so any origin may call the customer API
    if request.path.startswith("/api/widget/"):
        resp.headers["Access-Control-Allow-Origin"] = "*"
        resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID"
        resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        resp.headers["Access-Control-Max-Age"] = "600"
    return resp
