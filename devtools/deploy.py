"""Build the flex templates and launch them on Dataflow.

    python -m devtools.deploy build [--project P] [--region R] [--tag T]        (make template-build)
    python -m devtools.deploy run PIPELINE [--param name=value ...]             (make template-run-PIPELINE)

``build`` submits templates/cloudbuild.yaml (the three images from the one
Dockerfile) to Cloud Build, then writes each pipeline's template spec with
``gcloud dataflow flex-template build``. ``run`` launches one with
``gcloud dataflow flex-template run``; the launch returns once the job is
submitted. With no project configured (``--project``, ``$PROJECT``,
``$GOOGLE_CLOUD_PROJECT`` or gcloud's own), or with ``--print-only``, the
commands are printed instead of run.

Names come from ``terraform -chdir=infra output`` when terraform has applied
state there; otherwise from infra/'s conventions (``infra/main.tf`` locals,
held equal by tests/test_deployment_files.py) for the project, region and
prefix given.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ("backfill", "gold_daily", "stream_ingest")
PROJECT_PLACEHOLDER = "PROJECT"


# Terraform outputs (infra/outputs.tf) a Deployment takes over its conventions.
OUTPUTS = (
    "region",
    "lake",
    "landing_bucket",
    "template_root",
    "temp_location",
    "staging_location",
    "image_root",
    "service_account",
    "subscription",
    "alerts_topic",
    "pii_key_secret",
    "stream_job_name",
)


@dataclass(frozen=True)
class Deployment:
    """Where a deployment's pieces are: ``terraform output`` when there is
    one (``outputs``), else infra/'s naming conventions."""

    project: str
    region: str = "europe-west1"
    prefix: str = "funnel"
    tag: str = "latest"
    outputs: dict = field(default_factory=dict)

    def _named(self, output: str, convention: str) -> str:
        return self.outputs.get(output) or convention

    @property
    def lake(self) -> str:
        return self._named("lake", f"gs://{self.project}-{self.prefix}-lake")

    @property
    def landing_bucket(self) -> str:
        return self._named("landing_bucket", f"{self.project}-{self.prefix}-landing")

    @property
    def dataflow_bucket(self) -> str:
        return f"{self.project}-{self.prefix}-dataflow"

    @property
    def template_root(self) -> str:
        return self._named("template_root", f"gs://{self.dataflow_bucket}/templates")

    @property
    def temp_location(self) -> str:
        return self._named("temp_location", f"gs://{self.dataflow_bucket}/temp")

    @property
    def staging_location(self) -> str:
        return self._named("staging_location", f"gs://{self.dataflow_bucket}/staging")

    @property
    def image_root(self) -> str:
        return self._named("image_root", f"{self.region}-docker.pkg.dev/{self.project}/{self.prefix}")

    @property
    def service_account(self) -> str:
        return self._named("service_account", f"{self.prefix}-dataflow@{self.project}.iam.gserviceaccount.com")

    @property
    def subscription(self) -> str:
        return self._named("subscription", f"projects/{self.project}/subscriptions/{self.prefix}-stream-ingest")

    @property
    def alerts_topic(self) -> str:
        return self._named("alerts_topic", f"projects/{self.project}/topics/{self.prefix}-alerts")

    @property
    def pii_key_secret(self) -> str:
        return self._named("pii_key_secret", f"projects/{self.project}/secrets/{self.prefix}-pii-key/versions/latest")

    @property
    def stream_job_name(self) -> str:
        return self._named("stream_job_name", f"{self.prefix}-stream-ingest")

    def image(self, pipeline: str) -> str:
        return f"{self.image_root}/{pipeline}:{self.tag}"

    def template(self, pipeline: str) -> str:
        return f"{self.template_root}/{pipeline}.json"

    def default_parameters(self, pipeline: str) -> dict[str, str]:
        """What a launch passes unless told otherwise: the scheduled daily
        runs' parameters (infra/schedule.tf), and the stream's."""
        if pipeline == "backfill":
            return {
                "input": f"gs://{self.landing_bucket}/{{yesterday}}/*.jsonl",
                "lake": self.lake,
                "pii_key_secret": self.pii_key_secret,
                "sink": "bigquery",
            }
        if pipeline == "gold_daily":
            return {"lake": self.lake, "sink": "bigquery"}
        if pipeline == "stream_ingest":
            return {
                "subscription": self.subscription,
                "lake": self.lake,
                "alerts_topic": self.alerts_topic,
                "pii_key_secret": self.pii_key_secret,
                "sink": "bigquery",
            }
        raise ValueError(f"unknown pipeline {pipeline!r}; one of {', '.join(PIPELINES)}")


