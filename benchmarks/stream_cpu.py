"""CPU per record of the streaming transforms, this code and the previous
release side by side.

    python -m benchmarks.stream_cpu [--records 100000] [--baseline REF|none] [--out benchmarks/results]

The streaming job's transforms (everything after the Pub/Sub read) run on
``FnApiRunner`` -- the SDK harness Dataflow runs -- over a bounded
collection of Pub/Sub messages: a day of generated traffic (duplicates,
invalid and late records included) ending now. Processing-time triggers
(the sink batches) are off, because FnApiRunner has none; every batch
fires when the input ends. Each tree runs in a process of its
own and its CPU time (user + system) is divided by the records.

The previous release's job reads Pub/Sub itself, so for it the read is
replaced by the same bounded messages and its one processing-time trigger
(the sink batches) by the default trigger; nothing else is changed.

It also counts, in each tree's production graph (``stream_ingest.build``
with the Pub/Sub read, no BigQuery), the ParDos, GroupByKeys and stateful
ParDos. Ends with the line ``streaming transforms: N CPU-s per million
records`` (this code). Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

RECORDS_PER_USER_DAY = 2.0
_PARDO = "beam:transform:pardo:v1"
_GBK = "beam:transform:group_by_key:v1"
_WINDOW_INTO = "beam:transform:window_into:v1"


# --- the worker: runs inside one tree ------------------------------------------------------------
def _graph_counts(pipeline) -> dict:
    from apache_beam.portability.api import beam_runner_api_pb2

    proto = pipeline.to_runner_api()
    leaves = [t for t in proto.components.transforms.values() if not t.subtransforms]
    pardos = [t for t in leaves if t.spec.urn == _PARDO]
    stateful = 0
    for t in pardos:
        payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
        stateful += bool(payload.state_specs or payload.timer_family_specs)
    return {
        "transforms": len(leaves),
        "pardos": len(pardos),
        "window_into": sum(t.spec.urn == _WINDOW_INTO for t in leaves),
        "group_by_keys": sum(t.spec.urn == _GBK for t in leaves),
        "stateful_pardos": stateful,
    }


def _worker(tree: str, messages_path: str, lake: str, window_seconds: int) -> dict:
    sys.path.insert(0, tree)
    import apache_beam as beam
    from apache_beam.io.gcp.pubsub import PubsubMessage
    from apache_beam.options.pipeline_options import PipelineOptions

    def read_messages(path):
        # Read inside the pipeline: a Create of the messages themselves would
        # pickle and bz2-compress them into the graph, a third of the run.
        with open(path, "rb") as f:
            for data, mid, at in pickle.load(f):
                yield PubsubMessage(data, {}, message_id=mid, publish_time=datetime.fromtimestamp(at, UTC))

    with open(messages_path, "rb") as f:
        records = len(pickle.load(f))

    # This code (and 5c58303) read the key on the workers; 9f29f42 took the key itself. Decided by the
    # tree's own files: an import would find this tree's module through the editable install.
    def has(path: str) -> bool:
        return os.path.exists(os.path.join(tree, *path.split("/")))

    if has("transforms/rules/pii.py") or has("transforms/pii.py"):
        if has("transforms/rules/pii.py"):
            from transforms.rules.pii import KEY_ENV, PiiKeySource
        else:  # 5c58303, before the rules were a package
            from transforms.pii import KEY_ENV, PiiKeySource

        os.environ[KEY_ENV] = "benchmark-key"
        key = PiiKeySource()
    else:
        key = b"benchmark-key"
    from pipelines import stream_ingest

    production = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner", "--streaming"]))
    stream_ingest.build(production, "projects/funnel-local/subscriptions/x", lake, window_seconds, key)
    counts = _graph_counts(production)

    p = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    bounded = (
        p | "MessagesFile" >> beam.Create([messages_path], reshuffle=False) | "Messages" >> beam.FlatMap(read_messages)
    )
    if has("transforms/lake_io.py"):  # 9f29f42, before the streaming job was one composite
        from transforms import lake_io

        class _Bounded(beam.PTransform):
            def expand(self, pbegin):
                return bounded

        def batch_when_input_ends(self, rows):
            return (
                rows
                | "EverySeconds" >> beam.WindowInto(beam.window.GlobalWindows())
                | "OneKey" >> beam.Map(lambda r: (None, r))
                | "GroupBatch" >> beam.GroupByKey()
            )

        beam.io.ReadFromPubSub = lambda **kwargs: _Bounded()
        lake_io.BatchEvery.expand = batch_when_input_ends
        stream_ingest.build(
            p, "projects/funnel-local/subscriptions/x", lake, window_seconds, key, early_firing_seconds=0
        )
    else:
        if has("transforms/streaming/job.py"):
            from transforms.streaming.job import StreamingLakehouse
        else:  # 5c58303
            from transforms.streaming import StreamingLakehouse

        _ = bounded | StreamingLakehouse(lake, key, window_seconds)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.time()
    result = p.run()
    result.wait_until_finish()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "records": records,
        "cpu_s": round(cpu, 2),
        "wall_s": round(time.time() - started, 2),
        "cpu_s_per_million": round(cpu / records * 1e6, 1),
        "graph": counts,
    }


# --- the orchestration -------------------------------------------------------------------------
def _messages(records: int, workdir: Path) -> Path:
    from simulator import traffic
    from simulator.publisher import lines_of

    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    landing = workdir / "landing"
    traffic.generate(
        traffic.Config(
            users=int(records / RECORDS_PER_USER_DAY) + 50, days=1, seed=7, start=yesterday, max_scan_lag_days=0
        ),
        str(landing),
    )
    lines = lines_of(sorted(glob.glob(str(landing / "*.jsonl"))))[:records]
    now = time.time()
    path = workdir / "messages.pickle"
    with open(path, "wb") as f:
        pickle.dump([(data, f"m-{i}", now) for i, data in enumerate(lines)], f)
    return path


def _measure(tree: Path, messages: Path, workdir: Path, name: str, window_seconds: int) -> dict:
    from benchmarks import baseline

    out = workdir / f"{name}.json"
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            str(tree),
            str(messages),
            str(workdir / f"lake-{name}"),
            str(window_seconds),
            str(out),
        ],
        check=True,
        cwd=tree,
        env=baseline.environment(tree),
    )
    return json.loads(out.read_text())


def main(argv=None) -> dict:
    from benchmarks import baseline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--window-seconds", type=int, default=60)
    parser.add_argument("--baseline", default=baseline.BASELINE, help="git ref to compare with; 'none' to skip")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="funnel-stream-cpu-") as tmp:
        workdir = Path(tmp)
        messages = _messages(args.records, workdir)
        runs = {}
        tree = None if args.baseline == "none" else baseline.worktree(args.baseline, workdir)
        if tree is not None:
            print(
                f"previous release ({tree.name}): streaming transforms over {args.records:,} messages ...", flush=True
            )
            runs["baseline"] = {"tree": tree.name, **_measure(tree, messages, workdir, "baseline", args.window_seconds)}
        print(f"this code: streaming transforms over {args.records:,} messages ...", flush=True)
        runs["current"] = _measure(baseline.ROOT, messages, workdir, "current", args.window_seconds)
        if tree is not None:
            subprocess.run(
                ["git", "-C", str(baseline.ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
    report = {
        "runner": "FnApiRunner, bounded timestamped input, processing-time triggers off",
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        **runs,
    }
    if "baseline" in runs:
        report["ratio"] = {
            "cpu_x": round(runs["baseline"]["cpu_s_per_million"] / runs["current"]["cpu_s_per_million"], 2),
            "pardos": f"{runs['current']['graph']['pardos']} / {runs['baseline']['graph']['pardos']}",
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "streaming_cpu.json").write_text(json.dumps(report, indent=2))
    print(
        f"\n{'':<18} {'records':>8} {'CPU s':>7} {'CPU-s / million':>15} {'ParDos':>6} {'GBKs':>5} "
        f"{'stateful':>8} {'transforms':>10}"
    )
    for name, label in (("baseline", "previous release"), ("current", "this code")):
        if name in runs:
            r, g = runs[name], runs[name]["graph"]
            print(
                f"{label:<18} {r['records']:>8,} {r['cpu_s']:>7} {r['cpu_s_per_million']:>15} {g['pardos']:>6} "
                f"{g['group_by_keys']:>5} {g['stateful_pardos']:>8} {g['transforms']:>10}"
            )
    if "ratio" in report:
        print(f"\n{report['ratio']['cpu_x']}x less CPU per record; ParDos {report['ratio']['pardos']}")
    print(f"results: {out / 'streaming_cpu.json'}")
    print(f"streaming transforms: {runs['current']['cpu_s_per_million']} CPU-s per million records")
    return report


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        tree_arg, messages_arg, lake_arg, window_arg, out_arg = sys.argv[2:7]
        measured = _worker(tree_arg, messages_arg, lake_arg, int(window_arg))
        Path(out_arg).write_text(json.dumps(measured))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        main()
