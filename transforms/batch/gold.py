"""Silver -> gold (Beam): ``BuildGold``, over the rules of ``transforms.rules.gold``.

One shuffle (``ByUser``) brings every silver row of a user -- the user
record, the user's sessions and everything resolved to them -- into one
shard; rows of anonymous sessions go by session, unresolved rows by their
own key. Each shard then computes, vectorized, its sessions' funnel stages
(``transforms.rules.funnel.stage_times``), ``fact_funnel_stage``, ``dim_user``,
``fact_user_activity`` and partial marts; the partial marts (a few rows
per period and platform) are summed in one last step. Distinct counts add
up across shards because a user, a session and a payment live in exactly
one shard.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from schemas.funnels import Funnel
from transforms import metrics
from transforms.batch.shuffle import ShardedShuffle
from transforms.rules import alerts, defined_funnels
from transforms.rules.gold import (
    OWN_TIME,
    SHARD_KEY,
    ab_partials,
    alert_table,
    barcode_partials,
    conversion_partials,
    dim_user,
    empty_inputs,
    end_of_day_micros,
    fact_funnel_stage,
    fact_user_activity,
    gold_table,
    mart_ab_test,
    mart_barcode_activity,
    mart_conversion_rate,
    scans,
    session_summaries,
)
from transforms.rules.retargeting import audience


class CutAtAsOfFn(beam.DoFn):
    """Keeps the rows whose own time is on or before the as-of date, so a
    recompute "as of" a past day restates that day as it was then knowable."""

    def __init__(self, as_of: date):
        self._end = end_of_day_micros(as_of)
        self._dropped = metrics.counter("gold_records_after_as_of")

    def process(self, tagged):
        name, rows = tagged
        if name in OWN_TIME:
            t = rows.column(OWN_TIME[name]).cast(pa.int64())
            keep = pc.fill_null(pc.less(t, self._end), True)
            kept = rows.filter(keep)
            metrics.add(self._dropped, rows.num_rows - kept.num_rows)
            rows = kept
        yield name, rows


class GoldShardFn(beam.DoFn):
    """A shard of silver (by user) -> its gold fact and dimension rows, its
    retargeting audience and alerts, and (output ``partials``) its partial
    marts. ``clock``: the recompute's now (epoch micros; None: no cut), for
    the rules that wait (a cart abandoned, a confirmation overdue)."""

    def __init__(self, clock: int | None = None, funnels: tuple[Funnel, ...] = ()):
        self._clock, self._funnels = clock, funnels
        self._inputs = defined_funnels.gold_inputs(funnels)

    def process(self, keyed):
        _, by_table = keyed
        g = {**empty_inputs(self._inputs), **{name: rows.combine_chunks() for name, rows in by_table.items()}}
        summary = session_summaries(g)
        users = g["silver_users"]
        yield "fact_funnel_stage", fact_funnel_stage(summary, users)
        yield "dim_user", dim_user(summary, users)
        yield "fact_user_activity", fact_user_activity(g)
        yield (
            "mart_retargeting",
            gold_table("mart_retargeting", audience(g["silver_events"], g["silver_sessions"], users, self._clock)),
        )
        yield (
            "ops_alerts",
            alert_table(alerts.shard_alerts(g["silver_events"], g["silver_event_responses"], self._clock)),
        )
        yield beam.pvalue.TaggedOutput("partials", ("mart_ab_test", ab_partials(summary)))
        yield beam.pvalue.TaggedOutput("partials", (_WINDOWS, alerts.window_counts(g["silver_event_responses"])))
        yield beam.pvalue.TaggedOutput("partials", ("mart_conversion_rate", conversion_partials(summary)))
        counts, seconds = barcode_partials(scans(summary, g))
        yield beam.pvalue.TaggedOutput("partials", ("mart_barcode_activity", counts))
        yield beam.pvalue.TaggedOutput("partials", (_SECONDS, seconds))
        if self._funnels:
            facts, entries = defined_funnels.funnel_rows(self._funnels, g, self._clock)
            yield "fact_funnel", facts
            yield beam.pvalue.TaggedOutput("partials", (_FUNNEL_ENTRIES, entries))


_SECONDS = "mart_barcode_activity#seconds"


_WINDOWS = "ops_alerts#windows"
_FUNNEL_ENTRIES = "mart_funnel#entries"  # a shard's entries of each funnel, as mart_funnel counts them


def _finish_marts(keyed, clock: int | None, funnels: tuple[Funnel, ...] = ()):
    _, parts = keyed
    by_mart = {}
    for name, table in parts:
        by_mart.setdefault(name, []).append(table)
    if funnels:
        entries = defaultdict(list)
        for shard in by_mart[_FUNNEL_ENTRIES]:
            for name, table in shard.items():
                entries[name].append(table)
        yield "mart_funnel", defined_funnels.mart_rows(funnels, entries)
    yield "mart_conversion_rate", mart_conversion_rate(pa.concat_tables(by_mart["mart_conversion_rate"]))
    yield (
        "mart_barcode_activity",
        mart_barcode_activity(pa.concat_tables(by_mart["mart_barcode_activity"]), pa.concat_tables(by_mart[_SECONDS])),
    )
    yield "mart_ab_test", mart_ab_test(pa.concat_tables(by_mart["mart_ab_test"]))
    yield "ops_alerts", alert_table(alerts.rate_alerts(pa.concat_tables(by_mart[_WINDOWS]), clock))


class BuildGold(beam.PTransform):
    """``(silver table name, Arrow rows)`` (one PCollection or several) ->
    ``(gold table name, Arrow rows)`` as two PCollections: the facts and
    dimension, and the marts; with ``funnels`` (``schemas.funnels``) their
    ``fact_funnel`` and ``mart_funnel`` too."""

    def __init__(self, shards: int, clock: int | None = None, funnels: tuple[Funnel, ...] = ()):
        super().__init__()
        self._shards, self._clock, self._funnels = shards, clock, funnels

    def expand(self, silver):
        shards = (
            silver
            | "ByUser" >> ShardedShuffle(SHARD_KEY, self._shards, defined_funnels.gold_inputs(self._funnels))
            | "PerShard" >> beam.ParDo(GoldShardFn(self._clock, self._funnels)).with_outputs("partials", main="facts")
        )
        marts = (
            shards.partials
            | "OneKey" >> beam.Map(lambda part: (None, part))
            | "AllPartials" >> beam.GroupByKey()
            | "FinishMarts" >> beam.FlatMap(_finish_marts, self._clock, self._funnels)
        )
        return shards.facts, marts