def build_commands(d: Deployment) -> list[list[str]]:
    commands = [
        [
            "gcloud",
            "builds",
            "submit",
            "--project",
            d.project,
            "--region",
            d.region,
            "--config",
            "templates/cloudbuild.yaml",
            "--substitutions",
            f"_IMAGE_ROOT={d.image_root},_TAG={d.tag}",
            ".",
        ]
    ]
    for pipeline in PIPELINES:
        commands.append(
            [
                "gcloud",
                "dataflow",
                "flex-template",
                "build",
                d.template(pipeline),
                "--project",
                d.project,
                "--image",
                d.image(pipeline),
                "--sdk-language",
                "PYTHON",
                "--metadata-file",
                f"templates/{pipeline}.metadata.json",
            ]
        )
    return commands


def job_name(d: Deployment, pipeline: str, now: datetime | None = None) -> str:
    # The stream keeps one name (the freshness alert watches it); batch runs are told apart by the time.
    if pipeline == "stream_ingest":
        return d.stream_job_name
    now = now or datetime.now(UTC)
    return f"{d.prefix}-{pipeline.replace('_', '-')}-{now:%Y%m%d-%H%M%S}"


def run_command(d: Deployment, pipeline: str, parameters: dict[str, str] | None = None) -> list[str]:
    params = {**d.default_parameters(pipeline), **(parameters or {})}
    command = [
        "gcloud",
        "dataflow",
        "flex-template",
        "run",
        job_name(d, pipeline),
        "--project",
        d.project,
        "--region",
        d.region,
        "--template-file-gcs-location",
        d.template(pipeline),
        "--service-account-email",
        d.service_account,
        "--temp-location",
        d.temp_location,
        "--staging-location",
        d.staging_location,
        "--disable-public-ips",
    ]
    if pipeline == "stream_ingest":
        command.append("--enable-streaming-engine")
    for name, value in params.items():
        command += ["--parameters", f"{name}={value}"]
    return command


def shell(command: list[str]) -> str:
    """One command as a person pastes it."""
    return shlex.join(command)


def configured_project() -> str | None:
    for name in ("PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        if os.environ.get(name):
            return os.environ[name]
    if shutil.which("gcloud"):
        done = subprocess.run(["gcloud", "config", "get-value", "project"], capture_output=True, text=True)
        value = done.stdout.strip()
        if done.returncode == 0 and value and value != "(unset)":
            return value
    return None


def terraform_outputs() -> dict[str, str]:
    """``terraform -chdir=infra output -json`` as name -> value, when there
    is a terraform binary and applied state; else nothing."""
    if not shutil.which("terraform"):
        return {}
    done = subprocess.run(["terraform", f"-chdir={ROOT / 'infra'}", "output", "-json"], capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        return {}
    return {name: out["value"] for name, out in json.loads(done.stdout).items() if name in OUTPUTS}


def git_tag() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "latest"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("build", "run"))
    parser.add_argument("pipeline", nargs="?", choices=PIPELINES, help="with run: which template")
    parser.add_argument("--project", help="default: $PROJECT, $GOOGLE_CLOUD_PROJECT, else gcloud's configured one")
    parser.add_argument("--region", default=os.environ.get("REGION") or "europe-west1")
    parser.add_argument(
        "--prefix", default=os.environ.get("NAME_PREFIX") or "funnel", help="infra/'s name_prefix (default funnel)"
    )
    parser.add_argument("--tag", help="image tag (default: the git commit)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with run: a template parameter (repeatable), e.g. as_of=2026-11-25",
    )
    parser.add_argument("--print-only", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if args.action == "run" and args.pipeline is None:
        parser.error("run needs a pipeline: " + ", ".join(PIPELINES))
    project = args.project or configured_project()
    outputs = terraform_outputs() if project else {}
    d = Deployment(
        project or PROJECT_PLACEHOLDER,
        outputs.get("region") or args.region,
        args.prefix,
        args.tag or git_tag(),
        outputs,
    )
    if args.action == "build":
        commands = build_commands(d)
    else:
        bad = [p for p in args.param if "=" not in p]
        if bad:
            parser.error(f"--param needs NAME=VALUE, not {bad[0]!r}")
        commands = [run_command(d, args.pipeline, dict(p.split("=", 1) for p in args.param))]
    if project is None or args.print_only:
        if project is None:
            print(
                "No Google Cloud project configured (--project, PROJECT=..., or gcloud config set project ...); "
                f"the commands, with {PROJECT_PLACEHOLDER} for the project id:"
            )
        for command in commands:
            print(shell(command))
        return 0
    for command in commands:
        print("+ " + shell(command), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
