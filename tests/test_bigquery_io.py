"""BigQuery tables from schemas/, created in the real local BigQuery emulator."""

import json
import uuid
from datetime import date

import pytest
from google.api_core.exceptions import BadRequest
from google.cloud import bigquery

from schemas.tables import ALL_TABLES, BRONZE, DEAD_LETTER, GOLD, SILVER
from transforms.lake.tables import snapshot
from transforms.sinks import bigquery as bigquery_io


def test_every_table_maps_to_a_valid_bigquery_definition():
    for table in ALL_TABLES.values():
        if table.layer == "raw":
            continue  # raw stays files in GCS (external table), per the contract
        bq = bigquery_io.bigquery_table("p", table)
        assert bq.table_id == table.name and bq.dataset_id == table.layer
        assert [f.name for f in bq.schema] == [c.name for c in table.columns]
        assert len(bq.clustering_fields or []) <= 4


def test_bronze_is_partitioned_by_event_date_and_clustered_by_platform():
    for table in BRONZE.values():
        bq = bigquery_io.bigquery_table("p", table)
        assert bq.time_partitioning.field == "event_date"
        assert bq.clustering_fields == ["platform"]


def test_a_non_date_partition_column_is_refused():
    from schemas.table import STRING, Table, col

    odd = Table("odd", "gold", "x", (col("k", STRING, "k"),), partition_by=("k",))
    with pytest.raises(ValueError, match="DATE or TIMESTAMP"):
        bigquery_io.bigquery_table("p", odd)


def test_tables_created_in_the_emulator_carry_schema_partitioning_and_descriptions(bigquery_emulator):
    bq = bigquery_emulator
    tables = [*BRONZE.values(), *SILVER.values(), *GOLD.values(), DEAD_LETTER]
    ids = bigquery_io.ensure_tables(bq, tables)
    assert bigquery_io.ensure_tables(bq, tables) == ids  # idempotent
    for table, table_id in zip(tables, ids):
        got = bq.get_table(table_id)
        assert got.description == table.description
        assert [(f.name, f.field_type, f.mode, f.description) for f in got.schema] == [
            (f.name, f.field_type, f.mode, f.description) for f in table.bigquery_schema()
        ]
        want = bigquery_io.bigquery_table(bq.project, table)
        assert (got.time_partitioning.field if got.time_partitioning else None) == (
            want.time_partitioning.field if want.time_partitioning else None
        )
        assert (got.clustering_fields or None) == (want.clustering_fields or None)


def test_rows_written_to_an_emulator_table_read_back(bigquery_emulator):
    bq = bigquery_emulator
    bq.create_dataset(f"{bq.project}.scratch", exists_ok=True)
    table_id = f"{bq.project}.scratch.t_{uuid.uuid4().hex[:8]}"
    bq.create_table(
        bigquery.Table(table_id, schema=[bigquery.SchemaField("k", "STRING"), bigquery.SchemaField("n", "INTEGER")])
    )
    assert bq.insert_rows_json(table_id, [{"k": "a", "n": 1}, {"k": "b", "n": 2}]) == []
    rows = {r.k: r.n for r in bq.query(f"SELECT k, n FROM `{table_id}`").result()}
    assert rows == {"a": 1, "b": 2}


# --- gold_daily --sink bigquery ---------------------------------------------------------------
from pipelines import backfill, gold_daily  # noqa: E402
from tests.bigquery_checks import assert_bigquery_holds_the_lake, bigquery_rows, fresh_project, lake_rows, sink_flags  # noqa: E402
from tests.conftest import read_table  # noqa: E402

pytestmark = pytest.mark.emulator


def _gold_to_bigquery(lake, bq):
    return gold_daily.main(["--lake", str(lake), *sink_flags(bq)])


@pytest.fixture(scope="module")
def silver_lake(tmp_path_factory):
    """Generated traffic (300 users, 2 days): every stage, abandoned carts, anonymous sessions."""
    from simulator import traffic

    root = tmp_path_factory.mktemp("bq")
    traffic.generate(traffic.Config(users=300, days=2, seed=3), str(root / "landing"))
    lake = root / "lake"
    backfill.main(["--lake", str(lake), "--input", str(root / "landing" / "*.jsonl")])
    gold_daily.main(["--lake", str(lake)])
    return lake


