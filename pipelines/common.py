"""What every pipeline entry point shares: option parsing, logging, the run
summary printed from Beam metrics."""
from __future__ import annotations

import argparse
import logging
import time
from typing import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from transforms import metrics

# The local default. DirectRunner would first try Prism, which downloads a
# binary and fails offline; FnApiRunner is what DirectRunner falls back to.
LOCAL_RUNNER = "FnApiRunner"


def parse(parser: argparse.ArgumentParser, argv=None, local_runner: str = LOCAL_RUNNER,
          streaming: bool = False) -> tuple[argparse.Namespace, PipelineOptions]:
    """Our flags -> Namespace; everything else (``--runner``, ``--project``,
    ``--temp_location`` ...) -> Beam's PipelineOptions, unchanged."""
    args, beam_args = parser.parse_known_args(argv)
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args.append(f"--runner={local_runner}")
    if streaming and "--streaming" not in beam_args:
        beam_args.append("--streaming")
    options = PipelineOptions(beam_args)
    use_filesystems(options)
    return args, options


def use_filesystems(options: PipelineOptions | None = None) -> None:
    """Beam's file systems (an object-store lake's ``s3://`` needs options)
    for what the entry point itself reads and writes, outside the pipeline;
    the runner configures its workers from the pipeline's options."""
    from apache_beam.io.filesystems import FileSystems

    FileSystems.set_options(options or PipelineOptions([]))


def add_sink_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """``--sink lake|bigquery`` and ``--bigquery-endpoint``; see ``bigquery_target``."""
    parser.add_argument("--sink", choices=("lake", "bigquery"), default="lake",
                        help=f"lake: the Delta lake only (default); bigquery: {what} also go to BigQuery "
                             "datasets of --project")
    parser.add_argument("--bigquery-endpoint", help="with --sink bigquery: another endpoint, e.g. the local "
                                                    "emulator http://127.0.0.1:9050")


def bigquery_target(parser: argparse.ArgumentParser, args: argparse.Namespace, options: PipelineOptions):
    """The BigQuery target of ``--sink bigquery``, else None. The project is
    Beam's own ``--project``, so a Dataflow job and its tables share it."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from transforms.bigquery_io import BigQueryTarget

    if args.sink != "bigquery":
        return None
    project = options.view_as(GoogleCloudOptions).project
    if not project:
        parser.error("--sink bigquery needs --project")
    return BigQueryTarget(project, args.bigquery_endpoint)


def add_pii_key_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pii-key-secret", "--pii_key_secret", dest="pii_key_secret", metavar="projects/P/secrets/S/versions/V",
                        help="the PII key's Secret Manager version, read on the workers (required on non-local "
                             "runners; local runs read FUNNEL_PII_KEY, else a development key)")


def pii_key_source(parser: argparse.ArgumentParser, args: argparse.Namespace, options: PipelineOptions):
    """Where the workers read the PII key (``transforms.pii``); a non-local
    runner without ``--pii-key-secret`` is an error here, at option parsing."""
    from apache_beam.options.pipeline_options import StandardOptions

    from transforms.pii import LOCAL_RUNNERS, PiiKeyError, PiiKeySource

    runner = options.view_as(StandardOptions).runner
    runner = runner if isinstance(runner, str) else type(runner).__name__
    local = runner in LOCAL_RUNNERS
    if not local and args.pii_key_secret is None:
        parser.error(f"--runner={runner} needs --pii-key-secret projects/P/secrets/S/versions/V: the workers read "
                     "the PII key from Secret Manager, and the development key is for local runners only")
    try:
        return PiiKeySource(args.pii_key_secret, allow_dev_key=local)
    except PiiKeyError as error:
        parser.error(str(error))


def setup_logging() -> None:
    # force: Beam installs a root handler on import, which would make this a no-op.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        force=True)
    # Beam's own INFO lines are runner internals, not progress a person wants.
    for noisy in ("apache_beam", "google"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def counters(result) -> dict[str, int]:
    """The pipeline's counters (``metrics.NAMESPACE``) by name (committed where the runner has them)."""
    out = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace == metrics.NAMESPACE:
            value = c.committed if c.committed is not None else c.attempted
            out[c.key.metric.name] = out.get(c.key.metric.name, 0) + value
    return dict(sorted(out.items()))


def print_summary(title: str, started: float, values: dict[str, int]) -> None:
    print(f"\n{title} finished in {time.time() - started:.1f} s")
    width = max((len(k) for k in values), default=0)
    for name, value in values.items():
        print(f"  {name:<{width}}  {value:>12,}")


def run_pipeline(title: str, options: PipelineOptions, build: Callable[[beam.Pipeline], None]):
    """Build, run to completion, print the counters; returns the PipelineResult."""
    started = time.time()
    p = beam.Pipeline(options=options)
    build(p)
    result = p.run()
    result.wait_until_finish()
    print_summary(title, started, counters(result))
    return result
