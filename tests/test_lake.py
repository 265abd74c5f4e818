"""The lake on Delta Lake: landing files and the raw layer, data files and
the commit rules, and the faults a committer meets (a crash halfway, a
retry, a run dying before its commit, a replay racing a streaming append,
two replays of one partition); releases and time travel."""

import gzip
import json
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines import backfill, gold_daily
from reporting.explorer import Gold
from schemas.tables import BRONZE, GOLD, RAW, RELEASES, SILVER
from tests.conftest import SAMPLE, T0, local_pipeline, read_table
from transforms.lake import commit as lake_commit
from transforms.lake import files as lake_files
from transforms.lake.commit import (
    CommitFn,
    CommitLakeWrites,
    CommitPlan,
    LakeConflictError,
    Replace,
    ReplaceScope,
    commit_append,
    commit_replace,
    read_plan,
)
from transforms.lake.files import WriteDataFiles, write_data_file
from transforms.lake.landing import RAW_FILES, ReadLandingFiles
from transforms.lake.tables import layer_versions, open_table, read_arrow, snapshot

LINES = [b'{"record_type":"view","n":1}', b"", b"\xff\xfe not utf-8", b'{"record_type":"view","n":2}\r']
CLICKS = BRONZE["bronze_clicks"]


def _read(lake, inputs, expected):
    """Reads ``inputs`` and commits the raw copies, as the backfill does."""
    with local_pipeline() as p:
        read = p | ReadLandingFiles(inputs, str(lake), ingested_at=T0)
        rows = read.chunks | beam.FlatMap(RAW.from_arrow)
        assert_that(
            rows | beam.Map(lambda r: (os.path.basename(r["source_file"]), r["source_line"], r["data"])),
            equal_to(expected),
        )
        _ = read[RAW_FILES] | CommitLakeWrites(str(lake), CommitPlan("read-" + os.urandom(4).hex(), "test", ()))


def test_jsonl_gz_and_parquet_landing_files_become_raw_rows_and_raw_files_once_per_content(tmp_path):
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(b"\n".join(LINES) + b"\n")
    packed = tmp_path / "b.jsonl.gz"
    packed.write_bytes(gzip.compress(b"\n".join(LINES[:1]) + b"\n"))
    parquet = tmp_path / "c.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"record_type": "view", "schema_version": 1, "payload": json.dumps({"view_id": "v"})},
                {"record_type": "view", "schema_version": None, "payload": "{broken"},
            ]
        ),
        parquet,
    )
    lake = tmp_path / "lake"
    expected = [
        ("a.jsonl", 1, LINES[0]),
        ("a.jsonl", 3, LINES[2]),
        ("a.jsonl", 4, LINES[3][:-1]),
        ("b.jsonl.gz", 1, LINES[0]),
        ("c.parquet", 1, b'{"record_type":"view","schema_version":1,"payload":"{\\"view_id\\": \\"v\\"}"}'),
        ("c.parquet", 2, b'{"record_type":"view","payload":"{broken"}'),
    ]
    _read(lake, [str(x) for x in (plain, packed, parquet)], expected)
    first = snapshot(str(lake), RAW)
    assert len(first.files) == 3
    assert sorted(r["data"] for r in read_table(lake / "raw")) == sorted(d for _, _, d in expected)

    # The same contents again (another run): raw gains nothing, and the run's copies are not left behind.
    _read(lake, [str(x) for x in (plain, packed, parquet)], expected)
    again = snapshot(str(lake), RAW)
    assert again == first  # not even an empty commit
    on_disk = [f for _, _, names in os.walk(lake / "raw") for f in names if f.endswith(".parquet")]
    assert len(on_disk) == 3


def test_raw_layer_files_replay_as_they_were_ingested(tmp_path):
    landing = tmp_path / "a.jsonl"
    landing.write_bytes(LINES[0] + b"\n")
    lake = tmp_path / "lake"
    expected = [("a.jsonl", 1, LINES[0])]
    _read(lake, [str(landing)], expected)
    _read(lake, list(snapshot(str(lake), RAW).files), expected)  # replay from raw: same rows, nothing new
    assert len(snapshot(str(lake), RAW).files) == 1


def click(click_id, day, source):
    return {
        "click_id": click_id,
        "session_id": "s",
        "click_timestamp": T0,
        "event_date": day,
        "platform": "web",
        "source": "x",
        "schema_version": 1,
        "ingested_at": T0,
        "source_file": source,
    }


