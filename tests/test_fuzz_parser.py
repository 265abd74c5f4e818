"""Fuzzing the parser with records built from the contract (schemas.contract):
valid, borderline and broken - wrong types, missing and extra fields,
unicode edge cases, huge values, timestamps at the limits, nested junk,
broken bytes. Both parses (per record and columnar) never raise, every
record lands in exactly one of bronze and the dead letter, and no dead
letter carries an email address or phone number that was in the input.

FUZZ_EXAMPLES (default 2,000) sets the number of examples."""

import functools
import json
import os
import re
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import contract
from schemas.contract import ENVELOPE, RECORD_TYPES
from schemas.tables import RAW
from tests.conftest import ts
from transforms.rules.bronze import DEAD_LETTER, parse_record
from transforms.rules.bronze_arrow import parse_chunk
from transforms.rules.pii import PiiKey

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 2000)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEY = PiiKey(b"fuzz-key", "fuzz")
NOW = ts("2026-11-25T00:00:00Z")
NOW_DT = datetime(2026, 11, 25, tzinfo=UTC)

EMAILS = ["ana.garcia@example.com", "Zoë.Ñúñez+promo@correo.es", "x@y.io", " BOB@EXAMPLE.ORG "]
PHONES = ["+34 600 123 456", "0034600123456", "+1-202-555-0147", "(415) 555-0199"]
UNICODE = [
    "\u0000",
    "\u200b",
    "\u202e\u0661\u0662",
    "e\u0301",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "🎟️👩‍👩‍👧",
    "\ufeff",
    "\\ud800",
    "ß" * 300,
    "\n\r\t",
    "' OR 1=1 --",
    "null",
    "NaN",
]
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)

_LIMITS = [
    "2000-01-01T00:00:00Z",
    "1999-12-31T23:59:59.999Z",
    contract.MIN_TIMESTAMP_MS,
    contract.MIN_TIMESTAMP_MS - 1,
    (NOW_DT + timedelta(days=1) - timedelta(seconds=1)).isoformat(),
    (NOW_DT + timedelta(days=1, seconds=1)).isoformat(),
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    2**63 - 1,
    -(2**63),
    2**64,
    "2026-11-24T23:59:59.999999999+14:00",
    "2026-11-24T10:00:00-12:00",
]


def _timestamps():
    moment = st.datetimes(
        min_value=datetime(2000, 1, 2),
        max_value=datetime(2026, 11, 24),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7))]),
    )
    return st.one_of(
        moment.map(lambda d: d.isoformat()), moment.map(lambda d: int(d.timestamp() * 1000)), st.sampled_from(_LIMITS)
    )


def _valid(field):
    if field.kind == "text":
        pool = EMAILS if field.pii == "email" else PHONES if field.pii == "phone" else None
        text = st.sampled_from(pool) if pool else st.text(min_size=1, max_size=12) | st.sampled_from(UNICODE)
        return text if field.required else st.one_of(text, st.none(), st.just(""))
    if field.kind == "timestamp":
        return _timestamps()
    if field.kind == "date":
        return st.dates(min_value=datetime(2000, 1, 1).date()).map(str) | st.sampled_from(["2026-02-29", "2024-02-29"])
    if field.kind == "bool":
        return st.booleans()
    if field.kind == "int":
        return st.sampled_from([1, 2, 0, -1, 2**63 - 1, 2**63])
    if field.kind == "enum":
        return st.sampled_from(field.values) | st.sampled_from([v.upper() for v in field.values])
    if field.kind == "object":
        values = st.text(max_size=6) | st.sampled_from(EMAILS + PHONES)
        return st.dictionaries(st.text(min_size=1, max_size=6), values if field.string_values else JUNK, max_size=4)
    raise AssertionError(field.kind)


