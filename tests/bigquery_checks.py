"""Checks of what the pipelines wrote to the local BigQuery emulator."""

import uuid

from schemas.tables import BRONZE, DEAD_LETTER, SILVER
from transforms.lake.tables import read_arrow
from transforms.sinks import bigquery as bigquery_io


def endpoint() -> str:
    from devtools import bigquery_emulator

    return bigquery_emulator.endpoint(bigquery_emulator.SERVICE.host())


def sink_flags(bq) -> list[str]:
    return ["--sink", "bigquery", f"--project={bq.project}", "--bigquery-endpoint", endpoint()]


def fresh_project():
    """A client for a project of its own in the emulator: tests do not see each other's tables."""
    return bigquery_io.client(f"funnel-{uuid.uuid4().hex[:8]}", endpoint())


def bigquery_rows(bq, table) -> list[tuple]:
    """Every row of the table in BigQuery, in the pipeline's form, sorted."""
    arrow = bq.query(f"SELECT * FROM `{bigquery_io.table_id(bq.project, table)}`").to_arrow(
        create_bqstorage_client=False
    )
    return _sorted_tuples(table, table.from_arrow(arrow))


def lake_rows(lake, table, keep=None) -> list[tuple]:
    """Every row of the table in the lake, in the pipeline's form, sorted; ``keep`` filters them."""
    rows = table.from_arrow(read_arrow(str(lake), table))
    return _sorted_tuples(table, keep(rows) if keep else rows)


def _sorted_tuples(table, rows) -> list[tuple]:
    return sorted((tuple(r[c] for c in table.column_names) for r in rows), key=repr)


def _first_received(rows):
    """One row per place a record was received (a Pub/Sub message delivered
    twice is one), the first received."""
    first = {}
    for r in sorted(rows, key=lambda r: r["ingested_at"]):
        first.setdefault(r["message_id"] or (r["source_file"], r["source_line"]), r)
    return list(first.values())


def _duplicate_keys(bq, table) -> int:
    key = bigquery_io.merge_key(table)[0].format(t="X")
    return next(
        iter(
            bq.query(
                f"SELECT COUNT(*) - COUNT(DISTINCT {key}) AS n FROM `{bigquery_io.table_id(bq.project, table)}` X"
            ).result()
        )
    ).n


def bigquery_holds_the_lake(bq, lake, tables) -> bool:
    """Whether BigQuery's rows of ``tables`` (silver layers) equal the lake's
    -- for a test that waits for a streaming job to catch up."""
    return all(bigquery_rows(bq, t) == lake_rows(lake, t) for t in tables)


def assert_bigquery_holds_the_lake(bq, lake, silver=SILVER) -> dict:
    """Bronze and dead letter: the lake's rows, a redelivered message once;
    ``silver``: the lake's rows exactly; no key twice. Returns rows per table."""
    counts = {}
    for table in [*BRONZE.values(), DEAD_LETTER, *silver.values()]:
        keep = None if table.layer.startswith("silver") else _first_received
        got = bigquery_rows(bq, table)
        assert got == lake_rows(lake, table, keep), table.name
        assert _duplicate_keys(bq, table) == 0, table.name
        counts[table.name] = len(got)
    return counts