def _write(lake, table, rows, rule, run_id=None):
    """Each row its own element (a writer's buffering across elements is
    exercised), written and committed by a pipeline as a backfill does."""
    plan = CommitPlan(run_id or "run-" + os.urandom(4).hex(), "test", read_plan(str(lake), [rule]))
    with local_pipeline() as p:
        _ = (
            p
            | beam.Create([(table.name, table.to_arrow([row], with_partition_columns=True)) for row in rows])
            | WriteDataFiles([table], str(lake), by_source=(table.name,) if rule.scope is ReplaceScope.SOURCES else ())
            | CommitLakeWrites(str(lake), plan)
        )


def _clicks(lake):
    return sorted((r["click_id"], str(r["event_date"])) for r in read_table(lake / "bronze" / CLICKS.name))


def test_replace_rules_remove_exactly_what_they_name(tmp_path):
    lake = tmp_path / "lake"
    _write(
        lake,
        CLICKS,
        [
            click("c1", "2026-11-01", "f1"),
            click("c2", "2026-11-02", "f1"),
            click("c3", "2026-11-02", "f2"),
            click("c4", "2026-11-02", None),
        ],
        Replace(CLICKS, ReplaceScope.SOURCES, frozenset({"f1", "f2", None})),
    )
    assert [c for c, _ in _clicks(lake)] == ["c1", "c2", "c3", "c4"]

    # Re-ingesting landing file f1 replaces f1's rows only (which files hold them: the log's statistics).
    _write(lake, CLICKS, [click("c1b", "2026-11-01", "f1")], Replace(CLICKS, ReplaceScope.SOURCES, frozenset({"f1"})))
    assert [c for c, _ in _clicks(lake)] == ["c1b", "c3", "c4"]

    # A replay of Pub/Sub rows (source None) replaces those only.
    _write(lake, CLICKS, [click("c4b", "2026-11-01", None)], Replace(CLICKS, ReplaceScope.SOURCES, frozenset({None})))
    assert [c for c, _ in _clicks(lake)] == ["c1b", "c3", "c4b"]

    # A date range replaces exactly its partitions, whatever the source.
    _write(
        lake,
        CLICKS,
        [click("c9", "2026-11-02", "f9")],
        Replace(CLICKS, ReplaceScope.PARTITIONS, frozenset({"2026-11-02"})),
    )
    assert _clicks(lake) == [("c1b", "2026-11-01"), ("c4b", "2026-11-01"), ("c9", "2026-11-02")]


def test_a_new_file_outside_what_the_run_replaces_is_refused_before_anything_is_committed(tmp_path):
    lake = str(tmp_path / "lake")
    outside = write_data_file(
        lake, CLICKS, [click("c1", "2026-11-03", "f1")], (("event_date", "2026-11-03"), ("platform", "web"))
    )
    rule = Replace(CLICKS, ReplaceScope.PARTITIONS, frozenset({"2026-11-02"}))
    with pytest.raises(ValueError, match="outside the replaced event_date"):
        commit_replace(lake, rule, [outside], "run-1", snapshot(lake, CLICKS), "test")
    other_source = write_data_file(
        lake, CLICKS, [click("c1", "2026-11-02", "f2")], (("event_date", "2026-11-02"), ("platform", "web"))
    )
    with pytest.raises(ValueError, match="landing file this run does not replace"):
        commit_replace(
            lake,
            Replace(CLICKS, ReplaceScope.SOURCES, frozenset({"f1"})),
            [other_source],
            "run-1",
            snapshot(lake, CLICKS),
            "test",
        )
    assert snapshot(lake, CLICKS).rows == 0


def test_truncate_and_load_of_an_empty_result_leaves_an_empty_readable_table(tmp_path):
    table = SILVER["silver_clicks"]
    lake = tmp_path / "lake"
    row = {
        "click_id": "c",
        "platform": "web",
        "record_platform": "web",
        "click_timestamp": T0,
        "copies": 1,
        "event_date": "2026-11-02",
    }
    _write(lake, table, [row], Replace(table, ReplaceScope.TABLE))
    assert len(read_table(lake / "silver" / table.name)) == 1
    _write(lake, table, [], Replace(table, ReplaceScope.TABLE))
    empty = read_arrow(str(lake), table)
    assert empty.num_rows == 0 and empty.schema.names == table.column_names


