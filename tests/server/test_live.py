"""The live streams (SSE) in embedded mode, on SQLite and on PostgreSQL: an agent's
notifications, a customer's chat, Last-Event-ID replay, the errors a stream answers, and
one stream served by a real HTTP server on a socket.

Most streams are read whole: ``STREAM_SECONDS`` is small, so a stream reads what is new,
waits that long for a wake-up and ends, and the test parses the SSE text. A test that
needs the stream open while something happens (a wake-up, a ``snapshot`` after an edit)
reads the unbuffered response frame by frame: the wake-up comes from a request made
between two frames, so the order is fixed and no sleep is needed.
"""
from __future__ import annotations

import http.client
import json
import threading
import time

import pytest
from werkzeug.serving import make_server

SHORT = 0.25  # seconds a stream that is read whole stays open
OPEN = 10.0  # seconds a stream read frame by frame may stay open (a failing test waits this long at most)


# ------------------------------------------------------------------ SSE text

def parse_sse(text: str) -> list[dict]:
    """The frames of an SSE body: ``{"id", "event", "data"}`` for events (data decoded),
    ``{"comment": ...}`` for comments, ``{"retry": ms}``; blank-line separated."""
    frames = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        frame: dict = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                frame["comment"] = line[1:].strip()
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                frame["data"] = json.loads(value)
            elif field == "id":
                frame["id"] = int(value)
            elif field == "retry":
                frame["retry"] = int(value)
            else:
                frame[field] = value
        frames.append(frame)
    return frames


def events(frames, name=None) -> list[dict]:
    return [f for f in frames if "event" in f and (name is None or f["event"] == name)]


def read_stream(client, path, headers, last_event_id=None, query=""):
    """(response, frames) of a stream read to its end."""
    h = dict(headers)
    if last_event_id is not None:
        h["Last-Event-ID"] = str(last_event_id)
    r = client.get(path + query, headers=h, buffered=True)
    return r, (parse_sse(r.get_data(as_text=True)) if r.status_code == 200 else None)


class Frames:
    """An unbuffered stream response, read one SSE frame at a time."""

    def __init__(self, response):
        self.response = response
        self._chunks = iter(response.response)
        self._buffer = ""
        self.seen: list[dict] = []

    def next(self) -> dict:
        while "\n\n" not in self._buffer:
            self._buffer += next(self._chunks).decode("utf-8")
        block, self._buffer = self._buffer.split("\n\n", 1)
        frame = parse_sse(block + "\n\n")[0]
        self.seen.append(frame)
        return frame

    def close(self) -> None:
        self.response.close()


@pytest.fixture
def team(api, app):
    app.config["STREAM_SECONDS"] = SHORT
    return api.agents("alice", "bob")


def _open(client, path, headers) -> Frames:
    config = client.application.config
    before, config["STREAM_SECONDS"] = config["STREAM_SECONDS"], OPEN
    try:  # the view reads the limit when the stream opens
        r = client.get(path, headers=headers, buffered=False)
    finally:
        config["STREAM_SECONDS"] = before
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    frames = Frames(r)
    assert frames.next() == {"retry": 2000}
    return frames


def _position(api, cid, headers, text) -> int:
    """The 1-based position (as the agent API numbers messages) of the message with this text."""
    return next(m["position"] for m in api.agent_chat(cid, headers)["messages"] if m["text"] == text)


# ------------------------------------------------------------------ the agent's stream

def test_agent_stream_delivers_a_new_chat_and_a_mention_while_open(api, client, team):
    earlier, _ = api.start_chat("earlier")
    stream = _open(client, "/api/stream", team["alice"])
    try:
        # what existed when the stream opened comes first; the stream then waits for a wake-up
        f = stream.next()
        assert (f["event"], f["data"]["chat_id"], f["data"]["template"]) == ("notification", earlier, "new_chat")

        cid, _ = api.start_chat("Hi, I need help")  # wakes alice's stream: she is an operator
        first = stream.next()
        assert first["event"] == "notification"
        assert (first["data"]["chat_id"], first["data"]["template"]) == (cid, "new_chat")
        assert first["id"] == first["data"]["id"] and first["id"] > f["id"]

        api.post(f"/api/chats/{cid}/note", team["bob"], {"text": "@alice can you take this?"}, status=201)
        second = stream.next()
        assert (second["event"], second["data"]["chat_id"], second["data"]["template"]) == ("notification", cid, "mention")
        assert second["data"]["rule"] == "default.notify_mentioned"
        assert second["id"] > first["id"]
        assert not [x for x in stream.seen if "comment" in x]  # woken each time, not re-read at the end
    finally:
        stream.close()


