"""Shared helpers for the benchmarks: timing, tables, the machine's description.

The machine these run on is shared and noisy (2 cores, other sessions' tests beside), so
every benchmark repeats its measurements in interleaved rounds and keeps the best (least
disturbed) time of each contender, and comparisons are made as ratios from one run.
Every measurement records both wall-clock time and the process's CPU time
(``time.process_time``): on a loaded machine the wall clock also counts the time other
tenants held the core, the CPU time does not. Figures and ratios use the CPU time (what
the code costs on an idle core); the wall time is shown beside it.
"""
from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/run.py` from a checkout without an install
    sys.path.insert(0, str(ROOT))


def machine() -> dict:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        model = platform.processor()
    return {
        "cores": os.cpu_count(),
        "cpu": model or "unknown",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
    }


class Clock:
    """Wall and CPU seconds of something timed."""

    __slots__ = ("wall", "cpu")

    def __init__(self, wall: float, cpu: float):
        self.wall, self.cpu = wall, cpu

    def __repr__(self):
        return f"Clock(wall={self.wall:.4f}, cpu={self.cpu:.4f})"


def timed(fn, *args, **kwargs):
    """(Clock, result) of one call, with the garbage collector paused while it runs."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        return Clock(time.perf_counter() - w0, time.process_time() - c0), result
    finally:
        if enabled:
            gc.enable()


def best_of(fn, rounds: int):
    """(best Clock, all Clocks, last result) of ``rounds`` calls; the best wall and the
    best CPU time are each the minimum over the rounds."""
    clocks, result = [], None
    for _ in range(rounds):
        c, result = timed(fn)
        clocks.append(c)
    return best(clocks), clocks, result


def best(clocks) -> Clock:
    return Clock(min(c.wall for c in clocks), min(c.cpu for c in clocks))


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_c(c: "Clock | None") -> str:
    """CPU time, with the wall time beside it."""
    if c is None:
        return "—"
    return f"{fmt_s(c.cpu)} (wall {fmt_s(c.wall)})"


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def table(headers, rows, title=None) -> str:
    """A Markdown table (readable in a terminal and pasteable into RESULTS.md)."""
    cells = [[str(c) for c in headers]] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    if title:
        lines.append(f"### {title}")
        lines.append("")
    for n, r in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")