def test_a_run_that_fails_before_its_commit_leaves_every_table_raw_included_at_its_version(tmp_path, monkeypatch):
    lake = tmp_path / "lake"
    backfill.main(["--input", str(SAMPLE), "--lake", str(lake)])
    tables = [RAW, *BRONZE.values(), *SILVER.values(), RELEASES]
    before = {t.name: snapshot(str(lake), t).version for t in tables}

    def crash(self, by_table):
        raise RuntimeError("the worker died before the commit")

    monkeypatch.setattr(CommitFn, "commit", crash)
    other = tmp_path / "other.jsonl"
    other.write_bytes(SAMPLE.read_bytes() + b"\n")  # other content: a raw copy to add
    with pytest.raises(Exception, match="died before the commit"):
        backfill.main(["--input", str(other), "--lake", str(lake)])
    assert {t.name: snapshot(str(lake), t).version for t in tables} == before


def test_a_committer_killed_halfway_and_rerun_commits_everything_once_and_readers_see_all_old_or_all_new(
    tmp_path, monkeypatch
):
    lake = str(tmp_path / "lake")
    rules = [Replace(t, ReplaceScope.TABLE) for t in GOLD.values()]

    def gold_run(run_id, marker):
        files = [write_data_file(lake, t, _one_row(t, marker)) for t in GOLD.values()]
        return CommitFn(lake, CommitPlan(run_id, "gold_daily", read_plan(lake, rules), releases=("gold",))), files

    old_fn, old_files = gold_run("run-old", "old")
    list(old_fn.process(old_files))
    assert _markers(Gold.of(lake)) == {"old"}

    new_fn, new_files = gold_run("run-new", "new")
    real, committed = lake_commit.commit_replace, []

    def dies_after_three(*args, **kwargs):
        if len(committed) == 3:
            raise SystemExit("killed")
        committed.append(args[1].table.name)
        return real(*args, **kwargs)

    monkeypatch.setattr(lake_commit, "commit_replace", dies_after_three)
    with pytest.raises(SystemExit):
        list(new_fn.process(new_files))
    # Three tables hold the new rows now, yet gold read through its release is all old.
    assert {t: _markers_of(read_arrow(lake, GOLD[t])) for t in committed} == {t: {"new"} for t in committed}
    assert _markers(Gold.of(lake)) == {"old"}

    monkeypatch.setattr(lake_commit, "commit_replace", real)
    versions = {t: open_table(lake, GOLD[t]).version() for t in committed}
    list(new_fn.process(new_files))  # the runner retries the committer
    assert {t: open_table(lake, GOLD[t]).version() for t in committed} == versions  # no second commit
    gold = Gold.of(lake)
    assert _markers(gold) == {"new"}
    assert all(len(gold.rows(t)) == 1 for t in GOLD)  # nothing duplicated, nothing lost

    releases = open_table(lake, RELEASES).version()
    list(new_fn.process(new_files))  # and once more: a no-op everywhere
    assert open_table(lake, RELEASES).version() == releases
    assert {t: open_table(lake, GOLD[t]).version() for t in GOLD} == {
        t: v for t, v in layer_versions(lake, GOLD).items()
    }


def _one_row(table, marker):
    values = {
        "STRING": marker,
        "INT64": 1,
        "FLOAT64": 1.0,
        "BOOL": True,
        "DATE": "2026-11-02",
        "TIMESTAMP": T0,
        "BYTES": b"x",
    }
    row = {c.name: ([values[c.type]] if c.repeated else values[c.type]) for c in table.columns}
    return table.to_arrow([row], with_partition_columns=True)


def _markers_of(arrow):
    first_string = next(f.name for f in arrow.schema if pa.types.is_string(f.type))
    return set(arrow.column(first_string).to_pylist())


def _markers(gold):
    return set().union(*(_markers_of(read_arrow(gold.lake, GOLD[t], gold.versions[t])) for t in GOLD))


def test_a_retried_streaming_commit_is_a_no_op(tmp_path):
    lake = str(tmp_path / "lake")
    batch = [
        write_data_file(
            lake, CLICKS, [click("c1", "2026-11-02", None)], (("event_date", "2026-11-02"), ("platform", "web"))
        )
    ]
    assert commit_append(lake, CLICKS, batch, "stream_ingest-1", 7)
    version = open_table(lake, CLICKS).version()
    retried = [
        write_data_file(
            lake, CLICKS, [click("c1", "2026-11-02", None)], (("event_date", "2026-11-02"), ("platform", "web"))
        )
    ]
    assert not commit_append(lake, CLICKS, retried, "stream_ingest-1", 7)  # the same batch again
    assert open_table(lake, CLICKS).version() == version
    assert not os.path.exists(retried[0].path)  # its files are not left behind
    assert [c for c, _ in _clicks(tmp_path / "lake")] == ["c1"]


