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
import signal
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
    # No libFuzzer timer (-timeout=0, no -max_total_time). A SIGALRM still kills some runs
    # after every input has been run and "Done 3000 in N second(s)" printed (exit -14, seen
    # under heavy load; ignoring SIGALRM in the target did not stop it: Python puts the
    # default action back at its finalization). Such a run found nothing: it counts as clean
    # when it printed "Done", reported no crash and left no crash/timeout/oom artifact. An
    # input that hangs fails by the subprocess timeout (TimeoutExpired).
    proc = subprocess.run([sys.executable, str(HERE / "fuzz_targets.py"), target, f"-atheris_runs={RUNS}",
                           "-rss_limit_mb=2048", "-timeout=0",
                           f"-artifact_prefix={tmp_path}/", str(corpus)],
                          capture_output=True, text=True, timeout=SECONDS + 120)
    output = proc.stdout + proc.stderr
    report = output[-4000:]
    artifacts = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-"))]
    assert not artifacts, f"atheris found a crash in {target} ({artifacts}):\n{report}"
    assert "Uncaught Python exception" not in output and "==ERROR" not in output, \
        f"atheris found a crash in {target}:\n{report}"
    finished = re.search(r"^Done \d+ ", output, re.M) is not None
    assert proc.returncode == 0 or (proc.returncode == -signal.SIGALRM and finished), \
        f"atheris ended with {proc.returncode} in {target}:\n{report}"


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
