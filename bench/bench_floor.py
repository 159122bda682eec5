"""(D-floor) What one HTTP request and one round trip cost on this machine, whatever the
application does: the floor under target (a), "≥ 1,000 customer messages per second through
gunicorn into PostgreSQL on this 2-core machine".

    python bench/run.py --only floor            # ~2 min; --quick ~1 min

The same client as (D-a) (16 threads, one keep-alive connection each, http.client) posts
the same body to the same path of four servers, each gunicorn gthread 2×16 (README's line),
in rotation, round after round:

  bare       a ten-line WSGI function: reads the body, answers 201 (gunicorn alone)
  flask      a Flask app with that one route: parses the JSON, answers with jsonify
  refused    chatflow's app; the body fails its JSON Schema, so it answers 400 before any
             database work (chatflow's request path without the command)
  message    chatflow's app with 2 `chatflow worker`s: a real customer message (D-a)

For each: requests per second, the server's CPU per request (its process tree), the
client's CPU per request (this process), and for ``message`` the worker's too. A request
the machine serves costs at least server + client CPU; two cores give 2,000 ms of CPU a
second, so 2,000 / (server + client ms) is what the machine could serve if it did nothing
else — the "ceiling" column. Round trips (psycopg ``SELECT 1`` over TCP and the Unix
socket, Redis ``PING``) are timed the same way: CPU µs of the client per round trip.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_service as B  # noqa: E402

PATH = "/api/widget/chats/{cid}/messages"
BODY = {"text": "is anyone there?"}


# ---------------------------------------------------------------- the two plain servers

def bare_app(environ, start_response):
    """gunicorn's floor: read the body, answer 201 with a small JSON body."""
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    body = b'{"ok": true}'
    start_response("201 CREATED", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def flask_app():
    """Flask's floor: one route, the JSON body parsed, a JSON answer."""
    from flask import Flask, jsonify, request

    app = Flask("floor")

    @app.post("/api/widget/chats/<cid>/messages")
    def post(cid):
        return jsonify({"chat": cid, "text": request.get_json()["text"]}), 201

    return app


# ---------------------------------------------------------------- measuring

def _serve(env, kind: str, port: int) -> subprocess.Popen:
    if kind in ("refused", "message"):
        return env.gunicorn(port, 2, 16)  # chatflow's app, every process booted
    spec = {"bare": "bench_floor:bare_app", "flask": "bench_floor:flask_app()"}[kind]
    p = env.start([str(B.BIN / "gunicorn"), "--pythonpath", str(B.ROOT / "bench"), "-k", "gthread", "-w", "2",
                   "--threads", "16", "-b", f"127.0.0.1:{port}", "--keep-alive", "5", "--log-level", "warning",
                   spec], kind)
    deadline = time.monotonic() + 60
    for _ in range(8):  # both processes answer (any path does)
        while True:
            try:
                c = B.Client(port)
                c.call("GET", "/")
                c.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"bench_floor: {spec} did not start")
                time.sleep(0.1)
    return p


def _booted(procs, seconds: float = 30.0) -> None:
    """Wait until the processes' CPU stops growing (imports and start-up over), so what is
    measured next is their work, not their boot."""
    deadline = time.monotonic() + seconds
    last = sum(B.proc_cpu(p.pid) for p in procs)
    while procs and time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(B.proc_cpu(p.pid) for p in procs)
        if now - last < 0.02:
            return
        last = now


def _load(port, items, body, seconds, expect) -> dict:
    cpu0 = time.process_time()
    res, wall = B.run_threads(16, items, lambda c, item: c.call("POST", PATH.format(cid=item[0]), body, item[1])[0],
                              seconds, port)
    client = time.process_time() - cpu0
    ok = sum(1 for _, _, status in res if status == expect)
    return {"ok": ok, "sent": len(res), "wall": wall, "client_cpu": client}


def measure(env, kind: str, seconds: float, chats=None, db=None) -> dict:
    port = B.free_port()
    web = _serve(env, kind, port)
    workers = env.workers(2) if kind == "message" else []
    _booted(workers)
    try:
        items = [(c, h) for c, h in chats] if chats else [("c1", {})]
        items = [items[i % len(items)] for i in range(200_000)]
        body, expect = (BODY, 201) if kind != "refused" else ({"text": 5}, 400)
        web0, w0 = B.tree_cpu(web.pid), sum(B.proc_cpu(p.pid) for p in workers)
        busy0 = B.machine_busy()
        r = _load(port, items, body, seconds, expect)
        busy = B.busy_share(busy0, B.machine_busy())
        r["server_cpu"] = B.tree_cpu(web.pid) - web0
        if workers:
            drained = B.wait_outbox_empty(db, 120)
            r["worker_cpu"] = sum(B.proc_cpu(p.pid) for p in workers) - w0
            r["drained"] = drained
        r["busy"] = busy
        return r
    finally:
        env.stop([web] + workers)