def test_agent_stream_read_whole_lists_the_agents_notifications_in_order(api, client, team):
    cid, _ = api.start_chat("Hi")
    api.post(f"/api/chats/{cid}/note", team["bob"], {"text": "@alice look"}, status=201)
    api.post(f"/api/chats/{cid}/note", team["alice"], {"text": "@bob ok"}, status=201)

    r, frames = read_stream(client, "/api/stream", team["alice"])
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    assert r.headers["Cache-Control"] == "no-cache"
    assert frames[0] == {"retry": 2000}
    got = events(frames)
    assert [(e["event"], e["data"]["chat_id"], e["data"]["template"]) for e in got] == [
        ("notification", cid, "new_chat"), ("notification", cid, "mention")]
    # exactly alice's notifications, with the ids /api/notifications gives them (bob's are not in it)
    listed = client.get("/api/notifications", headers=team["alice"]).get_json()["notifications"]
    assert [e["id"] for e in got] == [n["id"] for n in listed]
    assert all(e["data"]["text"] == n["text"] for e, n in zip(got, listed))


def test_reconnecting_with_last_event_id_replays_only_newer_notifications(api, client, team):
    first, _ = api.start_chat("one")
    second, _ = api.start_chat("two")
    api.post(f"/api/chats/{first}/note", team["bob"], {"text": "@alice first"}, status=201)
    _, frames = read_stream(client, "/api/stream", team["alice"])
    ids = [e["id"] for e in events(frames)]
    assert len(ids) == 3 and ids == sorted(ids)

    _, frames = read_stream(client, "/api/stream", team["alice"], last_event_id=ids[0])
    assert [(e["data"]["chat_id"], e["data"]["template"]) for e in events(frames)] == [
        (second, "new_chat"), (first, "mention")]
    _, frames = read_stream(client, "/api/stream", team["alice"], last_event_id=ids[1])
    assert [e["id"] for e in events(frames)] == ids[2:]
    _, frames = read_stream(client, "/api/stream", team["alice"], last_event_id=ids[2])
    assert events(frames) == []
    # an EventSource polyfill that cannot set headers passes it in the query
    _, frames = read_stream(client, "/api/stream", team["alice"], query=f"?last_event_id={ids[1]}")
    assert [e["id"] for e in events(frames)] == ids[2:]

    # what happens after the reconnect arrives too, and nothing older comes back
    api.post(f"/api/chats/{second}/note", team["bob"], {"text": "@alice second"}, status=201)
    _, frames = read_stream(client, "/api/stream", team["alice"], last_event_id=ids[2])
    assert [(e["data"]["chat_id"], e["data"]["template"]) for e in events(frames)] == [(second, "mention")]
    assert events(frames)[0]["id"] > ids[2]


def test_agent_stream_needs_an_agent_token(api, client, team):
    r = client.get("/api/stream", buffered=True)
    assert r.status_code == 401 and r.get_json()["error"] == "unauthorized"
    _, cust = api.start_chat("Hi")
    r = client.get("/api/stream", headers=cust, buffered=True)  # a chat token is no agent token
    assert r.status_code == 401 and r.get_json()["error"] == "unauthorized"


# ------------------------------------------------------------------ the customer's stream

SECRET = "@bob VIP plan, card ending 4242"


def _texts(frames) -> list[tuple[int, str]]:
    return [(e["id"], e["data"]["text"]) for e in events(frames, "message")]


def _no_note(frames, *secrets) -> None:
    raw = json.dumps(frames)
    for s in ("4242", "note", *secrets):
        assert s not in raw, f"{s!r} reached the customer's stream"


