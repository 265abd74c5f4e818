"""Batch benchmark: backfill + gold end to end at several sizes.

    python -m benchmarks.run [--sizes 250000,1000000,4000000] [--workdir DIR] [--out benchmarks/results]

For each size it generates raw data (not timed), then runs ``pipelines.backfill``
and ``pipelines.gold_daily`` as separate processes on ``FnApiRunner`` (one
worker, see ``worker_args``), and records per step and in total: wall time,
raw records per second, CPU seconds per million records and peak resident
memory. It writes ``results.json`` and ``scaling.png`` (time and memory
against size) to ``--out`` and prints a table.

Then it runs the independent DuckDB reference (``benchmarks.reference``) over
the same landing files, reports the time ratio (pipeline / reference) and
compares every gold table of the two: any difference is printed and fails the
benchmark (exit status 1).

Timings are never asserted in tests; targets live in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import reference
from pipelines import generate

RECORDS_PER_USER_WEEK = 14.8  # what the generator produces per user over 7 days

# One worker by default: at 4M records FnApiRunner's multi_processing mode
# (2 workers) silently dropped 1-11% of the rows of the session join in two
# of two runs, which the differential check caught (BENCHMARKS.md). One
# worker is exact at every size; --workers 2 reproduces the finding.
def worker_args(workers: int) -> list[str]:
    if workers == 1:
        return []
    return [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]


# Runs the command from a fresh process, so CPU time and the largest single
# process's peak RSS (both from getrusage) belong to this command alone. The
# peak of the whole process tree (runner plus its worker processes) is sampled
# from /proc every 0.1 s: that is the memory the machine must have.
_WRAPPER = """
import json, os, resource, subprocess, sys, time

def tree_rss_kib(root):
    children = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(pid))
        except (OSError, IndexError, ValueError):
            pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except OSError:
            pass
    return total

job = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
peak = 0
while job.poll() is None:
    peak = max(peak, tree_rss_kib(job.pid))
    time.sleep(0.1)
