"""``chatflow serve``: the HTTP API, the engine and its deadlines in one process, on a
SQLite file by default (``DATABASE_URL`` for PostgreSQL)."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the service (embedded: SQLite, engine and deadlines in-process)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--rules", nargs="*", default=[], metavar="PATH",
                   help="rule files or folders added to rules/default.rules")
    p.add_argument("--no-defaults", action="store_true", help="do not load rules/default.rules")
    p.add_argument("--data-dir", default=None, help="where the SQLite file, maildir and secret live (default: var/)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from server.app import create_app, settings_from_env

    config = settings_from_env()
    config.update(RULES=tuple(args.rules), RULE_DEFAULTS=not args.no_defaults)
    if args.data_dir:
        config["DATA_DIR"] = args.data_dir
    app = create_app(config)
    token = app.config.get("ADMIN_TOKEN_CREATED")
    where = app.config.get("DATABASE_URL") or f"SQLite in {app.config['DATA_DIR']}/"
    print(f"chatflow serving on http://{args.host}:{args.port} ({where}; deadlines in-process)", file=sys.stderr)
    if token:
        print(f"admin token (shown once; set CHATFLOW_ADMIN_TOKEN to choose it): {token}", file=sys.stderr)
    from werkzeug.serving import run_simple

    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)
    return 0
