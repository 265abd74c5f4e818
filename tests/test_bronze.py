"""Parsing raw records to bronze: good and bad records together; normalization;
PII hashing. Both the per-record definition and the columnar batch parse."""

import hashlib
from collections import defaultdict

import orjson
import pytest

from schemas.tables import ALL_TABLES, RAW
from tests.conftest import ts
from transforms.rules.bronze import (
    DEAD_LETTER,
    normalize_email,
    normalize_event_type,
    normalize_phone,
    normalize_platform,
    parse_record,
    pseudonym,
)
from transforms.rules.bronze_arrow import parse_chunk
from transforms.rules.pii import PiiKey

KEY = PiiKey(b"test-key", "test-v1")
NOW = ts("2026-11-25T00:00:00Z")
INGESTED = ts("2026-11-20T08:00:00Z")


def raw(obj, line=1, attributes=None) -> dict:
    data = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    return {
        "ingest_date": "2026-11-20",
        "message_id": None,
        "publish_time": None,
        "attributes_json": orjson.dumps(attributes).decode() if attributes else None,
        "ingested_at": INGESTED,
        "source_file": "landing/a.jsonl",
        "source_line": line,
        "data": data,
    }


@pytest.mark.parametrize(
    "value, expected",
    [
        ("web", ("web", None)),
        (" Desktop ", ("web", None)),
        ("mobile-web", ("web", None)),
        ("BROWSER", ("web", None)),
        ("iPhone", ("ios", None)),
        ("ipad", ("ios", None)),
        ("ios-app", ("ios", None)),
        ("Android", ("android", None)),
        ("android-app", ("android", None)),
        ("mailer", ("email", None)),
        ("POS", ("pos", None)),
        ("scanner", ("pos", None)),
        ("kiosk", ("pos", None)),
        (None, ("unknown", None)),
        ("  ", ("unknown", None)),
        ("smart-tv", ("other", "smart-tv")),
    ],
)
def test_platform_normalization(value, expected):
    assert normalize_platform(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("Article added to cart", "add_to_cart"),
        ("ADD_TO_CART", "add_to_cart"),
        ("add-to-cart", "add_to_cart"),
        ("payment_success", "payment_successful"),
        ("Payment Successful", "payment_successful"),
        ("browse", "browse"),
        ("Page Scrolled", "page_scrolled"),
    ],
)
def test_event_type_normalization(value, expected):
    assert normalize_event_type(value) == expected


def test_pii_normalization():
    assert normalize_email(" Ana.Lopez@Example.com ") == "ana.lopez@example.com"
    assert normalize_phone("+34 600 123 456") == normalize_phone("0034-600-123-456") == "+34600123456"
    assert pseudonym(KEY.secret, "a@b.c") != pseudonym(b"other-key", "a@b.c")


def _per_record(records) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for raw_row in records:
        table, row = parse_record(raw_row, KEY, "backfill", NOW)
        out[table].append(row)
    return out


def _columnar(records) -> dict[str, list[dict]]:
    parsed = parse_chunk(RAW.to_arrow(records, with_partition_columns=True), KEY, "backfill", NOW)
    out = defaultdict(list, {name: ALL_TABLES[name].from_arrow(t) for name, t in parsed.bronze.items()})
    out[DEAD_LETTER] = ALL_TABLES["dead_letter"].from_arrow(parsed.dead_letter)
    return out


