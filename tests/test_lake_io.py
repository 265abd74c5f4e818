"""Landing-file reading, the raw layer, staged writes and the commit rules."""
import gzip
import json
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing.util import assert_that, equal_to

from schemas.tables import BRONZE, RAW, SILVER
from transforms.lake_io import (CommitLakeWrites, ReadLandingFiles, Replace, WriteStaged, list_files,
                                new_staging_dir, table_dir)
from tests.conftest import T0, local_pipeline, read_table

LINES = [b'{"record_type":"view","n":1}', b"", b"\xff\xfe not utf-8", b'{"record_type":"view","n":2}\r']


def _read(lake, paths, expected):
    with local_pipeline() as p:
        rows = p | ReadLandingFiles([str(x) for x in paths], str(lake), ingested_at=T0) | beam.FlatMap(RAW.from_arrow)
        assert_that(rows | beam.Map(lambda r: (os.path.basename(r["source_file"]), r["source_line"], r["data"])),
                    equal_to(expected))


def test_jsonl_gz_and_parquet_landing_files_become_raw_rows_and_raw_files(tmp_path):
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(b"\n".join(LINES) + b"\n")
    packed = tmp_path / "b.jsonl.gz"
    packed.write_bytes(gzip.compress(b"\n".join(LINES[:1]) + b"\n"))
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"record_type": "view", "schema_version": 1, "payload": json.dumps({"view_id": "v"})},
        {"record_type": "view", "schema_version": None, "payload": "{broken"}]), parquet)
    lake = tmp_path / "lake"
    expected = [("a.jsonl", 1, LINES[0]), ("a.jsonl", 3, LINES[2]), ("a.jsonl", 4, LINES[3][:-1]),
                   ("b.jsonl.gz", 1, LINES[0]),
                   ("c.parquet", 1, b'{"record_type":"view","schema_version":1,"payload":"{\\"view_id\\": \\"v\\"}"}'),
                   ("c.parquet", 2, b'{"record_type":"view","payload":"{broken"}')]
    _read(lake, [plain, packed, parquet], expected)
    raw_files = list_files(table_dir(str(lake), RAW))
    assert len(raw_files) == 3
    raw_rows = read_table(lake / "raw")
    assert sorted(r["data"] for r in raw_rows) == sorted(d for _, _, d in expected)

    # Same content again: raw is never rewritten (same files, same bytes, same times).
    before = {f: os.stat(f).st_mtime_ns for f in raw_files}
    _read(lake, [plain, packed, parquet], expected)
    assert {f: os.stat(f).st_mtime_ns for f in list_files(table_dir(str(lake), RAW))} == before


def test_raw_layer_files_replay_as_they_were_ingested(tmp_path):
    landing = tmp_path / "a.jsonl"
    landing.write_bytes(LINES[0] + b"\n")
    lake = tmp_path / "lake"
    expected = [("a.jsonl", 1, LINES[0])]
    _read(lake, [landing], expected)
    _read(lake, list_files(table_dir(str(lake), RAW)), expected)  # replay from raw: same rows, nothing new written
    assert len(list_files(table_dir(str(lake), RAW))) == 1


def _write(lake, table, rows, rule):
    """Each row its own element, so a writer's buffering across elements is exercised."""
    staging = new_staging_dir(str(lake))
    with local_pipeline() as p:
        _ = (p | beam.Create([(table.name, table.to_arrow([row], with_partition_columns=True)) for row in rows])
             | WriteStaged([table], staging, by_source=(table.name,) if rule.scope == "sources" else ())
             | CommitLakeWrites(str(lake), staging, [rule]))
    assert not os.path.exists(staging)


