"""One definition per table; the derived schemas agree with each other and with the contract."""

import hashlib
import io
import json

import fastavro
import pyarrow as pa
import pytest

from schemas.contract import raw_event_json_schema
from schemas.tables import ALL_TABLES, BRONZE, GOLD, SILVER
from tests.conftest import FIXTURES, ts

# Column lists as written in TABLES_AND_METRICS.md.
CONTRACT_GOLD_COLUMNS = {
    "fact_funnel_stage": "session_id, user_id, session_date, platform, device_type, country, stage_number, "
    "stage_name, reached_at, seconds_from_previous_stage",
    "fact_user_activity": "user_id, activity_date, sessions, views, clicks, browse_events, add_to_cart_events, "
    "payments, confirmations_sent, barcode_scans",
    "dim_user": "user_id, email_hash, country, is_active, signup_date, first_seen_at, last_seen_at, first_platform, "
    "lifetime_sessions, lifetime_payments, furthest_stage_number",
    "mart_conversion_rate": "period_grain, period_start, platform, sessions_browse, sessions_add_to_cart, "
    "sessions_payment, sessions_email_confirmation, sessions_barcode_scanned, users_browse, "
    "users_payment, conversion_rate, cart_rate, checkout_rate, confirmation_rate, scan_rate",
    "mart_barcode_activity": "period_grain, period_start, platform, barcode_scans, scanning_users, scanned_orders, "
    "median_seconds_payment_to_scan",
}


# The fixtures are byte copies of ../shared/contract/ as published (tests must not read ../shared):
# a fixture regenerated from this code would change its bytes, and these pins fail.
PUBLISHED_SHA256 = {
    "contract_raw_event.schema.json": "d0dc813701b43fb2c349c0c2c55a57b8a72b375f1bc060731f43accc74345ee8",
    "contract_sample_raw.jsonl": "26aedf415b91ddcd19ea4db36f8e0c0d6f428e5012babd1c7f00c5d8060d257e",
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_SHA256))
def test_the_contract_fixtures_are_the_published_files(name):
    assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == PUBLISHED_SHA256[name]


def test_derived_json_schema_is_the_published_contract():
    published = json.loads((FIXTURES / "contract_raw_event.schema.json").read_text())
    assert raw_event_json_schema() == published


@pytest.mark.parametrize("name", sorted(CONTRACT_GOLD_COLUMNS))
def test_gold_columns_are_exactly_the_contracts(name):
    assert GOLD[name].column_names == [c.strip() for c in CONTRACT_GOLD_COLUMNS[name].split(",")]


def test_layers_hold_the_contract_tables():
    assert sorted(BRONZE) == sorted(
        f"bronze_{t}" for t in ("events", "clicks", "views", "sessions", "users", "event_responses", "user_activity")
    )
    assert sorted(SILVER) == sorted(
        f"silver_{t}" for t in ("events", "sessions", "clicks", "views", "users", "event_responses", "user_activity")
    )


@pytest.mark.parametrize("name", sorted(ALL_TABLES))
def test_every_derivation_has_the_same_columns_types_and_modes(name):
    table = ALL_TABLES[name]
    arrow = table.arrow_schema()
    avro = fastavro.parse_schema(table.avro_schema())
    bigquery = table.bigquery_schema()
    assert arrow.names == [f["name"] for f in avro["fields"]] == [f.name for f in bigquery] == table.column_names
    for column, field, bq in zip(table.columns, arrow, bigquery):
        assert field.nullable == (not column.required)
        assert bq.mode == ("REPEATED" if column.repeated else "REQUIRED" if column.required else "NULLABLE")
        assert pa.types.is_list(field.type) == column.repeated
        assert bq.description == column.description
    assert {"STRING", "TIMESTAMP"} & {f.field_type for f in bigquery}


def test_bronze_is_partitioned_by_event_date_and_platform_and_the_files_omit_them():
    for table in BRONZE.values():
        assert table.partition_by == ("event_date", "platform")
        assert "event_date" not in table.arrow_schema(with_partition_columns=False).names


def test_row_round_trips_through_arrow_and_avro():
    table = SILVER["silver_sessions"]
    row = {c: None for c in table.column_names}
    row.update(
        session_id="s-1",
        platform="web",
        has_session_record=True,
        session_date="2026-11-02",
        session_start_time=ts("2026-11-02T10:00:00Z"),
        views=2,
        clicks=0,
        events=1,
        copies=1,
        browse_events=1,
        add_to_cart_events=0,
        payment_events=0,
        furthest_stage_in_session=1,
    )
    arrow = table.to_arrow([row], with_partition_columns=True)
    assert arrow.schema.field("session_start_time").type == pa.timestamp("us", tz="UTC")
    assert arrow.schema.field("session_date").type == pa.date32()
    assert table.from_arrow(arrow) == [row]

    buffer = io.BytesIO()
    avro_row = {**arrow.to_pylist()[0]}
    fastavro.writer(buffer, fastavro.parse_schema(table.avro_schema()), [avro_row])
    buffer.seek(0)
    (back,) = list(fastavro.reader(buffer))
    assert back["session_id"] == "s-1" and back["session_start_time"] == avro_row["session_start_time"]