# Wrong types and junk for any field; emails and phones where they do not belong (they must not be echoed).
_BROKEN = st.one_of(
    JUNK,
    st.sampled_from(EMAILS + PHONES),
    st.just("x" * 5000),
    st.sampled_from([10**20, 2**64, -(10**30), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
)


@functools.cache
def _valid_strategy(field):
    # Built once per field: hypothesis works out each new strategy object's properties, which is slow.
    return _valid(field)


# How a record's fields are drawn: all valid (borderline values included), one field broken (so
# the validator reaches every field's own check), or each field valid or broken at random.
ALL_VALID, ONE_BROKEN, CHAOS = "all valid", "one broken", "chaos"
_MODE = st.sampled_from([ALL_VALID, ONE_BROKEN, ONE_BROKEN, CHAOS])
_ONE_OF_THREE = st.integers(0, 2)


def _fields(draw, fields, mode) -> dict:
    broken = draw(st.sampled_from([f.name for f in fields])) if mode == ONE_BROKEN and fields else None
    values = {}
    for f in fields:
        if f.name == broken or (mode == CHAOS and draw(_ONE_OF_THREE) == 0):
            values[f.name] = draw(_BROKEN)
        else:
            values[f.name] = draw(_valid_strategy(f))
    return values


_RECORD_TYPE_NAMES = st.sampled_from(sorted(RECORD_TYPES) + ["refund", None, 7])
_EXTRA_NAME = st.text(min_size=1, max_size=6)
_SCHEMA_VERSION = st.sampled_from([1, 2, 0, "1", 2**70, None])
_SOURCE = st.sampled_from(["web-app", "", None]) | st.sampled_from(EMAILS)
_SHAPE = st.integers(0, 19)


@st.composite
def records(draw):
    """One record's bytes: mostly shaped by the contract, sometimes broken below JSON."""
    name = draw(_RECORD_TYPE_NAMES)
    rt = RECORD_TYPES.get(name) if isinstance(name, str) else None
    mode = draw(_MODE)
    in_envelope = [f for f in ENVELOPE if f.name not in ("record_type", "payload")]
    broken_part = draw(st.sampled_from(["payload", "envelope"])) if mode == ONE_BROKEN else None
    payload = _fields(draw, rt.fields if rt else (), mode if broken_part != "envelope" else ALL_VALID)
    envelope = _fields(draw, in_envelope, mode if broken_part == "envelope" else ALL_VALID)
    if mode != ALL_VALID:
        for field_name in draw(st.lists(st.sampled_from(sorted(payload) or ["x"]), max_size=2)):
            payload.pop(field_name, None)  # missing fields
        envelope["schema_version"] = draw(_SCHEMA_VERSION)
        envelope["source"] = draw(_SOURCE)
    else:
        envelope.update(schema_version=1, source="web-app")
    if draw(st.booleans()):
        payload[draw(_EXTRA_NAME)] = draw(JUNK)  # extra fields (kept as extra_json when valid)
    record = {"record_type": name, **envelope, "payload": payload}
    shape = draw(_SHAPE) if mode == CHAOS else 19
    if shape == 0:
        record["payload"] = json.dumps(payload)  # payload as a JSON string
    elif shape == 1:
        record["payload"] = draw(JUNK)
    elif shape == 2:
        record = draw(JUNK)
    data = json.dumps(record, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if shape == 3:
        data = data[: draw(st.integers(0, len(data)))]  # truncated
    elif shape == 4:
        data = data.replace(b"{", b"{\xff", 1)  # not UTF-8
    elif shape == 5:
        data = b"[" * 2000 + b"]" * 2000  # deep nesting
    return data


def _raw(data: bytes, line: int) -> dict:
    return {
        "ingest_date": "2026-11-20",
        "message_id": None,
        "publish_time": None,
        "attributes_json": None,
        "ingested_at": ts("2026-11-20T08:00:00Z"),
        "source_file": "landing/fuzz.jsonl",
        "source_line": line,
        "data": data,
    }


_PHONE_DIGITS = [re.sub(r"\D", "", p) for p in PHONES]


def _leaks(text: str) -> bool:
    lowered = text.lower()
    digits = re.sub(r"\D", "", text)
    return (
        ("@" in text and any(e.strip().lower() in lowered for e in EMAILS))
        or any(p in text for p in PHONES)
        or any(d in digits for d in _PHONE_DIGITS)
    )


@FUZZ
@given(st.lists(records(), min_size=1, max_size=6))
def test_every_record_lands_in_exactly_one_place_and_dead_letters_echo_no_pii(datas):
    raws = [_raw(data, line) for line, data in enumerate(datas, start=1)]
    landed = []
    for raw in raws:
        table, row = parse_record(raw, KEY, "fuzz", NOW)  # never raises
        landed.append(row["source_line"])
        if table == DEAD_LETTER:
            assert row["reason"] in contract.REASONS
            assert not any(_leaks(str(v)) for v in row.values() if isinstance(v, str)), row
    assert landed == list(range(1, len(raws) + 1))

    parsed = parse_chunk(RAW.to_arrow(raws, with_partition_columns=True), KEY, "fuzz", NOW)
    lines = [
        line for t in [*parsed.bronze.values(), parsed.dead_letter] for line in t.column("source_line").to_pylist()
    ]
    assert sorted(lines) == list(range(1, len(raws) + 1))  # each exactly once, bronze or dead letter
    for row in parsed.dead_letter.to_pylist():
        assert not any(_leaks(str(v)) for v in row.values() if isinstance(v, str)), row