def round_trips(env, n: int = 3000) -> dict:
    import psycopg
    from redis import Redis

    out = {}
    for label, url in (("PostgreSQL SELECT 1, TCP 127.0.0.1", env.pg_url),
                       ("PostgreSQL SELECT 1, Unix socket", _unix_url(env.pg_url))):
        if url is None:
            continue
        try:
            conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error:
            continue
        with conn:
            c0 = time.process_time()
            w0 = time.perf_counter()
            for _ in range(n):
                conn.execute("SELECT 1").fetchone()
            out[label] = (1e6 * (time.process_time() - c0) / n, 1e6 * (time.perf_counter() - w0) / n)
    r = Redis.from_url(B.REDIS_URL)
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        r.ping()
    out["Redis PING, TCP 127.0.0.1"] = (1e6 * (time.process_time() - c0) / n, 1e6 * (time.perf_counter() - w0) / n)
    r.close()
    return out


def _unix_url(url: str) -> str | None:
    """The same database through PostgreSQL's Unix socket, when the default one exists."""
    for d in ("/var/run/postgresql", "/tmp"):
        if any(n.startswith(".s.PGSQL.") for n in (os.listdir(d) if os.path.isdir(d) else ())):
            user_db = url.split("://", 1)[1].split("@", 1)
            user = user_db[0] if len(user_db) == 2 else ""
            name = url.rsplit("/", 1)[1]
            return f"postgresql://{user}@/{name}?host={d}"
    return None


def run(quick: bool = False, log=print) -> dict:
    seconds, rounds = (5.0, 1) if quick else (10.0, 2)
    env = B.Env(log)
    try:
        env.prepare()
        db = env.db()
        port = B.free_port()
        web = env.gunicorn(port, 2, 16)
        B._create_agents(port, ["alice"])
        log("  (floor) starting 300 chats")
        chats, _, _ = B._start_chats(port, 300, 16, 120)
        env.stop([web])
        B.wait_outbox_empty(db, 120)
        rows = {k: [] for k in ("bare", "flask", "refused", "message")}
        for rnd in range(rounds):
            for kind in rows:
                log(f"  (floor) round {rnd + 1}: {kind}, {seconds:.0f} s")
                rows[kind].append(measure(env, kind, seconds, chats=chats, db=db))
        return {"rows": rows, "round_trips": round_trips(env), "seconds": seconds, "rounds": rounds,
                "load": os.getloadavg()}
    finally:
        env.close()


_WHAT = {"bare": "gunicorn + a 10-line WSGI function", "flask": "gunicorn + Flask, one JSON route",
         "refused": "chatflow's app, body refused by its schema (400, no database)",
         "message": "chatflow: a customer message (201), 2 workers"}


def render(res: dict) -> str:
    lines = [f"### (D-floor) One request's and one round trip's cost on this machine (gunicorn gthread 2×16, "
             f"the (D-a) client: 16 threads; {res['rounds']} round(s) of {res['seconds']:.0f} s each, servers in rotation)",
             "",
             "| server | round | answered | req/s | server CPU / req | worker CPU / req | client CPU / req "
             "| ceiling on 2 cores (2,000 ms ÷ all CPU per req) | machine busy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, runs in res["rows"].items():
        for i, r in enumerate(runs):
            ok = max(1, r["ok"])
            server, client = 1e3 * r["server_cpu"] / ok, 1e3 * r["client_cpu"] / ok
            worker = 1e3 * r["worker_cpu"] / ok if "worker_cpu" in r else 0.0
            ceiling = 2000.0 / (server + client + worker)
            lines.append(f"| {_WHAT[kind]} | {i + 1} | {r['ok']:,} of {r['sent']:,} | {r['ok'] / r['wall']:.0f} "
                         f"| {server:.2f} ms | {worker:.2f} ms | {client:.2f} ms | {ceiling:.0f}/s "
                         f"| {100 * r['busy']:.0f} % |")
    lines += ["", "| round trip (client's side) | CPU per round trip | wall per round trip |", "|---|---|---|"]
    for label, (cpu, wall) in res["round_trips"].items():
        lines.append(f"| {label} | {cpu:.0f} µs | {wall:.0f} µs |")
    lines += ["", "The ceiling leaves out PostgreSQL's and Redis's own CPU (the 'machine busy' column "
              "counts them): it is an upper bound."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(run(quick="--quick" in sys.argv, log=lambda m: print(m, file=sys.stderr))))