def test_a_replay_racing_streaming_appends_loses_none_of_them(tmp_path):
    lake = str(tmp_path / "lake")
    partition = (("event_date", "2026-11-02"), ("platform", "web"))
    commit_append(
        lake,
        CLICKS,
        [write_data_file(lake, CLICKS, [click("old", "2026-11-02", None)], partition)],
        "stream_ingest-1",
        1,
    )
    for scope, values in ((ReplaceScope.PARTITIONS, {"2026-11-02"}), (ReplaceScope.SOURCES, {None})):
        rule = Replace(CLICKS, scope, frozenset(values))
        read = snapshot(lake, CLICKS)  # the replay reads ...
        replayed = [write_data_file(lake, CLICKS, [click(f"replayed-{scope.value}", "2026-11-02", None)], partition)]
        sequence = len(read.files) + 1
        streamed = write_data_file(lake, CLICKS, [click(f"streamed-{scope.value}", "2026-11-02", None)], partition)
        commit_append(lake, CLICKS, [streamed], "stream_ingest-1", sequence)  # ... the stream appends ...
        commit_replace(lake, rule, replayed, f"replay-{scope.value}", read, "backfill")  # ... the replay commits
        ids = {c for c, _ in _clicks(tmp_path / "lake")}
        assert f"streamed-{scope.value}" in ids and f"replayed-{scope.value}" in ids


def test_two_replays_of_one_partition_one_wins_the_other_fails_loudly(tmp_path):
    lake = str(tmp_path / "lake")
    partition = (("event_date", "2026-11-02"), ("platform", "web"))
    _write(
        tmp_path / "lake",
        CLICKS,
        [click("c0", "2026-11-02", "f0")],
        Replace(CLICKS, ReplaceScope.PARTITIONS, frozenset({"2026-11-02"})),
    )
    rule = Replace(CLICKS, ReplaceScope.PARTITIONS, frozenset({"2026-11-02"}))
    read = snapshot(lake, CLICKS)  # both replays read the same version
    first = [write_data_file(lake, CLICKS, [click("first", "2026-11-02", "f1")], partition)]
    second = [write_data_file(lake, CLICKS, [click("second", "2026-11-02", "f2")], partition)]
    commit_replace(lake, rule, first, "replay-1", read, "backfill")
    with pytest.raises(LakeConflictError, match="another run replaced or removed files this run replaces"):
        commit_replace(lake, rule, second, "replay-2", read, "backfill")
    assert [c for c, _ in _clicks(tmp_path / "lake")] == ["first"]


def test_a_writer_holds_a_bounded_number_of_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(lake_files, "ROWS_BUFFERED", 4)  # write the largest partition out past 4 rows held
    lake = tmp_path / "lake"
    rows = [click(f"c{i}", f"2026-11-0{1 + i % 2}", "f") for i in range(10)]
    _write(lake, CLICKS, rows, Replace(CLICKS, ReplaceScope.SOURCES, frozenset({"f"})))
    files = snapshot(str(lake), CLICKS).files
    assert len(files) > 2  # more than one file per partition: nothing held the whole input
    by_partition = {}
    for file in files:
        by_partition.setdefault(file.partition["event_date"], []).extend(
            r["click_id"] for r in pq.read_table(file.path).to_pylist()
        )
    assert {day: sorted(ids) for day, ids in by_partition.items()} == {
        "2026-11-01": sorted(f"c{i}" for i in range(0, 10, 2)),
        "2026-11-02": sorted(f"c{i}" for i in range(1, 10, 2)),
    }


def test_gold_and_silver_as_of_an_earlier_release_are_what_the_earlier_runs_wrote(tmp_path):
    lake = tmp_path / "lake"
    backfill.main(["--input", str(SAMPLE), "--lake", str(lake)])
    gold_daily.main(["--lake", str(lake)])
    first_release = open_table(str(lake), RELEASES).version()
    first = {t: sorted(map(repr, Gold.of(str(lake)).rows(t))) for t in GOLD}

    more = tmp_path / "more.jsonl"
    more.write_bytes(SAMPLE.read_bytes().replace(b'"s-', b'"t-').replace(b'"e-', b'"f-'))
    backfill.main(["--input", str(SAMPLE), "--input", str(more), "--lake", str(lake)])
    gold_daily.main(["--lake", str(lake)])
    latest = {t: sorted(map(repr, Gold.of(str(lake)).rows(t))) for t in GOLD}
    assert latest != first
    assert {t: sorted(map(repr, Gold.of(str(lake), as_of_version=first_release).rows(t))) for t in GOLD} == first

    # gold_daily over silver as of the first release rebuilds the first gold.
    gold_daily.main(["--lake", str(lake), "--as-of-version", str(first_release)])
    assert {t: sorted(map(repr, Gold.of(str(lake)).rows(t))) for t in GOLD} == first