def test_gold_in_bigquery_equals_the_lake_gold_and_a_rerun_replaces_it(silver_lake, bigquery_emulator):
    bq = bigquery_emulator
    _gold_to_bigquery(silver_lake, bq)
    first = {name: bigquery_rows(bq, t) for name, t in GOLD.items()}
    for name, table in GOLD.items():
        assert first[name] == lake_rows(silver_lake, table), name  # also written to the lake
        got = bq.get_table(bigquery_io.table_id(bq.project, table))
        assert got.description == table.description  # the load keeps the definition
    assert sum(len(rows) for rows in first.values()) > 0
    _gold_to_bigquery(silver_lake, bq)
    assert {name: bigquery_rows(bq, t) for name, t in GOLD.items()} == first  # replaced, not appended


def test_a_gold_run_that_fails_leaves_the_previous_snapshot(silver_lake, bigquery_emulator, tmp_path):
    import shutil

    bq = bigquery_emulator
    _gold_to_bigquery(silver_lake, bq)
    before = {name: bigquery_rows(bq, t) for name, t in GOLD.items()}
    broken = tmp_path / "lake"
    shutil.copytree(silver_lake, broken)
    # A data file of the current version damaged (a file no version names would simply be ignored).
    damaged = snapshot(str(broken), SILVER["silver_events"]).files[0].path
    with open(damaged, "wb") as f:
        f.write(b"not parquet")
    with pytest.raises(Exception, match="(?i)parquet"):
        _gold_to_bigquery(broken, bq)
    assert {name: bigquery_rows(bq, t) for name, t in GOLD.items()} == before


def test_a_gold_run_failing_midway_through_its_writes_changes_no_table(silver_lake, bigquery_emulator, tmp_path):
    """The gold tables are replaced in one transaction: when the last
    table's insert fails, the tables replaced before it in the same run are
    rolled back too, and the lake is not committed either."""
    import shutil

    lake, other_lake = tmp_path / "lake", tmp_path / "other"
    shutil.copytree(silver_lake, lake)
    shutil.copytree(silver_lake, other_lake)
    bq = fresh_project()
    _gold_to_bigquery(lake, bq)
    before = {name: bigquery_rows(bq, t) for name, t in GOLD.items()}
    first_day = next(
        iter(bq.query(f"SELECT MIN(session_date) AS d FROM `{bq.project}.gold.fact_funnel_stage`").result())
    ).d.isoformat()

    # A gold run as of the first day changes the facts ...
    elsewhere = fresh_project()
    gold_daily.main(["--lake", str(other_lake), "--as-of", first_day, *sink_flags(elsewhere)])
    assert bigquery_rows(elsewhere, GOLD["fact_funnel_stage"]) != before["fact_funnel_stage"]

    # ... but not when the last table it writes was broken (its insert fails).
    *earlier, last = GOLD.values()
    bq.delete_table(bigquery_io.table_id(bq.project, last))
    bq.create_table(
        bigquery.Table(bigquery_io.table_id(bq.project, last), schema=[bigquery.SchemaField("unrelated", "STRING")])
    )
    # A permanent error (not retried): the insert names columns the broken table lacks.
    with pytest.raises(BadRequest, match=f'(?s){last.name}.*does not have a column with name "{last.column_names[0]}"'):
        gold_daily.main(["--lake", str(lake), "--as-of", first_day, *sink_flags(bq)])
    for table in earlier:
        assert bigquery_rows(bq, table) == before[table.name], table.name
        assert lake_rows(lake, table) == before[table.name], table.name  # nor the lake


def test_gold_facts_are_partitioned_by_their_date():
    funnel = bigquery_io.bigquery_table("p", GOLD["fact_funnel_stage"])
    assert (funnel.time_partitioning.field, funnel.clustering_fields) == ("session_date", ["platform"])
    activity = bigquery_io.bigquery_table("p", GOLD["fact_user_activity"])
    assert (activity.time_partitioning.field, activity.clustering_fields) == ("activity_date", ["user_id"])