def test_customer_stream_has_the_public_messages_in_order_and_no_note(api, client, team):
    cid, cust = api.start_chat("Where is my refund?")
    api.post(f"/api/chats/{cid}/join", team["alice"], status=200)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Let me check."}, status=201)
    api.post(f"/api/chats/{cid}/note", team["alice"], {"text": SECRET}, status=201)
    api.post(f"/api/chats/{cid}/reply", team["alice"], {"text": "Refunded today."}, status=201)
    api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "Thanks!"}, status=201)

    r, frames = read_stream(client, f"/api/widget/chats/{cid}/stream", cust)
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    assert {e["event"] for e in events(frames)} == {"message"}
    # ids are public ranks: 1, 2, 3, 4 with no gap where the note is
    assert _texts(frames) == [(1, "Where is my refund?"), (2, "Let me check."), (3, "Refunded today."), (4, "Thanks!")]
    assert [(e["data"]["author"], e["data"]["author_id"]) for e in events(frames)] == [
        ("customer", None), ("agent", "alice"), ("agent", "alice"), ("customer", None)]
    _no_note(frames)
    assert "4242" not in r.get_data(as_text=True)

    # a reconnect replays only the newer messages, still without the note
    _, frames = read_stream(client, f"/api/widget/chats/{cid}/stream", cust, last_event_id=2)
    assert _texts(frames) == [(3, "Refunded today."), (4, "Thanks!")]
    _no_note(frames)
    # the X-Chat-Token header opens the stream as the bearer token does
    r = client.get(f"/api/widget/chats/{cid}/stream",
                   headers={"X-Chat-Token": cust["Authorization"][7:], "Last-Event-ID": "3"}, buffered=True)
    assert _texts(parse_sse(r.get_data(as_text=True))) == [(4, "Thanks!")]


def test_customer_stream_while_open_gets_replies_and_snapshots_never_a_note(api, client, team):
    alice = team["alice"]
    cid, cust = api.start_chat("Hi")
    api.post(f"/api/chats/{cid}/join", alice, status=200)
    api.post(f"/api/chats/{cid}/reply", alice, {"text": "one"}, status=201)
    stream = _open(client, f"/api/widget/chats/{cid}/stream", cust)
    try:
        assert [(f["id"], f["data"]["text"]) for f in (stream.next(), stream.next())] == [(1, "Hi"), (2, "one")]

        # a note between two replies: the next frame is the second reply, with the next rank
        api.post(f"/api/chats/{cid}/note", alice, {"text": SECRET}, status=201)
        api.post(f"/api/chats/{cid}/reply", alice, {"text": "two"}, status=201)
        f = stream.next()
        assert (f["event"], f["id"], f["data"]["text"], f["data"]["edited"]) == ("message", 3, "two", False)

        # editing a reply already sent re-sends the visible list: a snapshot, without the note
        api.client.patch(f"/api/chats/{cid}/messages/{_position(api, cid, alice, 'one')}", json={"text": "ONE"},
                         headers=alice)
        f = stream.next()
        assert f["event"] == "snapshot" and f["id"] == 3
        assert [(m["id"], m["text"], m["edited"]) for m in f["data"]["messages"]] == [
            (f"{cid}:r1", "Hi", False), (f"{cid}:r2", "ONE", True), (f"{cid}:r3", "two", False)]

        # editing or deleting the note changes nothing the customer sees: no frame for it
        note_at = _position(api, cid, alice, SECRET)
        r = api.client.patch(f"/api/chats/{cid}/messages/{note_at}", json={"text": "@bob now 5353"}, headers=alice)
        assert r.status_code == 200, r.get_json()
        r = api.client.delete(f"/api/chats/{cid}/messages/{note_at}", headers=alice)
        assert r.status_code == 200, r.get_json()

        # deleting a reply already sent: a snapshot without it; the ranks of the others stay
        r = api.client.delete(f"/api/chats/{cid}/messages/{_position(api, cid, alice, 'ONE')}", headers=alice)
        assert r.status_code == 200, r.get_json()
        f = stream.next()
        assert f["event"] == "snapshot" and f["id"] == 3
        assert [(m["id"], m["text"]) for m in f["data"]["messages"]] == [(f"{cid}:r1", "Hi"), (f"{cid}:r3", "two")]

        api.post(f"/api/widget/chats/{cid}/messages", cust, {"text": "three"}, status=201)
        f = stream.next()
        assert (f["event"], f["id"], f["data"]["text"], f["data"]["author"]) == ("message", 4, "three", "customer")
        _no_note(stream.seen, "5353")
        assert [f.get("event") for f in stream.seen] == [None, "message", "message", "message", "snapshot",
                                                         "snapshot", "message"]
    finally:
        stream.close()

    # a new stream shows the chat as it is now: no deleted reply, no note
    _, frames = read_stream(client, f"/api/widget/chats/{cid}/stream", cust)
    assert _texts(frames) == [(1, "Hi"), (3, "two"), (4, "three")]
    _no_note(frames, "5353")