def test_replace_rules_remove_exactly_what_they_name(tmp_path):
    table = BRONZE["bronze_clicks"]
    lake = tmp_path / "lake"

    def click(click_id, day, source):
        return {"click_id": click_id, "session_id": "s", "click_timestamp": T0, "event_date": day,
                "platform": "web", "source": "x", "schema_version": 1, "ingested_at": T0, "source_file": source}

    _write(lake, table, [click("c1", "2026-11-01", "f1"), click("c2", "2026-11-02", "f1"),
                         click("c3", "2026-11-02", "f2")], Replace(table, "sources", frozenset()))
    assert sorted(r["click_id"] for r in read_table(lake / "bronze" / table.name)) == ["c1", "c2", "c3"]

    # Re-ingesting source f1 replaces f1's rows only.
    _write(lake, table, [click("c1b", "2026-11-01", "f1")], Replace(table, "sources", frozenset({"f1"})))
    assert sorted(r["click_id"] for r in read_table(lake / "bronze" / table.name)) == ["c1b", "c3"]

    # A date range replaces exactly its partitions, whatever the source.
    _write(lake, table, [click("c9", "2026-11-02", "f9")],
           Replace(table, "partitions", frozenset({"event_date=2026-11-02"})))
    assert sorted((r["click_id"], str(r["event_date"])) for r in read_table(lake / "bronze" / table.name)) == [
        ("c1b", "2026-11-01"), ("c9", "2026-11-02")]


def test_truncate_and_load_of_an_empty_result_leaves_an_empty_readable_table(tmp_path):
    table = SILVER["silver_clicks"]
    lake = tmp_path / "lake"
    row = {"click_id": "c", "platform": "web", "click_timestamp": T0, "copies": 1}
    _write(lake, table, [row], Replace(table, "table"))
    assert len(read_table(lake / "silver" / table.name)) == 1
    _write(lake, table, [], Replace(table, "table"))
    files = list_files(str(lake / "silver" / table.name))
    assert len(files) == 1 and pq.read_table(files[0]).num_rows == 0
    assert pq.read_table(files[0]).schema.names == table.column_names


def test_a_failing_run_leaves_the_lake_as_it_was(tmp_path):
    table = SILVER["silver_clicks"]
    lake = tmp_path / "lake"
    _write(lake, table, [{"click_id": "c", "platform": "web", "click_timestamp": T0, "copies": 1}],
           Replace(table, "table"))
    before = list_files(str(lake / "silver" / table.name))

    def explode(row):
        raise RuntimeError("boom")

    staging = new_staging_dir(str(lake))
    try:
        with local_pipeline() as p:
            _ = (p | beam.Create([{"click_id": "x"}]) | beam.Map(explode)
                 | WriteStaged([table], staging) | CommitLakeWrites(str(lake), staging, [Replace(table, "table")]))
    except Exception as error:  # noqa: BLE001 - the runner wraps the user error
        assert "boom" in str(error)
    else:
        raise AssertionError("the pipeline should have failed")
    assert list_files(str(lake / "silver" / table.name)) == before


def test_a_writer_holds_a_bounded_number_of_rows(tmp_path, monkeypatch):
    from transforms import lake_io
    monkeypatch.setattr(lake_io, "ROWS_BUFFERED", 4)  # write the largest partition out past 4 rows held
    table = BRONZE["bronze_clicks"]
    lake = tmp_path / "lake"
    rows = [{"click_id": f"c{i}", "session_id": "s", "click_timestamp": T0, "event_date": f"2026-11-0{1 + i % 2}",
             "platform": "web", "source": "x", "schema_version": 1, "ingested_at": T0, "source_file": "f"}
            for i in range(10)]
    _write(lake, table, rows, Replace(table, "sources", frozenset()))
    files = list_files(str(lake / "bronze" / table.name))
    assert len(files) > 2  # more than one file per partition: nothing held the whole input
    assert sorted(r["click_id"] for r in read_table(lake / "bronze" / table.name)) == sorted(r["click_id"] for r in rows)
    by_partition = {}
    for path in files:
        day = path.split("event_date=")[1][:10]
        by_partition.setdefault(day, []).extend(r["click_id"] for r in pq.read_table(path).to_pylist())
    assert {day: sorted(ids) for day, ids in by_partition.items()} == {
        "2026-11-01": sorted(f"c{i}" for i in range(0, 10, 2)), "2026-11-02": sorted(f"c{i}" for i in range(1, 10, 2))}