if job.returncode:
    sys.exit(f"{sys.argv[1:]} failed with exit status {job.returncode}")
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"cpu_s": u.ru_utime + u.ru_stime, "tree_peak_kib": peak, "largest_process_kib": u.ru_maxrss}))
"""


def _measured(command: list[str]) -> dict:
    """Wall seconds, CPU seconds and peak memory of a command and its worker processes."""
    started = time.time()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *command], check=True, capture_output=True, text=True)
    wall = time.time() - started
    usage = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "cpu_s": round(usage["cpu_s"], 2),
            "peak_rss_mib": round(max(usage["tree_peak_kib"], usage["largest_process_kib"]) / 1024, 1),
            "largest_process_rss_mib": round(usage["largest_process_kib"] / 1024, 1)}


def run_size(size: int, workdir: Path, extra_args: list[str]) -> dict:
    landing, lake = workdir / f"n{size}" / "landing", workdir / f"n{size}" / "lake"
    reference_gold = workdir / f"n{size}" / "reference_gold"
    users = max(1, round(size / RECORDS_PER_USER_WEEK))
    manifest = generate.generate(generate.Config(users=users, days=7, seed=1), str(landing))
    records = manifest["records_total"]
    python = sys.executable
    steps = {
        "backfill": _measured([python, "-m", "pipelines.backfill", "--input", str(landing / "*.jsonl"),
                               "--lake", str(lake), *extra_args]),
        "gold_daily": _measured([python, "-m", "pipelines.gold_daily", "--lake", str(lake), *extra_args]),
    }
    wall = sum(s["wall_s"] for s in steps.values())
    cpu = sum(s["cpu_s"] for s in steps.values())
    ref = _measured([python, "-m", "benchmarks.reference", "--input", str(landing / "*.jsonl"),
                     "--out", str(reference_gold)])
    compared = reference.compare_gold(lake, reference_gold)
    return {"size": size, "records": records, "steps": steps, "wall_s": round(wall, 2),
            "records_per_s": round(records / wall), "cpu_s_per_million": round(cpu / records * 1e6, 1),
            "peak_rss_mib": max(s["peak_rss_mib"] for s in steps.values()),
            "reference": {**ref, "records_per_s": round(records / ref["wall_s"]),
                          "time_ratio": round(wall / ref["wall_s"], 2)},
            "gold_rows": {name: r["rows"] for name, r in compared.items()},
            "differences": reference.differences(compared)}


def growth(results: list[dict]) -> list[dict]:
    """How time and memory grow from one size to the next, against the data."""
    out = []
    for a, b in zip(results, results[1:]):
        out.append({"from": a["records"], "to": b["records"], "data_x": round(b["records"] / a["records"], 2),
                    "time_x": round(b["wall_s"] / a["wall_s"], 2),
                    "memory_x": round(b["peak_rss_mib"] / a["peak_rss_mib"], 2)})
    return out


def chart(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r["records"] / 1e6 for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(records, [r["wall_s"] for r in results], marker="o", label="Beam pipelines (backfill + gold)")
    left.plot(records, [r["reference"]["wall_s"] for r in results], marker="o", color="#9bbb59",
              label="DuckDB SQL reference")
    left.set_xlabel("raw records (millions)")
    left.set_ylabel("wall time, raw to gold (s)")
    left.legend()
    right.plot(records, [r["peak_rss_mib"] / 1024 for r in results], marker="o", color="#c0504d")
    right.axhline(3, linestyle="--", color="grey", label="target at 4M records: 3 GiB")
    right.set_xlabel("raw records (millions)")
    right.set_ylabel("peak resident memory (GiB)")
    right.legend()
    for ax in (left, right):
        ax.set_ylim(bottom=0)
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(results: list[dict]) -> str:
    lines = [f"{'records':>10} {'wall s':>8} {'rec/s':>8} {'CPU s/M':>8} {'peak MiB':>9}  {'backfill / gold s':>17}"
             f"  {'reference s':>11} {'ratio':>6}  gold identical"]
    for r in results:
        steps = f"{r['steps']['backfill']['wall_s']} / {r['steps']['gold_daily']['wall_s']}"
        lines.append(f"{r['records']:>10,} {r['wall_s']:>8} {r['records_per_s']:>8,} {r['cpu_s_per_million']:>8} "
                     f"{r['peak_rss_mib']:>9}  {steps:>17}  {r['reference']['wall_s']:>11} "
                     f"{r['reference']['time_ratio']:>6}  {'yes' if not r['differences'] else 'NO'}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="250000,1000000,4000000", help="raw records per run, comma-separated")
    parser.add_argument("--workdir", default="/tmp/funnel-bench")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--workers", type=int, default=1,
                        help="FnApiRunner worker processes (default 1; 2 loses rows at 4M, see BENCHMARKS.md)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    out, workdir = Path(args.out), Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for size in sizes:
        print(f"size {size:,}: generating and running backfill + gold ...", flush=True)
        results.append(run_size(size, workdir, worker_args(args.workers)))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    report = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
              "runner": f"FnApiRunner, {args.workers} worker process{'es' if args.workers > 1 else ''}",
              "results": results, "growth": growth(results)}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    chart(results, out / "scaling.png")
    print("\n" + table(results))
    for g in report["growth"]:
        print(f"{g['from']:,} -> {g['to']:,} records: data x{g['data_x']}, time x{g['time_x']}, "
              f"memory x{g['memory_x']}")
    print(f"\nresults: {out / 'results.json'}, chart: {out / 'scaling.png'}")
    for r in results:
        if r["differences"]:
            print(f"\nDIFFERENTIAL CHECK FAILED at {r['records']:,} records: pipeline and reference gold differ",
                  *r["differences"], sep="\n")
    return report


def cli(argv=None) -> int:
    report = main(argv)
    return 1 if any(r["differences"] for r in report["results"]) else 0


if __name__ == "__main__":
    sys.exit(cli())
