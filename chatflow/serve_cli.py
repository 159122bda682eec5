"""``chatflow serve``: the HTTP API, the engine and its deadlines in one process, on a
SQLite file by default (``DATABASE_URL`` for PostgreSQL)."""
from __future__ import annotations

import sys
import time


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the service (embedded: SQLite, engine and deadlines in-process)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--rules", nargs="*", default=[], metavar="PATH",
                   help="rule files or folders added to rules/default.rules")
    p.add_argument("--no-defaults", action="store_true", help="do not load rules/default.rules")
    p.add_argument("--data-dir", default=None, help="where the SQLite file, maildir and secret live (default: var/)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="scaled mode: run the rules for chats (RQ worker; needs REDIS_URL)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--rules", nargs="*", default=[], metavar="PATH")
    p.add_argument("--no-defaults", action="store_true")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("scheduler", help="scaled mode: claim due deadlines and relay the outbox (run one)")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between rounds (default 0.25)")
    p.add_argument("--rules", nargs="*", default=[], metavar="PATH")
    p.add_argument("--no-defaults", action="store_true")
    p.set_defaults(func=cmd_scheduler)

    p = sub.add_parser("smtpd", help="receive customers' email answers over SMTP (reply+CHAT.SIG@EMAIL_DOMAIN only)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=2525, help="port to listen on (default 2525)")
    p.add_argument("--data-dir", default=None, help="embedded mode: the DATA_DIR `chatflow serve` uses (default: var/)")
    p.set_defaults(func=cmd_smtpd)


def _scaled_runtime(args):
    from server.app import make_runtime, make_settings, settings_from_env

    config = settings_from_env()
    if not config.get("REDIS_URL"):
        print("chatflow: set REDIS_URL (and DATABASE_URL) for scaled mode", file=sys.stderr)
        raise SystemExit(2)
    config.update(RULES=tuple(args.rules), RULE_DEFAULTS=not args.no_defaults)
    settings = make_settings(config)
    return settings, make_runtime(settings)


def cmd_worker(args) -> int:
    from rq import SimpleWorker

    from server import jobs
    from server.app import tune_gc

    settings, runtime = _scaled_runtime(args)
    redis = jobs.make_redis(settings["REDIS_URL"])
    runtime.listeners.append(jobs.redis_publisher(redis, jobs.live_channel(settings)))
    jobs.set_runtime(runtime)
    queue = jobs.make_queue(settings, redis)
    hooks = jobs.webhook_queue(settings, redis)
    jobs.hand_webhooks_to(runtime, hooks)
    runtime.ruleset()
    tune_gc()
    # SimpleWorker runs jobs in this process: no fork per job, the compiled rules stay warm.
    # RQ's loop ends with Redis's ConnectionError when Redis goes away; the worker waits
    # and starts a new loop (jobs whose results were lost are in the outbox: relayed).
    from redis.exceptions import ConnectionError as RedisDown, TimeoutError as RedisSlow

    pause = 1.0
    while True:
        try:  # a new worker talks to Redis at once (it names its connection)
            # the rules' queue first: webhook posts wait while chats do
            worker = SimpleWorker([queue, hooks], connection=redis, serializer=queue.serializer)
            worker.work(burst=args.burst, with_scheduler=False)
            return 0
        except (RedisDown, RedisSlow) as e:
            print(f"chatflow worker: Redis unreachable ({type(e).__name__}); retrying in {pause:.0f} s",
                  file=sys.stderr, flush=True)
            time.sleep(pause)
            pause = min(pause * 2, 15.0)


def cmd_scheduler(args) -> int:
    from server import jobs
    from server.app import tune_gc
    from server.scheduler import Scheduler

    settings, runtime = _scaled_runtime(args)
    queue = jobs.make_queue(settings)
    tune_gc()
    print("chatflow scheduler: claiming deadlines and relaying the outbox", file=sys.stderr)
    Scheduler(runtime, queue, webhook_queue=jobs.webhook_queue(settings, queue.connection)).run(interval=args.interval)
    return 0


def cmd_serve(args) -> int:
    from server.app import create_app, settings_from_env, tune_gc

    config = settings_from_env()
    config.update(RULES=tuple(args.rules), RULE_DEFAULTS=not args.no_defaults)
    if args.data_dir:
        config["DATA_DIR"] = args.data_dir
    app = create_app(config)
    tune_gc()
    token = app.config.get("ADMIN_TOKEN_CREATED")
    where = app.config.get("DATABASE_URL") or f"SQLite in {app.config['DATA_DIR']}/"
    print(f"chatflow serving on http://{args.host}:{args.port} ({where}; deadlines in-process)", file=sys.stderr)
    if token:
        print(f"admin token (shown once; set CHATFLOW_ADMIN_TOKEN to choose it): {token}", file=sys.stderr)
    from werkzeug.serving import run_simple

    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)
    return 0


def cmd_smtpd(args) -> int:
    import threading

    from server.app import make_runtime, make_settings, settings_from_env
    from server.smtpd import make_controller

    config = settings_from_env()
    if args.data_dir:
        config["DATA_DIR"] = args.data_dir
    # the rule set is the one `chatflow serve` (or the admin API) activated in the database
    settings = make_settings(config)
    runtime = make_runtime(settings)
    if settings.get("REDIS_URL"):  # scaled: the workers run the rules, as for web processes
        from server import jobs

        redis = jobs.make_redis(settings["REDIS_URL"])
        runtime.dispatch = jobs.enqueue_dispatch(jobs.make_queue(settings, redis), linger=settings["DISPATCH_LINGER"])
    controller = make_controller(runtime, settings, args.host, args.port)
    controller.start()
    print(f"chatflow smtpd on {args.host}:{args.port}: answers to reply+CHAT.SIGNATURE@{settings['EMAIL_DOMAIN']}",
          file=sys.stderr)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
    return 0
