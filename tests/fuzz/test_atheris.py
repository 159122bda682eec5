"""Coverage-guided fuzzing with atheris, bounded: each target of fuzz_targets.py runs in
its own process for a fixed number of inputs (CHATFLOW_ATHERIS_RUNS, default 3,000; it
fails if they take more than CHATFLOW_ATHERIS_SECONDS + 120 s), from a corpus seeded with the shipped
files. A crash fails the test with atheris's report (the exception and the input).
Without atheris installed (it ships wheels for Linux only) the test is skipped; the
hypothesis fuzz tests cover the same inputs.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

HERE = Path(__file__).resolve().parent
RUNS = int(os.environ.get("CHATFLOW_ATHERIS_RUNS", "3000"))
SECONDS = int(os.environ.get("CHATFLOW_ATHERIS_SECONDS", "8"))

sys.path.insert(0, str(HERE))
from fuzz_targets import TARGETS, seeds  # noqa: E402


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_atheris_finds_no_crash(target, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(seeds(target)):
        shutil.copy(seed, corpus / f"seed{i}")
    # No libFuzzer timer (-timeout=0, no -max_total_time). A SIGALRM from outside our code
    # still reaches some runs under heavy load: after "Done 3000 …" it kills the process
    # (exit -14); during the runs libFuzzer takes it for a deadly signal and saves the
    # input as a crash. A crash counts when atheris saw an uncaught exception, or when a
    # saved input makes the target fail again on its own (the parsers are deterministic).
    # An input that hangs fails by the subprocess timeout (TimeoutExpired).
    proc = subprocess.run([sys.executable, str(HERE / "fuzz_targets.py"), target, f"-atheris_runs={RUNS}",
                           "-rss_limit_mb=2048", "-timeout=0",
                           f"-artifact_prefix={tmp_path}/", str(corpus)],
                          capture_output=True, text=True, timeout=SECONDS + 120)
    output = proc.stdout + proc.stderr
    report = output[-4000:]
    assert "Uncaught Python exception" not in output, f"atheris found a crash in {target}:\n{report}"
    saved = sorted(p for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-")))
    again = {p.name: _replay(target, p) for p in saved}
    failing = {name: out for name, out in again.items() if out is not None}
    assert not failing, f"atheris found a crash in {target}: {failing}\n{report}"
    assert proc.returncode == 0 or saved or re.search(r"^Done \d+ ", output, re.M), \
        f"atheris ended with {proc.returncode} in {target}:\n{report}"


def _replay(target: str, path) -> str | None:
    """The target run once on a saved input: None if it passes, else its report."""
    r = subprocess.run([sys.executable, str(HERE / "fuzz_targets.py"), target, "-timeout=0", str(path)],
                       capture_output=True, text=True, timeout=120)
    return None if r.returncode == 0 else (r.stdout + r.stderr)[-2000:]


def test_scenario_loader_refuses_a_control_character(tmp_path):
    from dsl.errors import ChatflowError
    from engine.scenario import load_scenario

    path = tmp_path / "nul.yaml"
    path.write_bytes(b"name: x\x00\n")
    with pytest.raises(ChatflowError):
        load_scenario(path)


def test_scenario_loader_refuses_a_collection_as_a_key(tmp_path):
    from dsl.errors import ChatflowError
    from engine.scenario import load_scenario

    path = tmp_path / "key.yaml"
    path.write_text("{[1]: 2}\n")
    with pytest.raises(ChatflowError):
        load_scenario(path)