@pytest.mark.parametrize("parse", [_per_record, _columnar], ids=["per-record", "columnar"])
def test_good_and_bad_records_split_into_bronze_and_typed_dead_letters(parse):
    user = {
        "record_type": "user",
        "schema_version": 1,
        "source": "accounts-api",
        "platform": "web",
        "emitted_at": "2026-11-02T09:00:00Z",
        "payload": {
            "user_id": "u-1",
            "email": " Ana@Example.com ",
            "phone_number": "+34 600 123 456",
            "country": "es",
            "is_active": True,
            "signup_date": "2025-03-14",
        },
    }
    event = {
        "record_type": "event",
        "schema_version": 2,
        "source": "android-app",
        "platform": "Android",
        "payload": {
            "event_id": "e-4",
            "event_type": "ADD_TO_CART",
            "session_id": "s-3",
            "timestamp": 1793613660000,
            "metadata": {"article_id": "a-7", "price": 12.5},
            "app_build": "7.4.1",
        },
    }
    response_via_attributes = {
        "schema_version": 1,
        "platform": "email",
        "payload": {
            "response_id": "r-1",
            "event_id": "e-4",
            "response_type": "email_confirmation",
            "sent_email": "ana@example.com",
            "status": "sent",
        },
        "emitted_at": "2026-11-02T10:00:00Z",
    }
    records = [
        raw(user, 1),
        raw(event, 2),
        raw(b"not json", 3),
        raw(b'{"a": "\xff"}', 4),
        raw({"record_type": "refund", "schema_version": 1, "source": "x", "payload": {}}, 5),
        raw(response_via_attributes, 6, attributes={"record_type": "event_response", "source": "mailer"}),
        raw(b"{" + b" " * (1024 * 1024) + b"}", 7),
    ]
    out = parse(records)
    assert out["bronze_users"] == [
        {
            "user_id": "u-1",
            "email_hash": pseudonym(KEY.secret, "ana@example.com"),
            "email_sha256": hashlib.sha256(b"ana@example.com").hexdigest(),
            "phone_number_hash": pseudonym(KEY.secret, "+34600123456"),
            "country": "ES",
            "is_active": True,
            "signup_date": "2025-03-14",
            "updated_at": None,
            "event_date": "2026-11-02",
            "platform": "web",
            "platform_raw": None,
            "source": "accounts-api",
            "region": None,
            "schema_version": 1,
            "emitted_at": ts("2026-11-02T09:00:00Z"),
            "extra_json": None,
            "ingested_at": INGESTED,
            "source_file": "landing/a.jsonl",
            "source_line": 1,
            "message_id": None,
            "pii_key_version": "test-v1",
        }
    ]
    assert [
        (
            r["event_type"],
            r["event_type_raw"],
            r["platform"],
            r["article_id"],
            r["price"],
            r["extra_json"],
            r["event_date"],
        )
        for r in out["bronze_events"]
    ] == [("add_to_cart", "ADD_TO_CART", "android", "a-7", 12.5, '{"payload":{"app_build":"7.4.1"}}', "2026-11-02")]
    assert [
        (r["response_id"], r["source"], r["sent_at"], r["sent_email_hash"], r["pii_key_version"])
        for r in out["bronze_event_responses"]
    ] == [("r-1", "mailer", ts("2026-11-02T10:00:00Z"), pseudonym(KEY.secret, "ana@example.com"), "test-v1")]
    assert sorted((r["source_line"], r["reason"], r["record_type"], r["pipeline"]) for r in out[DEAD_LETTER]) == [
        (3, "invalid_json", None, "backfill"),
        (4, "invalid_encoding", None, "backfill"),
        (5, "unknown_record_type", "refund", "backfill"),
        (7, "oversized", None, "backfill"),
    ]


def test_a_metadata_integer_past_64_bits_parses_the_same_both_ways():
    """Found by the fuzz test: msgspec keeps such an integer and orjson cannot
    write it; the columnar parse hands the record to the per-record one,
    which reads it as orjson does (a float)."""
    event = (
        b'{"record_type": "event", "schema_version": 1, "source": "web-app", "emitted_at": "2026-11-02T09:00:00Z",'
        b' "payload": {"event_id": "e-1", "event_type": "browse", "session_id": "s-1",'
        b' "timestamp": "2026-11-02T09:00:00Z", "metadata": {"n": -9223372036854775809, "price": 2}}}'
    )
    per_record, columnar = _per_record([raw(event)]), _columnar([raw(event)])
    assert columnar["bronze_events"] == per_record["bronze_events"] and not columnar[DEAD_LETTER]
    assert [r["metadata_json"] for r in columnar["bronze_events"]] == ['{"n":-9.223372036854776e+18,"price":2}']