def test_a_layer_reads_the_same_from_pyarrow_polars_and_duckdb_as_the_readme_shows(tmp_path):
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    lake = tmp_path / "lake"
    backfill.main(["--input", str(SAMPLE), "--lake", str(lake)])
    gold_daily.main(["--lake", str(lake)])
    path = str(lake / "gold" / "mart_conversion_rate")
    dt = DeltaTable(path)
    rows = dt.to_pyarrow_table()
    con = duckdb.connect()
    con.register("conversion", dt.to_pyarrow_dataset())
    by_duckdb = con.sql("select period_grain, sum(sessions_browse) from conversion group by 1 order by 1").fetchall()
    by_polars = (
        pl.read_delta(path).group_by("period_grain").agg(pl.col("sessions_browse").sum()).sort("period_grain").rows()
    )
    by_pyarrow = sorted(
        rows.group_by("period_grain").aggregate([("sessions_browse", "sum")]).to_pylist(),
        key=lambda r: r["period_grain"],
    )
    assert by_duckdb == by_polars == [(r["period_grain"], r["sessions_browse_sum"]) for r in by_pyarrow]
    assert by_duckdb and all(n > 0 for _, n in by_duckdb)


def test_maintenance_compacts_per_origin_vacuums_and_keeps_what_readers_need(tmp_path):
    from pipelines import maintain

    lake = str(tmp_path / "lake")
    partition = (("event_date", "2026-11-02"), ("platform", "web"))
    for n in range(5):  # five streaming batches, one small file each
        commit_append(
            lake,
            CLICKS,
            [write_data_file(lake, CLICKS, [click(f"s{n}", "2026-11-02", None)], partition)],
            "stream_ingest-1",
            n + 1,
        )
    for source in ("f1", "f2"):  # two landing files' rows in the same partition
        rule = Replace(CLICKS, ReplaceScope.SOURCES, frozenset({source}))
        commit_replace(
            lake,
            rule,
            [
                write_data_file(lake, CLICKS, [click(f"{source}-{i}", "2026-11-02", source)], partition)
                for i in range(2)
            ],
            f"backfill-{source}",
            snapshot(lake, CLICKS),
            "backfill",
        )
    orphan = write_data_file(lake, CLICKS, [click("never-committed", "2026-11-02", None)], partition)
    before = _clicks(tmp_path / "lake")

    reports = maintain.main(["--lake", lake, "--retention-hours", "0"])
    after = snapshot(lake, CLICKS)
    assert _clicks(tmp_path / "lake") == before  # the same rows
    assert reports[CLICKS.name].files_before == 9 and len(after.files) == 3  # one file per origin
    assert sorted((f.source or "", f.from_pubsub, f.rows) for f in after.files) == [
        ("", True, 5),
        ("f1", False, 2),
        ("f2", False, 2),
    ]
    assert not os.path.exists(orphan.path)  # a failed run's file, vacuumed
    on_disk = [
        f
        for folder, _, names in os.walk(tmp_path / "lake" / "bronze")
        if "_delta_log" not in folder
        for f in names
        if f.endswith(".parquet")
    ]
    assert len(on_disk) == 3  # replaced files vacuumed too

    # A replay of one landing file still replaces exactly its rows after the compaction.
    commit_replace(
        lake,
        Replace(CLICKS, ReplaceScope.SOURCES, frozenset({"f1"})),
        [write_data_file(lake, CLICKS, [click("f1-new", "2026-11-02", "f1")], partition)],
        "backfill-again",
        snapshot(lake, CLICKS),
        "backfill",
    )
    assert sorted(c for c, _ in _clicks(tmp_path / "lake")) == sorted(
        ["f1-new", "f2-0", "f2-1"] + [f"s{n}" for n in range(5)]
    )


