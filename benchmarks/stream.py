"""Streaming benchmark: ``pipelines.stream_ingest`` on the local Pub/Sub emulator.

    python -m benchmarks.stream [--rate 20] [--seconds 60] [--backlog 3000] [--window-seconds 10]
                                [--baseline REF|none] [--out benchmarks/results]

Starts the emulator unless one runs, and ``stream_ingest`` in its own process
on a fresh topic, subscription and lake. Once a first record has gone all the
way to silver (the job is up), two phases run against the same job:

1. **paced**: messages published at ``--rate`` for ``--seconds``. Latency is
   measured per record identity, from its first publish to the first
   silver version holding it (this code: ``silver/<table>``; earlier
   releases: their streaming silver, ``silver_stream/<table>``); the lake
   is polled every 0.25 s, which bounds the resolution;
2. **backlog**: ``--backlog`` messages published at once; the time until all
   of them are in raw and until every identity is in silver gives the
   sustained records per second the job can drain. (The last rows reach the
   lake one sink batch after they are read, so a small backlog understates
   the rate.)

With ``--baseline`` (default: the previous release, ``benchmarks.baseline``)
the same two phases run, on a topic of their own, against that code's job
too, in the same sitting.

Records are a day of generated traffic ending now (duplicates, late and
invalid records included), so the merges see live and late data.
Results go to ``--out``/``streaming.json``. Targets (BENCHMARKS.md) are never
asserted.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import baseline
from devtools import pubsub_emulator
from pipelines.stream_ingest import landed_rows
from schemas import contract
from schemas.tables import RAW, SILVER
from simulator import traffic
from simulator.publisher import ensure_topic_and_subscription, lines_of, publish
from transforms.lake.tables import open_table, read_arrow
from transforms.rules.bronze import decode_record

POLL_SECONDS = 0.25
RECORDS_PER_USER_DAY = 2.0  # what the generator produces for one day


def identity(message: bytes) -> tuple[str, str] | None:
    """(silver table, key) of a valid record; None for one the contract rejects."""
    try:
        rt, _, payload, _ = contract.validate_record(decode_record(message, None), contract.now_micros())
    except contract.Rejected:
        return None
    return rt.silver_table, payload[rt.key]


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil
    return ordered[int(rank) - 1]


class SilverWatcher:
    """Polls silver's tables; remembers when each key first appeared."""

    def __init__(self, lake: str):
        self._lake = lake
        self._seen: dict[str, float] = {}  # table -> Delta version, or snapshot file mtime
        self.first_seen: dict[tuple[str, str], float] = {}

    def poll(self) -> None:
        now = time.time()
        for name, table in SILVER.items():
            keys = self._changed_keys(name, table)
            for key in keys or ():
                self.first_seen.setdefault((name, key), now)

    def _changed_keys(self, name, table) -> list | None:
        """The table's keys if it changed since the last poll: a Delta table
        (this code's silver, or an earlier release's silver_stream), or an
        older release's ``current.parquet`` snapshot."""
        dt = open_table(self._lake, table)
        if dt is None:  # a release before merged silver: the stream had a silver of its own
            table = replace(table, layer="silver_stream")
            dt = open_table(self._lake, table)
        if dt is not None:
            if self._seen.get(name) == dt.version():
                return None
            self._seen[name] = dt.version()
            return read_arrow(self._lake, table, dt.version(), columns=[table.key[0]]).column(0).to_pylist()
        path = os.path.join(self._lake, "silver_stream", name, "current.parquet")
        try:
            mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            return None
        if self._seen.get(name) == mtime:
            return None
        self._seen[name] = mtime
        try:
            return pq.read_table(path, columns=[table.key[0]]).column(0).to_pylist()
        except OSError:  # replaced while being read: next poll
            return None

    def wait_for(self, identities, deadline: float, stalled_after: float | None = None) -> bool:
        """Whether every identity reached silver by ``deadline``; gives up
        early once silver has not grown for ``stalled_after`` seconds (a job
        that leaves some records out of silver by design: an earlier
        release's allowed lateness)."""
        grew, seen = time.time(), len(self.first_seen)
        while time.time() < deadline:
            self.poll()
            if all(i in self.first_seen for i in identities):
                return True
            if len(self.first_seen) > seen:
                grew, seen = time.time(), len(self.first_seen)
            elif stalled_after is not None and time.time() - grew > stalled_after:
                return False
            time.sleep(POLL_SECONDS)
        return False