def test_a_reconnect_after_a_delete_tells_the_customer(api, client, team):
    alice = team["alice"]
    cid, cust = api.start_chat("Hi")
    api.post(f"/api/chats/{cid}/join", alice, status=200)
    api.post(f"/api/chats/{cid}/reply", alice, {"text": "wrong price: 10 EUR"}, status=201)
    _, frames = read_stream(client, f"/api/widget/chats/{cid}/stream", cust)
    assert [i for i, _ in _texts(frames)] == [1, 2]
    # the connection drops; meanwhile alice deletes her reply
    r = api.client.delete(f"/api/chats/{cid}/messages/{_position(api, cid, alice, 'wrong price: 10 EUR')}",
                          headers=alice)
    assert r.status_code == 200
    _, frames = read_stream(client, f"/api/widget/chats/{cid}/stream", cust, last_event_id=2)
    assert "wrong price" not in json.dumps(frames)
    snapshots = events(frames, "snapshot")
    assert snapshots and [m["text"] for m in snapshots[-1]["data"]["messages"]] == ["Hi"]


def test_a_customer_token_of_another_chat_is_404(api, client, team):
    mine, mine_h = api.start_chat("mine")
    other, other_h = api.start_chat("other")
    for headers in (other_h, {"X-Chat-Token": other_h["Authorization"][7:]}, team["alice"]):
        r = client.get(f"/api/widget/chats/{mine}/stream", headers=headers, buffered=True)
        assert r.status_code == 404, r.get_data(as_text=True)
        assert r.get_json()["error"] == "unknown_chat" and set(r.get_json()) == {"error", "message", "details"}
    r = client.get("/api/widget/chats/c_nosuchchat/stream", headers=mine_h, buffered=True)
    assert r.status_code == 404 and r.get_json()["error"] == "unknown_chat"
    r = client.get(f"/api/widget/chats/{mine}/stream", buffered=True)
    assert r.status_code == 401 and r.get_json()["error"] == "unauthorized"


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "0x10", "1e3", ""+"+1", "²", "٣", "9" * 19, "9" * 25])
def test_garbage_last_event_id_is_400(api, client, team, value):
    _, cust = api.start_chat("Hi")
    cid = client.get("/api/chats", headers=team["alice"]).get_json()["chats"][0]["id"]
    for path, headers in (("/api/stream", team["alice"]), (f"/api/widget/chats/{cid}/stream", cust)):
        for how in ("header", "query"):
            if how == "header":
                r = client.get(path, headers={**headers, "Last-Event-ID": value}, buffered=True)
            else:
                r = client.get(path, headers=headers, query_string={"last_event_id": value}, buffered=True)
            assert r.status_code == 400, (path, how, value, r.status_code)
            assert r.mimetype == "application/json"
            assert r.get_json()["error"] == "invalid_request" and "Last-Event-ID" in r.get_json()["message"]


# ------------------------------------------------------------------ a real server on a socket

LIVE = 3.0  # the real server's streams end after this; the events must arrive before


