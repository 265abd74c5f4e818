"""The daily run: one day's landing file backfilled (then gold) into an empty
lake, a lake holding 28 days and one holding 56, this code and the previous
release side by side.

    python -m benchmarks.daily [--users 36000] [--history 28,56] [--baseline REF|none]
                               [--workdir DIR] [--out benchmarks/results]

It generates ``max(history) + 1`` days of traffic, one landing file per
arrival day (about 75,000 lines a day with the default users). The measured
day is always the last file, so every scenario backfills the same records
(late ones included, which touch the history when there is one); a history
of N days is one backfill of the N files before it (not timed). Each tree
builds its own lakes (their layouts differ), and each timed run works on a
copy. Per run: wall time, CPU seconds and peak memory of the backfill and of
gold_daily (``benchmarks.run`` measures them), written to ``daily.json``.

The targets (BENCHMARKS.md) are on the backfill: its cost should follow the
day, not the lake. Gold is recomputed from all of silver (truncate and
load), so its cost grows with the history by design. Timings are never
asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

from benchmarks import baseline
from benchmarks.run import measured
from simulator import traffic

# The last release before silver was merged: every backfill recomputed silver from all of bronze.
PREVIOUS_RELEASE = "5c58303"


def _files(users: int, days: int, workdir: Path) -> list[Path]:
    """The landing files of the ``days`` generated days, by arrival day (the
    generator also writes the late scans that arrive after the last day:
    left out, so the last file is a whole day)."""
    landing = workdir / "landing"
    config = traffic.Config(users=users, days=days, seed=11)
    if not landing.is_dir():
        traffic.generate(config, str(landing))
    last = (date.fromisoformat(config.start) + timedelta(days=days - 1)).isoformat()
    return sorted(p for p in landing.glob("*.jsonl") if p.stem.rsplit("_", 1)[-1] <= last)


def _backfill(files: list[Path], lake: Path, tree: Path | None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipelines.backfill",
        *(a for f in files for a in ("--input", str(f))),
        "--lake",
        str(lake),
    ]


def _run_tree(name: str, tree: Path | None, files: list[Path], histories: list[int], workdir: Path) -> dict:
    """The day into an empty lake and into each history, for one tree."""
    day, runs = files[-1], {}
    for days in [0, *histories]:
        lake = workdir / f"{name}-{days}"
        if days:
            history = workdir / f"{name}-history-{days}"
            if not history.is_dir():
                print(f"  {name}: building a lake of {days} days (not timed) ...", flush=True)
                subprocess.run(
                    _backfill(files[-1 - days : -1], history, tree),
                    check=True,
                    capture_output=True,
                    cwd=tree,
                    env=baseline.environment(tree) if tree else None,
                )
            shutil.copytree(history, lake)
        print(f"  {name}: the day into a lake of {days} days ...", flush=True)
        steps = {
            "backfill": measured(_backfill([day], lake, tree), tree),
            "gold_daily": measured([sys.executable, "-m", "pipelines.gold_daily", "--lake", str(lake)], tree),
        }
        runs[days] = steps
        shutil.rmtree(lake)
    return runs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=36_000)
    parser.add_argument("--history", default="28,56", help="days of history, comma-separated")
    parser.add_argument("--baseline", default=PREVIOUS_RELEASE, help="git ref to compare with; 'none' to skip")
    parser.add_argument("--workdir", help="keep the generated data and lakes here (default: a temporary folder)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    histories = sorted(int(d) for d in args.history.split(","))
    with tempfile.TemporaryDirectory(prefix="funnel-daily-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        files = _files(args.users, max(histories) + 1, workdir)
        lines = sum(1 for _ in files[-1].open("rb"))
        print(
            f"daily: the day {files[-1].name} ({lines:,} lines) after 0, " + ", ".join(map(str, histories)) + " days",
            flush=True,
        )
        report = {"day": files[-1].name, "day_lines": lines, "history_days": histories, "runs": {}}
        tree = None if args.baseline == "none" else baseline.worktree(args.baseline, workdir)
        if tree is not None:
            report["baseline"] = args.baseline
            report["runs"]["baseline"] = _run_tree("baseline", tree, files, histories, workdir)
        report["runs"]["current"] = _run_tree("current", None, files, histories, workdir)
    for name, runs in report["runs"].items():
        empty = runs[0]["backfill"]["cpu_s"]
        report.setdefault("backfill_cpu_x_empty", {})[name] = {
            d: round(r["backfill"]["cpu_s"] / empty, 2) for d, r in runs.items()
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "daily.json").write_text(json.dumps(report, indent=2))
    print(
        f"\n{'':<18} {'history':>7} {'backfill CPU s':>14} {'wall s':>7} {'peak MiB':>8} {'x empty':>7} "
        f"{'gold CPU s':>10} {'gold peak':>9}"
    )
    for name, label in (("baseline", "previous release"), ("current", "this code")):
        for days, steps in report["runs"].get(name, {}).items():
            b, g = steps["backfill"], steps["gold_daily"]
            print(
                f"{label:<18} {days:>7} {b['cpu_s']:>14} {b['wall_s']:>7} {b['peak_rss_mib']:>8} "
                f"{report['backfill_cpu_x_empty'][name][days]:>7} {g['cpu_s']:>10} {g['peak_rss_mib']:>9}"
            )
    print(f"results: {out / 'daily.json'}")
    return report


if __name__ == "__main__":
    main()
