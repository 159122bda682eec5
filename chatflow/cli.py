"""The ``chatflow`` command: check, lint, fmt for rule repositories; test and dry-run for
scenarios; serve/worker/scheduler for the service.

Exit codes follow promtool and ruff: 0 clean, 1 findings or failures, 2 usage errors.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path

from dsl.errors import ChatflowError, SourceError

VERSION = "0.1.0"


def _color(stream) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _add_rule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="rule files (.rules, .yaml) or folders of them")
    p.add_argument("--no-defaults", action="store_true", help="do not load rules/default.rules first")
    p.add_argument("--format", choices=("text", "json", "sarif", "github"), default="text",
                   help="output format (default: text)")
    p.add_argument("--max-errors", type=int, default=None, metavar="N", help="print at most N findings")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatflow", description="Rules-driven live-chat support.")
    parser.add_argument("--version", action="version", version=f"chatflow {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("check", help="parse and compile rule files; report errors")
    _add_rule_args(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("lint", help="check, plus warnings for rules that are likely wrong")
    _add_rule_args(p)
    p.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("fmt", help="print rule files in canonical layout, or convert them")
    p.add_argument("paths", nargs="+", metavar="PATH")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-w", "--write", action="store_true", help="write the result back to the files")
    mode.add_argument("--check", action="store_true", help="exit 1 if a file is not formatted")
    mode.add_argument("--diff", action="store_true", help="print a unified diff instead")
    p.add_argument("--to", choices=("rules", "yaml"), default=None,
                   help="convert to this form (with -w, writes FILE.rules / FILE.yaml beside the original)")
    p.set_defaults(func=cmd_fmt)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands():
    """Subcommands that live with the engine and the server (imported lazily: the rule
    tools must work without them)."""
    out = []
    try:
        from chatflow.scenario_cli import register as scenario_register
        out.append(scenario_register)
    except ImportError:
        pass
    try:
        from chatflow.serve_cli import register as serve_register
        out.append(serve_register)
    except ImportError:
        pass
    try:
        from chatflow.report_cli import register as report_register
        out.append(report_register)
    except ImportError:
        pass
    return out


def _load(args):
    from dsl.loader import load_rule_set

    return load_rule_set(args.paths, defaults=not args.no_defaults)


def _emit(args, diagnostics, loaded, failed: bool) -> int:
    from chatflow import report

    diagnostics = sorted(diagnostics, key=report.sort_key)
    shown = diagnostics[: args.max_errors] if args.max_errors is not None else diagnostics
    n_files = len(loaded.sources)
    n_rules = len(loaded.ruleset.rules) if loaded.ruleset is not None else None
    if args.format == "json":
        print(report.render_json(shown, n_files, n_rules))
    elif args.format == "sarif":
        print(report.render_sarif(shown, VERSION))
    elif args.format == "github":
        if shown:
            print(report.render_github(shown))
    else:
        if shown:
            print(report.render_text(shown, loaded.sources, _color(sys.stdout)))
            print()
        if len(shown) < len(diagnostics):
            print(f"... {len(diagnostics) - len(shown)} more not shown (--max-errors {args.max_errors})")
        errors = sum(d.severity == "error" for d in diagnostics)
        print(report.summary_line(errors, len(diagnostics) - errors, n_files, n_rules))
    return 1 if failed else 0


def cmd_check(args) -> int:
    from dsl.lint import apply_ignores

    loaded = _load(args)
    errors = [d for d in loaded.diagnostics if d.severity == "error"]
    errors = apply_ignores(errors, loaded.files)
    return _emit(args, errors, loaded, failed=bool(errors))


def cmd_lint(args) -> int:
    from dsl.lint import apply_ignores, lint

    loaded = _load(args)
    findings = list(loaded.diagnostics)
    if loaded.ruleset is not None:
        findings += lint(loaded.ruleset)
    # lint shows the warnings of the user's files, not of the shipped defaults it loaded
    from dsl.compiler import is_default_file

    findings = [d for d in findings if d.severity == "error" or not is_default_file(d.span.path)]
    findings = apply_ignores(findings, loaded.files)
    errors = any(d.severity == "error" for d in findings)
    return _emit(args, findings, loaded, failed=errors or (args.strict and bool(findings)))


def cmd_fmt(args) -> int:
    from dsl.loader import expand_paths, parse_source
    from dsl.parser import decode_source

    status = 0
    for path in expand_paths(args.paths):
        text = None  # this file's text, once read (a previous file's must not be shown)
        try:
            text = decode_source(str(path), path.read_bytes())
            rf = parse_source(text, str(path))
        except OSError as e:
            print(f"{path}:1:1: file_error cannot read file: {e.strerror}", file=sys.stderr)
            status = 1
            continue
        except SourceError as e:
            for d in e.diagnostics:
                print(d.render(text), file=sys.stderr)
            status = 1
            continue
        form = args.to or ("yaml" if path.suffix in (".yaml", ".yml") else "rules")
        out = _format(rf, form)
        target = path if form == _form_of(path) else path.with_suffix(".yaml" if form == "yaml" else ".rules")
        if args.check:
            if out != text or target != path:
                print(f"would reformat {path}" if target == path else f"would convert {path} to {target}")
                status = 1
        elif args.diff:
            if out != text:
                sys.stdout.writelines(difflib.unified_diff(
                    text.splitlines(True), out.splitlines(True), str(path), str(target)))
                status = 1 if target == path else status
        elif args.write:
            if out != (target.read_text() if target.exists() else None):
                target.write_text(out, encoding="utf-8")
                print(f"{'reformatted' if target == path else 'wrote'} {target}", file=sys.stderr)
        else:
            sys.stdout.write(out)
    return status


def _form_of(path: Path) -> str:
    return "yaml" if path.suffix in (".yaml", ".yml") else "rules"


def _format(rf, form: str) -> str:
    if form == "yaml":
        from dsl.yaml_form import dump_yaml

        return dump_yaml(rf)
    from dsl.formatter import format_rules

    return format_rules(rf)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return 130
    except ChatflowError as e:  # an expected failure that escaped a command: say it plainly
        print(f"chatflow: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
