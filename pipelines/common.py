"""What every pipeline entry point shares: option parsing, logging, the run
summary printed from Beam metrics."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.arguments import CommandParser, command_parser
from transforms import metrics

# Set in the pipeline images to the image's own name (templates/Dockerfile).
SDK_CONTAINER_IMAGE_ENV = "FUNNEL_SDK_CONTAINER_IMAGE"

# The local default. DirectRunner would first try Prism, which downloads a
# binary and fails offline; FnApiRunner is what DirectRunner falls back to.
LOCAL_RUNNER = "FnApiRunner"


# Flags a flex template does not offer as parameters, and why (the template
# metadata test holds every other flag of a pipeline to its metadata.json).
NOT_TEMPLATE_PARAMETERS = {
    "wait": "a template's launcher submits the job and returns; Dataflow shows its progress and counters",
    "run_for": "local runs only: the launcher cancels the local pipeline after this many seconds",
}


def pipeline_parser(doc: str) -> CommandParser:
    """A pipeline's parser: its module docstring's summary, and ``--wait``."""
    parser = command_parser(doc)
    parser.add_argument(
        "--wait",
        action="store_true",
        help="on a remote runner (Dataflow): wait for the job to finish and print its counters "
        "(local runs always wait); without it the launcher returns once the job is submitted",
    )
    return parser


def template_parameter(flag: str) -> str:
    """The flex-template parameter name of ``--some-flag``: ``some_flag``
    (Dataflow passes each parameter back as ``--some_flag=value``)."""
    return flag.lstrip("-").replace("-", "_")


def _spelled_with_hyphens(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--as_of=D`` -> ``--as-of=D`` for our own hyphenated flags, so a flex
    template's parameters (underscore names) reach them; Beam's own
    underscore flags (``--temp_location``) pass unchanged."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name.startswith("--") and "_" in name:
            hyphenated = "--" + name[2:].replace("_", "-")
            if hyphenated in parser._option_string_actions:
                arg = hyphenated + eq + value
        out.append(arg)
    return out


def parse(
    parser: argparse.ArgumentParser, argv=None, local_runner: str = LOCAL_RUNNER, streaming: bool = False
) -> tuple[argparse.Namespace, PipelineOptions]:
    """Our flags -> Namespace; everything else (``--runner``, ``--project``,
    ``--temp_location`` ...) -> Beam's PipelineOptions, unchanged."""
    argv = _spelled_with_hyphens(parser, list(sys.argv[1:] if argv is None else argv))
    args, beam_args = parser.parse_known_args(argv)
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args.append(f"--runner={local_runner}")
    if streaming and "--streaming" not in beam_args:
        beam_args.append("--streaming")
    beam_args += _own_image_for_workers(beam_args)
    options = PipelineOptions(beam_args)
    use_filesystems(options)
    return args, options


def _own_image_for_workers(beam_args: list[str]) -> list[str]:
    """In a pipeline image (templates/Dockerfile), a remote run's workers use
    that same image, which holds the package and its pinned dependencies,
    unless ``--sdk_container_image`` says otherwise."""
    image = os.environ.get(SDK_CONTAINER_IMAGE_ENV)
    if not image or any(
        a.split("=", 1)[0] in ("--sdk_container_image", "--worker_harness_container_image") for a in beam_args
    ):
        return []
    return [f"--sdk_container_image={image}", "--sdk_location=container"]


def use_filesystems(options: PipelineOptions | None = None) -> None:
    """Beam's file systems (an object-store lake's ``s3://`` needs options)
    for what the entry point itself reads and writes, outside the pipeline;
    the runner configures its workers from the pipeline's options."""
    from apache_beam.io.filesystems import FileSystems

    FileSystems.set_options(options or PipelineOptions([]))


