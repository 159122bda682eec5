"""Profile what the benchmarks measure, to find hot spots (cProfile; or run py-spy on it).

    python bench/hotspots.py conditions   # (B) chatflow's compiled conditions over 10,000 events
    python bench/hotspots.py day          # (C) 2,000 chats over a simulated day
    python bench/hotspots.py rules        # (A) parse + compile + lint of 1,000 rules
    python bench/hotspots.py yaml         # (A) load_yaml of the same rules

    py-spy record -r 500 -f raw -o out.txt -- python bench/hotspots.py day --no-cprofile

Prints the functions with the most time of their own, then by cumulative time.
"""
from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402,F401


def conditions():
    import bench_engine as B

    rules, events = B.generate_rules(), B.generate_events(10_000)
    index, inputs, _ = B.setup_chatflow(rules, events)
    return lambda: B.run_loop(index, inputs)


def day():
    import bench_sim as S
    from engine.core import Engine

    ruleset, steps = S.load_rules(), S.day_steps(2_000)

    def go():
        driver = S.Driver(Engine(ruleset, S.make_world()))
        for t, _, c, step in steps:
            driver.apply(t, f"c{c}", step)
        driver.until(math.inf)
    return go


def rules():
    import bench_rules as R
    from dsl.compiler import compile_files
    from dsl.lint import lint
    from dsl.parser import grammar, parse

    grammar()
    text = R.generate(1000)
    return lambda: lint(compile_files([parse(text, "bench.rules")]).ruleset)


def yaml():
    import bench_rules as R
    from dsl.parser import grammar, parse
    from dsl.yaml_form import dump_yaml, load_yaml

    grammar()
    text = dump_yaml(parse(R.generate(1000), "bench.rules"))
    return lambda: load_yaml(text, "bench.yaml")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("conditions", "day", "rules", "yaml"))
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--no-cprofile", action="store_true", help="just run it (for py-spy)")
    a = p.parse_args(argv)
    fn = globals()[a.what]()
    if a.no_cprofile:
        fn()
        return
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(a.top)
    stats.sort_stats("cumtime").print_stats(a.top)


if __name__ == "__main__":
    main()