def test_use_case_views_read_the_loaded_gold(silver_lake, bigquery_emulator):
    from schemas.views import VIEWS

    bq = bigquery_emulator
    _gold_to_bigquery(silver_lake, bq)
    for view in VIEWS.values():
        got = bq.get_table(f"{bq.project}.gold.{view.name}")
        assert got.table_type == "VIEW" and got.description == view.description
    stages = read_table(silver_lake / "gold" / "fact_funnel_stage")
    per_stage = {n: sum(1 for r in stages if r["stage_number"] == n) for n in range(1, 6)}
    dropoff = {r.stage_number: r for r in bq.query(f"SELECT * FROM `{bq.project}.gold.v_funnel_dropoff`").result()}
    assert all(per_stage.values())
    assert {n: r.sessions for n, r in dropoff.items()} == per_stage
    assert dropoff[2].dropped_since_previous_stage == per_stage[1] - per_stage[2]

    # the retargeting audience, with its repeated column, as the lake has it
    audience = sorted(
        (r["user_id"], r["email_sha256"], tuple(r["carted_articles"]))
        for r in read_table(silver_lake / "gold" / "mart_retargeting")
    )
    got = sorted(
        (r.user_id, r.email_sha256, tuple(r.carted_articles))
        for r in bq.query(
            f"SELECT user_id, email_sha256, carted_articles FROM `{bq.project}.gold.mart_retargeting`"
        ).result()
    )
    assert audience and got == audience

    trend = list(bq.query(f"SELECT * FROM `{bq.project}.gold.v_conversion_trend`").result())
    assert trend and all(r.conversion_rate_7d is None or 0 <= r.conversion_rate_7d <= 1 for r in trend)