def add_sink_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """``--sink lake|bigquery`` and ``--bigquery-endpoint``; see ``bigquery_target``."""
    parser.add_argument(
        "--sink",
        choices=("lake", "bigquery"),
        default="lake",
        help=f"lake: the Delta lake only (default); bigquery: {what} also go to BigQuery datasets of --project",
    )
    parser.add_argument(
        "--bigquery-endpoint",
        help="with --sink bigquery: another endpoint, e.g. the local emulator http://127.0.0.1:9050",
    )


def bigquery_target(parser: argparse.ArgumentParser, args: argparse.Namespace, options: PipelineOptions):
    """The BigQuery target of ``--sink bigquery``, else None. The project is
    Beam's own ``--project``, so a Dataflow job and its tables share it."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from transforms.sinks.bigquery import BigQueryTarget

    if args.sink != "bigquery":
        return None
    project = options.view_as(GoogleCloudOptions).project
    if not project:
        parser.error("--sink bigquery needs --project")
    if args.bigquery_endpoint is None:
        _check_credentials(parser)
    return BigQueryTarget(project, args.bigquery_endpoint)


def _check_credentials(parser: argparse.ArgumentParser) -> None:
    """Google credentials are found before any work (not after gold was computed)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    quiet = logging.getLogger("google.auth")
    level, quiet.level = quiet.level, logging.ERROR  # its warning would restate the line below
    try:
        google.auth.default()
    except DefaultCredentialsError:
        parser.error(
            "--sink bigquery found no Google credentials: run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account key (the local emulator needs "
            "--bigquery-endpoint http://127.0.0.1:9050 and no credentials)"
        )
    finally:
        quiet.setLevel(level)


def add_pii_key_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pii-key-secret",
        dest="pii_key_secret",
        metavar="projects/P/secrets/S/versions/V",
        help="the PII key's Secret Manager version, read on the workers (required on non-local "
        "runners; local runs read FUNNEL_PII_KEY, else a development key)",
    )


def pii_key_source(parser: argparse.ArgumentParser, args: argparse.Namespace, options: PipelineOptions):
    """Where the workers read the PII key (``transforms.rules.pii``); a non-local
    runner without ``--pii-key-secret`` is an error here, at option parsing."""
    from transforms.rules.pii import PiiKeyError, PiiKeySource

    runner, local = runner_name(options), runs_locally(options)
    if not local and args.pii_key_secret is None:
        parser.error(
            f"--runner={runner} needs --pii-key-secret projects/P/secrets/S/versions/V: the workers read "
            "the PII key from Secret Manager, and the development key is for local runners only"
        )
    try:
        return PiiKeySource(args.pii_key_secret, allow_dev_key=local)
    except PiiKeyError as error:
        parser.error(str(error))


def setup_logging() -> None:
    # force: Beam installs a root handler on import, which would make this a no-op.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", force=True
    )
    # Beam's own INFO lines are runner internals, not progress a person wants.
    for noisy in ("apache_beam", "google"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Beam logs a failing step's error with its traceback before raising it; the command reports that
    # same error in one line, the traceback in a file (pipelines.failures).
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)


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


def runner_name(options: PipelineOptions) -> str:
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    return runner if isinstance(runner, str) else type(runner).__name__


def runs_locally(options: PipelineOptions) -> bool:
    from transforms.rules.pii import LOCAL_RUNNERS

    return runner_name(options) in LOCAL_RUNNERS


def run_pipeline(
    title: str, options: PipelineOptions, build: Callable[[beam.Pipeline], None], wait: bool = False
) -> tuple[object, bool]:
    """Build and run. Local runs, and remote ones with ``wait``, run to
    completion and print the counters; a remote run (a flex template's
    launcher) returns once the job is submitted. Returns the PipelineResult
    and whether it finished."""
    started = time.time()
    p = beam.Pipeline(options=options)
    build(p)
    result = p.run()
    if not (wait or runs_locally(options)):
        job_id = getattr(result, "job_id", lambda: None)()
        print(f"\n{title} submitted" + (f": job {job_id}" if job_id else "") + " (not waiting; --wait waits)")
        return result, False
    result.wait_until_finish()
    print_summary(title, started, counters(result))
    return result, True