def _raw_rows(lake: str) -> int:
    """Rows in raw: from the Delta log, or (a release before the Delta lake)
    from the Parquet files' footers."""
    if open_table(lake, RAW) is not None:
        return landed_rows(lake)["raw"]
    return sum(_footer_rows(path) for path in glob.glob(os.path.join(lake, "raw", "**", "*.parquet"), recursive=True))


def _footer_rows(path: str) -> int:
    """Rows in a Parquet file's footer; 0 while the file is still being
    written (that release writes its files in place: a poll can meet one
    empty or without its footer yet, and counts it on a later poll)."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowInvalid, OSError):
        return 0


def _published(topic: str, messages: list[bytes], rate: float | None) -> dict:
    """Publishes; returns the first publish time of each identity."""
    sent_at: list[float] = []
    publish(topic, messages, rate, sent_at=sent_at)
    first = {}
    for message, at in zip(messages, sent_at):
        key = identity(message)
        if key is not None:
            first.setdefault(key, at)
    return first


def run(
    rate: float,
    seconds: float,
    backlog: int,
    window_seconds: int,
    workdir: str,
    job_args: list[str] = (),
    tree: Path | None = None,
) -> dict:
    """One job (this tree's, or ``tree``'s) through both phases."""
    os.makedirs(workdir, exist_ok=True)
    lake = os.path.join(workdir, "lake")
    run_id = uuid.uuid4().hex[:8]
    topic = f"projects/{pubsub_emulator.PROJECT}/topics/bench-{run_id}"
    subscription = f"projects/{pubsub_emulator.PROJECT}/subscriptions/bench-{run_id}"
    ensure_topic_and_subscription(topic, subscription)

    paced_n = int(rate * seconds)
    needed = paced_n + backlog + 50
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    landing = os.path.join(workdir, "landing")
    traffic.generate(
        traffic.Config(
            users=int(needed / RECORDS_PER_USER_DAY) + 100, days=1, seed=7, start=yesterday, max_scan_lag_days=0
        ),
        landing,
    )
    messages = lines_of(sorted(glob.glob(os.path.join(landing, "*.jsonl"))))
    warmup = [next(m for m in messages if (identity(m) or ("",))[0] == "silver_users")]
    paced, drained = messages[:paced_n], messages[paced_n : paced_n + backlog]
    if len(drained) < backlog:
        raise RuntimeError(f"generated only {len(messages)} messages, {needed} needed")

    log = open(os.path.join(workdir, "stream_ingest.log"), "wb")  # noqa: SIM115 - the job writes it until stopped
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.stream_ingest",
            "--subscription",
            subscription,
            "--lake",
            lake,
            "--window-seconds",
            str(window_seconds),
            "--run-for",
            "86400",
            *job_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tree,
        env=baseline.environment(tree) if tree else os.environ.copy(),
    )
    watcher = SilverWatcher(lake)
    try:
        started = time.time()
        _published(topic, warmup, None)
        if not watcher.wait_for([identity(warmup[0])], started + 180):
            raise RuntimeError("stream_ingest did not put a first record in silver within 180 s; see " + log.name)
        startup = time.time() - started
        print(
            f"stream_ingest is up ({startup:.0f} s to a first silver row); paced: {paced_n:,} messages at {rate:g}/s",
            flush=True,
        )

        # 1. paced: latency from publish to silver
        paced_first: dict = {}
        publisher = threading.Thread(target=lambda: paced_first.update(_published(topic, paced, rate)))
        publisher.start()
        while publisher.is_alive():
            watcher.poll()
            time.sleep(POLL_SECONDS)
        stalled = 10 + 3 * window_seconds
        complete = watcher.wait_for(paced_first, time.time() + 10 * window_seconds + 120, stalled)
        latencies = [watcher.first_seen[k] - t for k, t in paced_first.items() if k in watcher.first_seen]
        paced_result = {
            "messages": paced_n,
            "offered_rate": rate,
            "identities": len(paced_first),
            "identities_in_silver": len(latencies),
            "complete": complete,
            "latency_p50_s": _round(percentile(latencies, 50)),
            "latency_p95_s": _round(percentile(latencies, 95)),
            "latency_max_s": _round(max(latencies, default=None)),
        }
        print(
            f"paced: p50 {paced_result['latency_p50_s']} s, p95 {paced_result['latency_p95_s']} s publish -> "
            f"silver ({len(latencies):,} of {len(paced_first):,} identities)",
            flush=True,
        )

        # 2. backlog: how fast the job drains what it cannot keep up with
        raw_before = _raw_rows(lake)
        print(f"backlog: publishing {backlog:,} messages at once", flush=True)
        t0 = time.time()
        backlog_first = _published(topic, drained, None)
        published_s = time.time() - t0
        raw_done = None
        deadline = t0 + max(600, backlog / 5)
        while time.time() < deadline:
            watcher.poll()
            if raw_done is None and _raw_rows(lake) - raw_before >= backlog:
                raw_done = time.time() - t0
            if raw_done is not None:
                watcher.wait_for(backlog_first, deadline, stalled)
                break
            time.sleep(POLL_SECONDS)
        silver_done = max((watcher.first_seen[k] for k in backlog_first if k in watcher.first_seen), default=t0) - t0
        backlog_result = {
            "messages": backlog,
            "publish_s": _round(published_s),
            "raw_s": _round(raw_done),
            "raw_records_per_s": _round(backlog / raw_done) if raw_done else None,
            "silver_s": _round(silver_done),
            "identities": len(backlog_first),
            "identities_in_silver": sum(k in watcher.first_seen for k in backlog_first),
            "silver_records_per_s": _round(backlog / silver_done) if silver_done > 0 else None,
        }
        print(
            f"backlog: in raw after {backlog_result['raw_s']} s ({backlog_result['raw_records_per_s']} rec/s), "
            f"in silver after {backlog_result['silver_s']} s ({backlog_result['silver_records_per_s']} rec/s)",
            flush=True,
        )
    finally:
        job.terminate()
        try:
            job.wait(30)
        except subprocess.TimeoutExpired:
            job.kill()
        log.close()
    return {
        "runner": "BundleBasedDirectRunner",
        "window_seconds": window_seconds,
        "job_args": list(job_args),
        "startup_s": _round(startup),
        "paced": paced_result,
        "backlog": backlog_result,
        "lake_rows": {**landed_rows(lake), "raw": _raw_rows(lake)},
    }


def _round(value):
    return None if value is None else round(value, 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20, help="paced phase: messages per second")
    parser.add_argument("--seconds", type=float, default=60, help="paced phase: how long to publish")
    parser.add_argument("--backlog", type=int, default=3000, help="backlog phase: messages published at once")
    parser.add_argument("--window-seconds", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--workdir", help="keep data, lake and the job's log here (default: a temporary folder)")
    parser.add_argument("--job-args", default="", help="more stream_ingest flags, e.g. '--alert-grace-seconds 0'")
    parser.add_argument(
        "--baseline",
        default=baseline.BASELINE,
        help="git ref of the code to compare with, in the same sitting; 'none' to skip",
    )
    args = parser.parse_args(argv)
    host = os.environ.get("PUBSUB_EMULATOR_HOST", pubsub_emulator.DEFAULT_HOST)
    with pubsub_emulator.running(host), tempfile.TemporaryDirectory(prefix="funnel-stream-bench-") as tmp:
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        workdir = args.workdir or tmp
        os.makedirs(workdir, exist_ok=True)
        result = run(
            args.rate,
            args.seconds,
            args.backlog,
            args.window_seconds,
            os.path.join(workdir, "current"),
            args.job_args.split(),
        )
        tree = None if args.baseline == "none" else baseline.worktree(args.baseline, Path(workdir))
        if tree is not None:
            print(f"\nthe previous release ({tree.name}), same phases:", flush=True)
            result["baseline"] = {
                "tree": tree.name,
                **run(
                    args.rate,
                    args.seconds,
                    args.backlog,
                    args.window_seconds,
                    os.path.join(workdir, "baseline"),
                    args.job_args.split(),
                    tree,
                ),
            }
            result["ratio"] = {
                "drain_x": _round(
                    result["backlog"]["raw_records_per_s"] / result["baseline"]["backlog"]["raw_records_per_s"]
                )
            }
            subprocess.run(
                ["git", "-C", str(baseline.ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
    result["machine"] = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "streaming.json").write_text(json.dumps(result, indent=2))
    print(f"\nresults: {out / 'streaming.json'}")
    return result


if __name__ == "__main__":
    main()
