"""What the defined funnels cost, this code and the previous release side by
side: ``funnel_rows`` and ``mart_rows`` of the packaged definitions over one
lake's whole silver, read once per process, in alternating rounds.

    python -m benchmarks.funnels --lake /tmp/funnel-bench/n1000000/lake [--baseline REF] [--rounds 5]

Gold runs the same two functions per shard of users; here the silver is one
shard, so the figure is the funnels' own work without the runner around it
(what ``make bench``'s gold time cannot separate from its noise). Each round
is a fresh process (``python -c`` in that tree's folder), timed from after
the read; fastest and median wall and CPU seconds are reported, and the two
trees' fact and mart row counts (equal unless a rule changed). Timings are
never asserted in tests; targets live in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks import baseline

# Runs in the tree being measured (its own modules), prints one JSON line.
_ROUND = """
import json, sys, time
from schemas import funnels
from schemas.tables import SILVER
from transforms.lake.tables import read_arrow
from transforms.rules.defined_funnels import funnel_rows, gold_inputs, mart_rows
from transforms.rules.gold import empty_inputs

lake, clock = sys.argv[1], int(sys.argv[2])
definitions = funnels.load()
g = empty_inputs(gold_inputs(definitions))
for name, empty in g.items():
    g[name] = read_arrow(lake, SILVER[name], columns=empty.schema.names).cast(empty.schema).combine_chunks()
wall, cpu = time.perf_counter(), time.process_time()
facts, entries = funnel_rows(definitions, g, clock)
mart = mart_rows(definitions, {name: [table] for name, table in entries.items()})
print(json.dumps({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                  "fact_rows": facts.num_rows, "mart_rows": mart.num_rows}))
"""


def one_round(tree: Path, lake: str, clock: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _ROUND, lake, str(clock)],
        cwd=tree,
        env=baseline.environment(tree),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"the funnels of {tree} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(rounds: list[dict]) -> dict:
    return {
        "fastest_wall_s": min(r["wall_s"] for r in rounds),
        "median_wall_s": statistics.median(r["wall_s"] for r in rounds),
        "fastest_cpu_s": min(r["cpu_s"] for r in rounds),
        "median_cpu_s": statistics.median(r["cpu_s"] for r in rounds),
        "fact_rows": rounds[0]["fact_rows"],
        "mart_rows": rounds[0]["mart_rows"],
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", required=True, help="a lake with silver (make bench leaves one per size)")
    parser.add_argument("--baseline", default=baseline.BASELINE, help="git ref of the previous release, or none")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clock", type=int, default=2**62, help="the gold run's clock, epoch micros")
    parser.add_argument("--workdir", default="/tmp/funnel-bench")
    parser.add_argument("--out", default=None, help="a JSON file for the results")
    args = parser.parse_args(argv)
    if not Path(args.lake, "silver").is_dir():
        raise SystemExit(f"{args.lake}: no silver/ folder (run make bench first, or give a lake)")
    trees = {"this": baseline.ROOT}
    if args.baseline != "none":
        other = baseline.worktree(args.baseline, Path(args.workdir))
        if other is not None:
            trees[args.baseline] = other
    rounds: dict[str, list[dict]] = {name: [] for name in trees}
    for number in range(args.rounds):
        order = list(trees) if number % 2 == 0 else list(reversed(trees))
        for name in order:
            rounds[name].append(one_round(trees[name], args.lake, args.clock))
            print(f"round {number + 1} {name}: {rounds[name][-1]['wall_s']:.2f} s", flush=True)
    report = {name: summary(r) for name, r in rounds.items()}
    if args.baseline in report:
        this, other = report["this"], report[args.baseline]
        for key in ("fastest_wall_s", "median_wall_s", "fastest_cpu_s", "median_cpu_s"):
            report[f"{key}_x"] = this[key] / other[key]
        print(
            f"funnels: {this['fastest_wall_s']:.2f} s against {other['fastest_wall_s']:.2f} s fastest "
            f"({report['fastest_wall_s_x']:.2f}x), median {report['median_wall_s_x']:.2f}x, "
            f"CPU {report['fastest_cpu_s_x']:.2f}x; rows {this['fact_rows']:,} / {this['mart_rows']:,} "
            f"against {other['fact_rows']:,} / {other['mart_rows']:,}"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
