"""The daily batch on Cloud Composer / Airflow: backfill yesterday's landing
files, then recompute gold, each a Dataflow flex-template job the next
waits for (the Cloud Scheduler jobs of infra/schedule.tf do the same on
fixed hours, without the dependency).

Copy this file into the environment's dags/ folder; it needs the Google
provider (``apache-airflow-providers-google``, whose Dataflow operators also
import ``apache-airflow-providers-apache-beam``; Composer has both) and three
Airflow Variables:
``funnel_project`` (required), ``funnel_region`` (default europe-west1) and
``funnel_prefix`` (infra/'s name_prefix, default funnel). The names it
launches with follow infra/'s conventions, like devtools/deploy.py.

The run for a day covers the interval ending at 02:00 UTC the next morning
(``CronDataIntervalTimetable``), so ``ds`` is the day whose landing files
are read and gold's as-of day; a catch-up run for a past day reads that
day's files. Without Airflow installed the module still imports (the
launch bodies are plain functions; tests/test_deployment_files.py checks
them against the template metadata).
"""

from __future__ import annotations

from datetime import datetime, timedelta

PIPELINES = ("backfill", "gold_daily")
SCHEDULE = "0 2 * * *"

# Airflow renders these when a task runs (DataflowStartFlexTemplateOperator's
# body, project_id and location are templated); Variables are not read at parse time.
PROJECT = "{{ var.value.funnel_project }}"
REGION = "{{ var.value.get('funnel_region', 'europe-west1') }}"
PREFIX = "{{ var.value.get('funnel_prefix', 'funnel') }}"
DAY = "{{ ds }}"


def launch_body(
    pipeline: str, project: str = PROJECT, region: str = REGION, prefix: str = PREFIX, day: str = DAY
) -> dict:
    """The flex-template launch request of ``pipeline`` for ``day``."""
    dataflow_bucket = f"gs://{project}-{prefix}-dataflow"
    lake = f"gs://{project}-{prefix}-lake"
    if pipeline == "backfill":
        parameters = {
            "input": f"gs://{project}-{prefix}-landing/{day}/*.jsonl",
            "lake": lake,
            "pii_key_secret": f"projects/{project}/secrets/{prefix}-pii-key/versions/latest",
            "sink": "bigquery",
        }
    elif pipeline == "gold_daily":
        parameters = {"lake": lake, "as_of": day, "sink": "bigquery"}
    else:
        raise ValueError(f"unknown pipeline {pipeline!r}")
    return {
        "launchParameter": {
            "jobName": f"{prefix}-{pipeline.replace('_', '-')}",
            "containerSpecGcsPath": f"{dataflow_bucket}/templates/{pipeline}.json",
            "parameters": parameters,
            "environment": {
                "serviceAccountEmail": f"{prefix}-dataflow@{project}.iam.gserviceaccount.com",
                "tempLocation": f"{dataflow_bucket}/temp",
                "stagingLocation": f"{dataflow_bucket}/staging",
                "ipConfiguration": "WORKER_IP_PRIVATE",
            },
        }
    }


try:
    from airflow import DAG
    from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator
    from airflow.timetables.interval import CronDataIntervalTimetable
except ImportError:  # the main venv and the tests: the bodies above, no DAG
    DAG = None

if DAG is not None:
    with DAG(
        dag_id="funnel_daily",
        description="funnel-lakehouse: backfill yesterday's landing files, then recompute gold",
        schedule=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,  # gold of one day before the next day's backfill
        default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
        tags=["funnel-lakehouse"],
    ) as dag:
        launches = [
            DataflowStartFlexTemplateOperator(
                task_id=pipeline,
                project_id=PROJECT,
                location=REGION,
                body=launch_body(pipeline),
                wait_until_finished=True,  # gold starts once the backfill's silver is released
            )
            for pipeline in PIPELINES
        ]
        launches[0] >> launches[1]