# --- backfill --sink bigquery ---------------------------------------------------------------
def test_backfill_into_bigquery_holds_the_lake_and_reruns_and_replays_never_duplicate(bigquery_emulator, tmp_path):
    """Bronze, dead letter and silver merged by the backfill equal the lake
    after a first run, a rerun, a replay of the raw layer, a replay of one day
    and a landing file sent again with lines missing (whose rows go)."""
    from simulator import traffic

    bq = fresh_project()
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    traffic.generate(traffic.Config(users=150, days=2, seed=11, invalid_share=0.05), str(landing))

    def run(*args):
        backfill.main([*args, "--lake", str(lake), *sink_flags(bq)])
        return assert_bigquery_holds_the_lake(bq, lake)

    first = run("--input", str(landing / "*.jsonl"))
    assert all(first.values()), first  # every table has rows, the dead letter too
    assert run("--input", str(landing / "*.jsonl")) == first  # a rerun restates, adds nothing
    raw = str(lake / "raw" / "**" / "*.parquet")
    assert run("--input", raw) == first  # a replay of the raw layer
    day = min(r[0] for r in bq.query(f"SELECT MIN(event_date) FROM `{bq.project}.bronze.bronze_views`").result())
    assert run("--input", raw, "--from", day.isoformat(), "--to", day.isoformat()) == first

    resent = sorted(landing.glob("*.jsonl"))[0]
    lines = resent.read_bytes().splitlines(keepends=True)
    resent.write_bytes(b"".join(lines[: len(lines) // 2]))
    fewer = run("--input", str(resent))
    assert sum(fewer.values()) < sum(first.values())


def test_merge_statement_restates_exactly_the_lake_rule():
    from transforms.lake.commit import Replace, ReplaceScope

    views = BRONZE["bronze_views"]
    sql, params = bigquery_io.merge_statement(
        "p",
        bigquery_io.BigQueryWrite(views, "upsert", Replace(views, ReplaceScope.SOURCES, frozenset({"a.jsonl", None}))),
        "p.ops.s",
        {"2026-11-02"},
    )
    assert "WHEN MATCHED THEN UPDATE" in sql
    assert "WHEN NOT MATCHED BY SOURCE AND (T.source_file IN UNNEST(@replaced_sources) OR T.source_file IS NULL)" in sql
    assert "T.event_date IN UNNEST(@prune_values)" in sql  # a MERGE reads only the partitions it touches
    assert {p.name: p.values for p in params} == {"prune_values": [date(2026, 11, 2)], "replaced_sources": ["a.jsonl"]}
    append, _ = bigquery_io.merge_statement("p", bigquery_io.BigQueryWrite(views, "append"), "p.ops.s", set())
    assert "WHEN MATCHED" not in append and "NOT MATCHED BY SOURCE" not in append  # inserts only new keys
    dates, params = bigquery_io.merge_statement(
        "p",
        bigquery_io.BigQueryWrite(
            views, "upsert", Replace(views, ReplaceScope.PARTITIONS, frozenset({"2026-11-03", "2026-11-02"}))
        ),
        "p.ops.s",
        {"2026-11-02"},
    )
    assert "WHEN NOT MATCHED BY SOURCE AND (T.event_date IN UNNEST(@replaced_partitions))" in dates
    assert {p.name: p.values for p in params}["replaced_partitions"] == [date(2026, 11, 2), date(2026, 11, 3)]
    with pytest.raises(ValueError, match="only an upsert restates"):
        bigquery_io.BigQueryWrite(views, "append", Replace(views, ReplaceScope.TABLE))


def test_an_erasure_with_the_bigquery_sink_leaves_bigquery_equal_to_the_erased_lake(bigquery_emulator, tmp_path):
    from pipelines import erase_user
    from schemas.tables import RUN_LOG
    from tests.conftest import SAMPLE

    lake, bq = tmp_path / "lake", fresh_project()
    backfill.main(["--input", str(SAMPLE), "--lake", str(lake), *sink_flags(bq)])
    gold_daily.main(["--lake", str(lake), *sink_flags(bq)])
    assert any(r[0] == "u-1001" for r in bigquery_rows(bq, SILVER["silver_users"]))
    audit = erase_user.main(["--lake", str(lake), "--user-id", "u-1001", *sink_flags(bq)])
    deleted = json.loads(audit["rows_deleted_json"])
    assert all(deleted[f"bq:{name}"] == n for name, n in deleted.items() if name.startswith("bronze."))
    assert deleted["bronze.bronze_users"] >= 1
    assert_bigquery_holds_the_lake(bq, lake)
    for table in GOLD.values():
        assert bigquery_rows(bq, table) == lake_rows(lake, table), table.name
    for table in [*BRONZE.values(), *SILVER.values(), *GOLD.values()]:
        if "user_id" in table.column_names:
            users = bq.query(
                f"SELECT COUNT(*) AS n FROM `{bigquery_io.table_id(bq.project, table)}` WHERE user_id = 'u-1001'"
            ).result()
            assert next(iter(users)).n == 0, table.name
    pipelines = {
        r.pipeline
        for r in bq.query(f"SELECT DISTINCT pipeline FROM `{bigquery_io.table_id(bq.project, RUN_LOG)}`").result()
    }
    assert pipelines == {"backfill", "gold_daily"}


def test_a_blocking_data_quality_failure_leaves_bigquery_gold_as_released(silver_lake, bigquery_emulator, tmp_path):
    """The gold gate with ``--sink bigquery``: a block check failing keeps
    BigQuery's gold as the last release and puts the results in ``ops``;
    after the fix the rerun replaces it."""
    import shutil

    from schemas.tables import DQ_RESULTS
    from tests.lake_defects import duplicate_silver_sessions
    from transforms.sinks.quality import DataQualityError

    lake = tmp_path / "lake"
    shutil.copytree(silver_lake, lake)
    bq = fresh_project()
    _gold_to_bigquery(lake, bq)
    released = {name: bigquery_rows(bq, t) for name, t in GOLD.items()}

    duplicate_silver_sessions(str(lake))
    with pytest.raises(DataQualityError, match=r"fact_funnel_stage\.unique"):
        _gold_to_bigquery(lake, bq)
    assert {name: bigquery_rows(bq, t) for name, t in GOLD.items()} == released
    failed = bq.query(
        f"SELECT check_id FROM `{bigquery_io.table_id(bq.project, DQ_RESULTS)}` "
        "WHERE verdict = 'fail' AND severity = 'block'"
    ).result()
    assert "fact_funnel_stage.unique.session_id+stage_number" in {r.check_id for r in failed}

    landing = silver_lake.parent / "landing"
    backfill.main(["--lake", str(lake), "--input", str(landing / "*.jsonl"), "--rebuild-silver"])
    _gold_to_bigquery(lake, bq)
    assert {name: bigquery_rows(bq, t) for name, t in GOLD.items()} == {
        name: lake_rows(lake, t) for name, t in GOLD.items()
    }
