"""Coverage-guided fuzzing (atheris) of the text inputs: a rule file, a YAML rule file, a
scenario file and an inbound email. Each target takes bytes and must end in a result or
in the stage's own located error (a ChatflowError); any other exception is a crash,
which atheris reports with the input that caused it.

    python tests/fuzz/fuzz_targets.py rules -atheris_runs=5000 [-max_total_time=S] [CORPUS]

Run by tests/fuzz/test_atheris.py, seeded with the shipped files.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def seeds(target: str) -> list[Path]:
    """The shipped files a target's corpus starts from."""
    if target == "rules":
        return [ROOT / "rules" / "default.rules", ROOT / "rules" / "examples" / "routing.rules"]
    if target == "yaml":
        return [ROOT / "rules" / "examples" / "routing.yaml"]
    if target == "scenario":
        return sorted((ROOT / "tests" / "scenarios").glob("*.yaml"))[:8]
    if target == "email":
        return sorted((ROOT.parent / "shared" / "data" / "email-replies").glob("**/*.eml"))[:8]
    raise SystemExit(f"unknown target {target!r}")


def rules(data: bytes) -> None:
    from dsl.errors import ChatflowError
    from dsl.loader import load_rule_set

    try:
        load_rule_set([], defaults=False, texts={"fuzz.rules": data.decode("utf-8", "replace")})
    except ChatflowError:
        pass


def yaml_rules(data: bytes) -> None:
    from dsl.errors import ChatflowError
    from dsl.loader import load_rule_set

    try:
        load_rule_set([], defaults=False, texts={"fuzz.yaml": data.decode("utf-8", "replace")})
    except ChatflowError:
        pass


_SCENARIO = os.path.join(tempfile.gettempdir(), f"chatflow-fuzz-{os.getpid()}.yaml")


def scenario(data: bytes) -> None:
    from dsl.errors import ChatflowError
    from engine.scenario import load_scenario

    with open(_SCENARIO, "wb") as f:
        f.write(data)
    try:
        load_scenario(_SCENARIO)
    except ChatflowError:
        pass


def email(data: bytes) -> None:
    from server.email_reply import InboundEmailError, parse_inbound

    try:
        parse_inbound(data)
    except InboundEmailError:
        pass


TARGETS = {"rules": rules, "yaml": yaml_rules, "scenario": scenario, "email": email}


def main() -> None:
    import atheris

    target = sys.argv.pop(1)
    fn = TARGETS[target]
    with atheris.instrument_imports(include=["dsl", "engine", "server"]):
        import dsl.loader  # noqa: F401
        import engine.scenario  # noqa: F401
        import server.email_reply  # noqa: F401
    atheris.Setup(sys.argv, fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
