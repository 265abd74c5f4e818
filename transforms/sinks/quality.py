"""Keeping data-quality results: ``ops/dq_results`` (one commit per run),
failures as ``data_quality`` rows of ``ops_alerts``, and with a BigQuery
target the same rows in dataset ``ops``."""

from __future__ import annotations

import logging

import pyarrow.compute as pc

from schemas import contract
from schemas.quality import Severity
from schemas.tables import DQ_COMPLETENESS, DQ_RESULTS, METRIC_REVISIONS, OPS_ALERTS_STREAM
from transforms.lake.commit import commit_append
from transforms.lake.files import write_data_file
from transforms.lake.tables import read_arrow
from transforms.rules.quality import CheckResult
from transforms.sinks.bigquery import insert_new_rows


class DataQualityError(SystemExit):
    """A run a blocking check failed (exit status 1, naming the checks)."""


def record_results(lake: str, results: list[CheckResult], run_id: str, pipeline: str, bigquery=None) -> list[dict]:
    """The results -> ``ops/dq_results`` (one commit, once per run), the
    failures -> ``ops_alerts`` (an alert already there is not raised again);
    with ``bigquery`` the same rows into dataset ``ops``. Returns the rows."""
    if not results:
        return []
    now = contract.now_micros()
    run_date = contract.micros_to_date(now)
    rows = [r.row(run_id, pipeline, now, run_date) for r in results]
    file = write_data_file(lake, DQ_RESULTS, rows, (("run_date", run_date),))
    commit_append(lake, DQ_RESULTS, [file], f"dq_results:{run_id}", pipeline=pipeline)
    existing = set(read_arrow(lake, OPS_ALERTS_STREAM, columns=["alert_id"]).column(0).to_pylist())
    alerts = [a for a in {a["alert_id"]: a for a in (r.alert(now) for r in results if r.failed)}.values()]
    alerts = [a for a in alerts if a["alert_id"] not in existing]
    if alerts:
        alert_file = write_data_file(lake, OPS_ALERTS_STREAM, alerts)
        commit_append(lake, OPS_ALERTS_STREAM, [alert_file], f"dq_alerts:{run_id}", pipeline=pipeline)
    if bigquery is not None:
        insert_new_rows(bigquery, DQ_RESULTS, rows)
        if alerts:
            insert_new_rows(bigquery, OPS_ALERTS_STREAM, alerts)
    failed = [r for r in results if r.failed]
    for r in failed:
        log = logging.error if r.blocking else logging.warning
        log(
            "data quality %s %s: %s (observed %s, expected %s..%s)",
            r.check.severity,
            r.check_id,
            r.subject,
            r.observed,
            r.expected_low,
            r.expected_high,
        )
    return rows


def record_completeness(lake: str, as_of: int | None, rows: list[dict], run_id: str, pipeline: str, bigquery=None):
    """A run's completeness estimates -> ``ops/dq_completeness`` (once per run; BigQuery ``ops`` too)."""
    if as_of is None or not rows:
        return
    as_of_date = contract.micros_to_date(as_of)
    rows = [{**r, "as_of_date": as_of_date, "as_of": as_of, "run_id": run_id} for r in rows]
    file = write_data_file(lake, DQ_COMPLETENESS, rows, (("as_of_date", as_of_date),))
    commit_append(lake, DQ_COMPLETENESS, [file], f"dq_completeness:{run_id}", pipeline=pipeline)
    if bigquery is not None:
        insert_new_rows(bigquery, DQ_COMPLETENESS, rows)


def record_revisions(lake: str, rows: list[dict], pipeline: str, bigquery=None) -> None:
    """A release's revisions -> ``ops/metric_revisions`` (once per release; BigQuery ``ops`` too)."""
    if not rows:
        return
    release_run_id, released_date = rows[0]["release_run_id"], rows[0]["released_date"]
    file = write_data_file(lake, METRIC_REVISIONS, rows, (("released_date", released_date),))
    commit_append(lake, METRIC_REVISIONS, [file], f"metric_revisions:{release_run_id}", pipeline=pipeline)
    if bigquery is not None:
        insert_new_rows(bigquery, METRIC_REVISIONS, rows)


def run_failures(lake: str, run_id: str) -> tuple[list[str], list[str]]:
    """The ``check_id (subject)`` of a run's failed checks: ``(blocking, warnings)``."""
    rows = read_arrow(lake, DQ_RESULTS, columns=["run_id", "check_id", "subject", "severity", "verdict"])
    rows = rows.filter(pc.and_(pc.equal(rows.column("run_id"), run_id), pc.equal(rows.column("verdict"), "fail")))
    failed = sorted(zip(*(rows.column(c).to_pylist() for c in ("severity", "check_id", "subject"))))
    blocking = [f"{c} ({s})" for sev, c, s in failed if sev == Severity.BLOCK]
    warnings = [f"{c} ({s})" for sev, c, s in failed if sev != Severity.BLOCK]
    return blocking, warnings