def test_silver_files_of_a_day_are_compacted_whatever_their_sources(tmp_path):
    """Silver's merges find rows by key, so the stream's small per-batch
    files merge per partition, however many landing files and messages
    their rows came from."""
    from transforms.lake.maintenance import compact

    lake, table = str(tmp_path / "lake"), SILVER["silver_clicks"]
    for n, source in enumerate(("f1", "f2", None)):
        row = {
            "click_id": f"c{n}",
            "platform": "web",
            "record_platform": "web",
            "click_timestamp": T0,
            "copies": 1,
            "event_date": "2026-11-02",
            "ingested_at": T0,
            "source_file": source,
        }
        commit_append(
            lake,
            table,
            [write_data_file(lake, table, [row], (("event_date", "2026-11-02"),))],
            "stream_ingest-1",
            n + 1,
        )
    before = sorted(r["click_id"] for r in read_arrow(lake, table).to_pylist())
    assert compact(lake, table) == 2 and len(snapshot(lake, table).files) == 1  # three files merged into one
    assert sorted(r["click_id"] for r in read_arrow(lake, table).to_pylist()) == before


def test_vacuum_keeps_the_released_version_of_gold_whatever_came_after(tmp_path, monkeypatch):
    from transforms.lake.maintenance import maintain as maintain_table

    lake = str(tmp_path / "lake")
    rules = [Replace(t, ReplaceScope.TABLE) for t in GOLD.values()]
    files = [write_data_file(lake, t, _one_row(t, "released")) for t in GOLD.values()]
    list(CommitFn(lake, CommitPlan("run-1", "gold_daily", read_plan(lake, rules), releases=("gold",))).process(files))
    # A later run died after committing one table: its version is newer than the release's.
    table = GOLD["dim_user"]
    commit_replace(
        lake,
        Replace(table, ReplaceScope.TABLE),
        [write_data_file(lake, table, _one_row(table, "unreleased"))],
        "run-2",
        snapshot(lake, table),
        "gold_daily",
    )
    maintain_table(lake, table, retention_hours=0)
    assert _markers(Gold.of(lake)) == {"released"}  # still readable: its files were kept


def test_a_backfill_replay_committing_after_a_streaming_append_keeps_the_streamed_rows(tmp_path, monkeypatch):
    """The whole backfill, with the stream appending to a bronze table it
    replaces between the run's planning (the versions it reads) and its commit."""
    lake = tmp_path / "lake"
    backfill.main(["--input", str(SAMPLE), "--lake", str(lake)])
    views = BRONZE["bronze_views"]
    day = str(min(read_arrow(str(lake), views).column("event_date").to_pylist()))
    streamed = {c.name: None for c in views.columns} | {
        "view_id": "v-streamed-meanwhile",
        "session_id": "s-x",
        "event_date": day,
        "platform": "web",
        "view_timestamp": T0,
        "source": "x",
        "schema_version": 1,
        "ingested_at": T0,
    }
    real = CommitFn.commit

    def stream_appends_first(self, by_table):
        row = views.to_arrow([streamed], with_partition_columns=True)
        commit_append(
            str(lake),
            views,
            [write_data_file(str(lake), views, row, (("event_date", day), ("platform", "web")))],
            "stream_ingest-meanwhile",
            1,
        )
        yield from real(self, by_table)

    monkeypatch.setattr(CommitFn, "commit", stream_appends_first)
    before = read_arrow(str(lake), views).num_rows
    backfill.main(["--input", str(lake / "raw" / "**" / "*.parquet"), "--from", day, "--to", day, "--lake", str(lake)])
    ids = read_arrow(str(lake), views).column("view_id").to_pylist()
    assert "v-streamed-meanwhile" in ids and len(ids) == before + 1


def test_the_remove_action_adapter_builds_what_delta_rs_commits(tmp_path):
    """``files.remove_action`` wraps a class delta-rs exposes only privately: a
    change of its module or arguments fails here, not in a commit path."""
    lake = str(tmp_path / "lake")
    partition = (("event_date", "2026-11-02"), ("platform", "web"))
    kept = write_data_file(lake, CLICKS, [click("kept", "2026-11-02", "f1")], partition)
    gone = write_data_file(lake, CLICKS, [click("gone", "2026-11-02", "f2")], partition)
    commit_append(lake, CLICKS, [kept, gone], "adapter-1")
    dt = open_table(lake, CLICKS)
    dt.create_write_transaction(
        [lake_files.remove_action(gone.relpath, gone.size, dict(gone.partitions))],
        "append",
        CLICKS.arrow_schema(),
        list(CLICKS.partition_by),
    )
    assert [f.relpath for f in snapshot(lake, CLICKS).files] == [kept.relpath]
    assert [row["click_id"] for row in read_arrow(lake, CLICKS).to_pylist()] == ["kept"]