@pytest.fixture
def served(app):
    """The app behind werkzeug's threaded server on 127.0.0.1 (a free port); joins the
    streams' threads at the end, so none outlives the test."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    server.daemon_threads = False  # server_close() joins every request thread
    server.block_on_close = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    server.server_close()
    thread.join(5)


def _request(port, method, path, headers, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, body=payload, headers={**headers, "Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def _read_sse_socket(port, path, headers, out: list, opened: threading.Event):
    """Read a stream to its end over a socket; appends (monotonic time, frame)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LIVE + 10)
    try:
        conn.request("GET", path, headers={**headers, "Accept": "text/event-stream"})
        r = conn.getresponse()
        out.append((time.monotonic(), {"status": r.status, "type": r.getheader("Content-Type")}))
        block = ""
        while True:
            line = r.readline()
            if not line:
                break
            line = line.decode("utf-8")
            if line == "\n":
                frame = parse_sse(block + "\n\n")[0]
                out.append((time.monotonic(), frame))
                if frame.get("retry"):
                    opened.set()
                block = ""
            else:
                block += line
    finally:
        opened.set()
        conn.close()


def test_a_real_server_pushes_events_to_open_streams(api, app, served, team, record_property):
    port = served
    app.config["STREAM_SECONDS"] = LIVE  # read when a stream opens
    alice = team["alice"]
    cid, cust = api.start_chat("Hi")
    api.post(f"/api/chats/{cid}/join", alice, status=200)
    agent_frames, customer_frames = [], []
    readers = []
    for path, headers, out in (("/api/stream", alice, agent_frames),
                               (f"/api/widget/chats/{cid}/stream", cust, customer_frames)):
        opened = threading.Event()
        t = threading.Thread(target=_read_sse_socket, args=(port, path, headers, out, opened), daemon=True)
        t.start()
        readers.append((t, opened))
    started = time.monotonic()
    for _, opened in readers:
        assert opened.wait(LIVE)
    # both streams have sent what existed when they opened (alice's new_chat, the customer's
    # "Hi") and wait for a wake-up
    while time.monotonic() < started + LIVE and not (
            events([f for _, f in agent_frames]) and events([f for _, f in customer_frames])):
        time.sleep(0.01)

    # another thread posts while both streams are open: an agent's reply and a customer message
    posted = {}

    def post():
        posted["reply"] = time.monotonic()
        posted["reply_status"] = _request(port, "POST", f"/api/chats/{cid}/reply", alice, {"text": "Hello there"})[0]
        posted["message"] = time.monotonic()
        posted["message_status"] = _request(port, "POST", f"/api/widget/chats/{cid}/messages", cust,
                                            {"text": "Still there?"})[0]

    poster = threading.Thread(target=post)
    poster.start()
    poster.join(LIVE)
    for t, _ in readers:
        t.join(LIVE + 10)
        assert not t.is_alive()
    ended = time.monotonic()
    assert (posted["reply_status"], posted["message_status"]) == (201, 201)

    assert customer_frames[0][1] == {"status": 200, "type": "text/event-stream; charset=utf-8"}
    msgs = [(t, f) for t, f in customer_frames if f.get("event") == "message"]
    assert [f["data"]["text"] for _, f in msgs] == ["Hi", "Hello there", "Still there?"]
    notes = [(t, f) for t, f in agent_frames if f.get("event") == "notification"]
    assert [f["data"]["template"] for _, f in notes] == ["new_chat", "new_message"]

    # each event arrived while its stream was open, woken by the post: before the stream's
    # closing keepalive (a stream that is not woken only re-reads after that keepalive)
    for frames, (t_got, frame) in ((customer_frames, msgs[1]), (agent_frames, notes[1])):
        closing = [t for t, f in frames if f.get("comment") == "keepalive"]
        assert closing and t_got < closing[0], frame
        assert t_got < started + LIVE
    reply_delay = msgs[1][0] - posted["reply"]
    note_delay = notes[1][0] - posted["message"]
    record_property("reply_to_customer_stream_s", round(reply_delay, 4))
    record_property("message_to_agent_stream_s", round(note_delay, 4))
    print(f"delivery over a socket: reply -> customer stream {reply_delay * 1e3:.1f} ms, "
          f"customer message -> agent stream {note_delay * 1e3:.1f} ms (streams open {ended - started:.2f} s)")
