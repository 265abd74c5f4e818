"""The data-quality checks as steps of the batch pipelines: after the
backfill's commit (bronze, silver and the dead letter of the days it wrote),
and the gate of the gold run (gold's new files, before anything is
published or released)."""

from __future__ import annotations

import logging

import apache_beam as beam

from schemas.tables import BRONZE, DEAD_LETTER, GOLD
from transforms import metrics
from transforms.lake import quality as lake_quality
from transforms.lake.commit import files_by_table
from transforms.lake.files import DataFile
from transforms.rules.quality import CheckResult, Gate
from transforms.sinks.quality import record_completeness, record_results


class _CheckFn(beam.DoFn):
    def __init__(self, lake: str, run_id: str, pipeline: str, bigquery=None):
        self._lake, self._run_id, self._pipeline, self._bigquery = lake, run_id, pipeline, bigquery

    def setup(self):
        self._failed = metrics.counter("dq_checks_failed")
        self._blocking = metrics.counter("dq_checks_blocking")
        self._evaluated = metrics.counter("dq_checks_evaluated")

    def record(self, results: list[CheckResult]) -> None:
        record_results(self._lake, results, self._run_id, self._pipeline, self._bigquery)
        metrics.add(self._evaluated, len(results))
        metrics.add(self._failed, sum(r.failed for r in results))
        metrics.add(self._blocking, sum(r.blocking for r in results))


class CheckBackfillFn(_CheckFn):
    """All ``DataFile``s of a backfill, once its commit is in (the side input
    ``committed``) -> the checks of bronze and silver on the event days it
    wrote, and of the dead letter per landing file it read, recorded, and
    how complete the recent event days are (a day still arriving tolerates
    the parents it has yet to receive)."""

    def process(self, files: list[DataFile], committed=()):
        by_table = files_by_table(files)
        days = {dict(f.partitions)["event_date"] for name in BRONZE for f in by_table.get(name, [])}
        as_of, estimates = lake_quality.completeness_estimates(self._lake)
        received = {r["event_date"]: r["expected_share"] for r in estimates}
        results = lake_quality.bronze_results(self._lake, days)
        results += lake_quality.silver_results(self._lake, days, received)
        results += lake_quality.dead_letter_results(self._lake, by_table.get(DEAD_LETTER.name, []))
        self.record(results)
        record_completeness(self._lake, as_of, estimates, self._run_id, self._pipeline, self._bigquery)
        yield len(results)


class GoldGateFn(_CheckFn):
    """All ``DataFile``s of a gold run -> gold's checks over them, recorded,
    and the ``Gate``: the publish and the commit that follow (side input
    ``gate``) do nothing when a blocking check failed."""

    def process(self, files: list[DataFile]):
        by_table = {name: fs for name, fs in files_by_table(files).items() if name in GOLD}
        results = lake_quality.gold_results(self._lake, by_table)
        self.record(results)
        gate = Gate.of(results)
        if not gate.release:
            logging.error("gold not released: blocking data-quality checks failed: %s", gate.blocking)
        yield gate


class CheckBackfill(beam.PTransform):
    """A backfill's ``DataFile``s and its commit's output -> its checks (after the commit)."""

    def __init__(self, lake: str, run_id: str, committed, bigquery=None):
        super().__init__()
        self._fn, self._committed = CheckBackfillFn(lake, run_id, "backfill", bigquery), committed

    def expand(self, files):
        return (
            files
            | "AllDataFiles" >> beam.combiners.ToList()
            | "EvaluateChecks" >> beam.ParDo(self._fn, committed=beam.pvalue.AsList(self._committed))
        )


class GoldGate(beam.PTransform):
    """A gold run's ``DataFile``s -> one ``Gate``."""

    def __init__(self, lake: str, run_id: str, bigquery=None):
        super().__init__()
        self._fn = GoldGateFn(lake, run_id, "gold_daily", bigquery)

    def expand(self, files):
        return files | "AllDataFiles" >> beam.combiners.ToList() | "EvaluateChecks" >> beam.ParDo(self._fn)
