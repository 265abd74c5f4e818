"""The raw event contract, defined once.

``RECORD_TYPES`` is the single definition of what producers may send. The
validator (``validate_record``) and the JSON Schema (``raw_event_json_schema``)
are both derived from it; a test checks that the derived JSON Schema equals
the published contract's ``raw_event.schema.json``.

Every rejection is a ``Rejected`` with one of ``REASONS`` and the offending
field's name. Messages never contain field values, so personal data cannot
leak into the dead-letter output.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

# --- rejection reasons (the dead-letter ``reason`` column) ----------------
OVERSIZED = "oversized"  # over 1 MiB
INVALID_ENCODING = "invalid_encoding"  # not UTF-8
INVALID_JSON = "invalid_json"  # not JSON, or not a JSON object
UNKNOWN_RECORD_TYPE = "unknown_record_type"
MISSING_FIELD = "missing_field"  # required field absent or null
INVALID_TYPE = "invalid_type"  # wrong JSON type
INVALID_VALUE = "invalid_value"  # right type, value not allowed
INVALID_TIMESTAMP = "invalid_timestamp"  # unparseable timestamp or date
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"  # < 2000-01-01 or > now + 1 day
REASONS = (
    OVERSIZED,
    INVALID_ENCODING,
    INVALID_JSON,
    UNKNOWN_RECORD_TYPE,
    MISSING_FIELD,
    INVALID_TYPE,
    INVALID_VALUE,
    INVALID_TIMESTAMP,
    TIMESTAMP_OUT_OF_RANGE,
)

LANDING_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")  # the landing files a backfill reads
MAX_RECORD_BYTES = 1024 * 1024
MIN_TIMESTAMP_MS = 946684800000  # 2000-01-01T00:00:00Z
SECOND = 1_000_000  # microseconds: the unit of every in-memory time
MAX_FUTURE_MICROS = 24 * 3600 * SECOND  # one day ahead of processing time
MAX_INT64 = (1 << 63) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Rejected(Exception):
    """A record that breaks the contract. ``message`` never echoes values."""

    def __init__(self, reason: str, field: str | None, message: str):
        super().__init__(message)
        self.reason, self.field, self.message = reason, field, message


# --- the definition ---------------------------------------------------------
# kinds: text (string; required => non-empty), bool, int, timestamp, date,
# object (optionally with string values), enum.
@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    required: bool = False
    values: tuple = ()  # enum values
    string_values: bool = False  # object whose values must be strings
    pii: str | None = None  # 'email' or 'phone': hashed from bronze on


@dataclass(frozen=True)
class RecordType:
    name: str
    key: str
    fields: tuple[Field, ...]
    mutable: bool
    event_time: tuple[str, ...]  # first non-null gives the record's own time
    bronze_table: str
    silver_table: str

    @property
    def field_names(self) -> frozenset:
        return frozenset(f.name for f in self.fields)

    @property
    def hashes_pii(self) -> bool:
        """Its bronze rows carry keyed hashes (and so ``pii_key_version``)."""
        return any(f.pii for f in self.fields)


ENVELOPE = (
    Field("record_type", "enum", required=True),  # values: RECORD_TYPES
    Field("schema_version", "int", required=True),
    Field("source", "text", required=True),
    Field("platform", "text"),
    Field("region", "text"),
    Field("emitted_at", "timestamp"),
    Field("payload", "object", required=True),
)

RESPONSE_STATUSES = ("queued", "sent", "delivered", "failed", "bounced")

RECORD_TYPES: dict[str, RecordType] = {
    rt.name: rt
    for rt in (
        RecordType(
            "user",
            "user_id",
            (
                Field("user_id", "text", required=True),
                Field("email", "text", pii="email"),
                Field("phone_number", "text", pii="phone"),
                Field("country", "text"),
                Field("is_active", "bool"),
                Field("signup_date", "date"),
                Field("updated_at", "timestamp"),
            ),
            mutable=True,
            event_time=("updated_at", "emitted_at"),
            bronze_table="bronze_users",
            silver_table="silver_users",
        ),
        RecordType(
            "session",
            "session_id",
            (
                Field("session_id", "text", required=True),
                Field("user_id", "text"),
                Field("session_start_time", "timestamp", required=True),
                Field("session_end_time", "timestamp"),
                Field("device_type", "text"),
                Field("geo_location", "text"),
                Field("experiments", "object", string_values=True),
            ),
            mutable=True,
            event_time=("session_start_time",),
            bronze_table="bronze_sessions",
            silver_table="silver_sessions",
        ),
        RecordType(
            "view",
            "view_id",
            (
                Field("view_id", "text", required=True),
                Field("session_id", "text", required=True),
                Field("view_timestamp", "timestamp", required=True),
                Field("page_type", "text"),
                Field("landing_page", "text"),
                Field("is_referral", "bool"),
            ),
            mutable=False,
            event_time=("view_timestamp",),
            bronze_table="bronze_views",
            silver_table="silver_views",
        ),
        RecordType(
            "click",
            "click_id",
            (
                Field("click_id", "text", required=True),
                Field("session_id", "text", required=True),
                Field("click_timestamp", "timestamp", required=True),
                Field("element_clicked", "text"),
                Field("page", "text"),
            ),
            mutable=False,
            event_time=("click_timestamp",),
            bronze_table="bronze_clicks",
            silver_table="silver_clicks",
        ),
        RecordType(
            "event",
            "event_id",
            (
                Field("event_id", "text", required=True),
                Field("event_type", "text", required=True),
                Field("session_id", "text", required=True),
                Field("timestamp", "timestamp", required=True),
                Field("metadata", "object"),
            ),
            mutable=False,
            event_time=("timestamp",),
            bronze_table="bronze_events",
            silver_table="silver_events",
        ),
        RecordType(
            "event_response",
            "response_id",
            (
                Field("response_id", "text", required=True),
                Field("event_id", "text", required=True),
                Field("response_type", "text", required=True),
                Field("sent_email", "text", pii="email"),
                Field("sent_phone_number", "text", pii="phone"),
                Field("status", "enum", required=True, values=RESPONSE_STATUSES),
                Field("sent_at", "timestamp"),
            ),
            mutable=True,
            event_time=("sent_at", "emitted_at"),
            bronze_table="bronze_event_responses",
            silver_table="silver_event_responses",
        ),
        RecordType(
            "user_activity",
            "activity_id",
            (
                Field("activity_id", "text", required=True),
                Field("response_id", "text", required=True),
                Field("activity_type", "text", required=True),
                Field("activity_time", "timestamp", required=True),
                Field("location", "text"),
            ),
            mutable=False,
            event_time=("activity_time",),
            bronze_table="bronze_user_activity",
            silver_table="silver_user_activity",
        ),
    )
}


# --- timestamps ---------------------------------------------------------------
def parse_timestamp(value, field: str) -> int:
    """ISO-8601 (``Z``, offset, or none = UTC) or epoch milliseconds -> UTC
    epoch microseconds. Raises ``Rejected``; range against "now" is checked by
    the caller, which knows the processing time."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Rejected(INVALID_TYPE, field, f"{field}: expected ISO-8601 string or epoch milliseconds")
    if isinstance(value, int):
        if value < MIN_TIMESTAMP_MS:
            raise Rejected(TIMESTAMP_OUT_OF_RANGE, field, f"{field}: before 2000-01-01")
        return value * 1000
    if len(value) < 10:
        raise Rejected(INVALID_TIMESTAMP, field, f"{field}: not an ISO-8601 timestamp")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(INVALID_TIMESTAMP, field, f"{field}: not an ISO-8601 timestamp") from None
    micros = datetime_to_micros(dt)
    if micros < MIN_TIMESTAMP_MS * 1000:
        raise Rejected(TIMESTAMP_OUT_OF_RANGE, field, f"{field}: before 2000-01-01")
    return micros


_ONE_MICRO = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


def datetime_to_micros(dt: datetime) -> int:
    """Micros since the epoch of ``dt`` (UTC when it names no zone)."""
    return ((dt if dt.tzinfo else dt.replace(tzinfo=UTC)) - _EPOCH) // _ONE_MICRO


def micros_to_datetime(micros: int) -> datetime:
    return _EPOCH + micros * _ONE_MICRO


def micros_to_date(micros: int) -> str:
    """UTC date of a timestamp, as the in-pipeline ISO string."""
    return micros_to_datetime(micros).date().isoformat()


def now_micros() -> int:
    return (datetime.now(UTC) - _EPOCH) // _ONE_MICRO


# --- validation ---------------------------------------------------------------
def _check(f: Field, value, now: int, where: str):
    """Returns the typed value (timestamps as micros, dates as ISO strings)."""
    name = f"{where}{f.name}"
    if value is None:
        if f.required:
            raise Rejected(MISSING_FIELD, name, f"{name}: required")
        return None
    kind = f.kind
    if kind == "text":
        if not isinstance(value, str):
            raise Rejected(INVALID_TYPE, name, f"{name}: expected string")
        if f.required and not value:
            raise Rejected(MISSING_FIELD, name, f"{name}: required, got empty string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise Rejected(INVALID_TYPE, name, f"{name}: expected boolean")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise Rejected(INVALID_TYPE, name, f"{name}: expected integer")
        return value
    if kind == "timestamp":
        micros = parse_timestamp(value, name)
        if micros > now + MAX_FUTURE_MICROS:
            raise Rejected(TIMESTAMP_OUT_OF_RANGE, name, f"{name}: more than 1 day in the future")
        return micros
    if kind == "date":
        if not isinstance(value, str):
            raise Rejected(INVALID_TYPE, name, f"{name}: expected YYYY-MM-DD string")
        try:
            return datetime.strptime(value[:10], "%Y-%m-%d").date().isoformat()
        except ValueError:
            raise Rejected(INVALID_TIMESTAMP, name, f"{name}: not a YYYY-MM-DD date") from None
    if kind == "object":
        if not isinstance(value, dict):
            raise Rejected(INVALID_TYPE, name, f"{name}: expected object")
        if f.string_values and not all(isinstance(v, str) for v in value.values()):
            raise Rejected(INVALID_TYPE, name, f"{name}: expected string values")
        return value
    if kind == "enum":
        if value not in f.values:
            raise Rejected(INVALID_VALUE, name, f"{name}: not one of {', '.join(f.values)}")
        return value
    raise AssertionError(kind)


_ENVELOPE_NAMES = frozenset(f.name for f in ENVELOPE)
_SCHEMA_VERSION = ENVELOPE[1]


def validate_record(obj, now: int):
    """Validate one decoded JSON value against the contract.

    Returns ``(record_type, envelope, payload, extra)`` with typed values:
    ``envelope`` and ``payload`` hold exactly the contract's fields,
    ``extra`` the fields a newer ``schema_version`` added (kept, not dropped).
    """
    if not isinstance(obj, dict):
        raise Rejected(INVALID_JSON, None, "record is not a JSON object")
    rt_name = obj.get("record_type")
    if rt_name is None:
        raise Rejected(MISSING_FIELD, "record_type", "record_type: required")
    rt = RECORD_TYPES.get(rt_name) if isinstance(rt_name, str) else None
    if rt is None:
        raise Rejected(UNKNOWN_RECORD_TYPE, "record_type", "record_type: not a known record type")
    envelope = {"record_type": rt.name}
    for f in ENVELOPE[1:]:
        envelope[f.name] = _check(f, obj.get(f.name), now, "")
    if envelope["schema_version"] < 1:
        raise Rejected(INVALID_VALUE, "schema_version", "schema_version: must be >= 1")
    if envelope["schema_version"] > MAX_INT64:  # bronze stores it as INT64
        raise Rejected(INVALID_VALUE, "schema_version", "schema_version: larger than a 64-bit integer")
    raw_payload = envelope.pop("payload")
    payload = {f.name: _check(f, raw_payload.get(f.name), now, "payload.") for f in rt.fields}
    return rt, envelope, payload, extra_fields(rt, obj, raw_payload)


def extra_fields(rt: RecordType, obj: dict, payload: dict) -> dict:
    """The fields a newer ``schema_version`` added, beyond the contract's:
    ``{"payload": {...}, "envelope": {...}}``, each part only when non-empty."""
    extra = {}
    payload_extra = {k: v for k, v in payload.items() if k not in rt.field_names}
    if payload_extra:
        extra["payload"] = payload_extra
    envelope_extra = {k: v for k, v in obj.items() if k not in _ENVELOPE_NAMES}
    if envelope_extra:
        extra["envelope"] = envelope_extra
    return extra


# --- JSON Schema derived from the same definition --------------------------------
def _timestamp_schema():
    return {"oneOf": [{"type": "string", "minLength": 10}, {"type": "integer", "minimum": MIN_TIMESTAMP_MS}]}


def _field_schema(f: Field) -> dict:
    if f.kind == "timestamp":
        return _timestamp_schema() if f.required else {"anyOf": [_timestamp_schema(), {"type": "null"}]}
    if f.kind == "enum":
        return {"enum": list(f.values)}
    if f.kind == "int":
        return {"type": "integer", "minimum": 1}
    json_type = {"text": "string", "date": "string", "bool": "boolean", "object": "object"}[f.kind]
    if f.required:
        schema = {"type": json_type}
        if f.kind == "text":
            schema["minLength"] = 1
        return schema
    schema = {"type": [json_type, "null"]}
    if f.string_values:
        schema["additionalProperties"] = {"type": "string"}
    return schema


def raw_event_json_schema() -> dict:
    """The contract as JSON Schema (draft 2020-12), derived from ``RECORD_TYPES``."""
    props = {}
    for f in ENVELOPE:
        if f.name == "record_type":
            props[f.name] = {"enum": list(RECORD_TYPES)}
        elif f.name == "payload":
            props[f.name] = {"type": "object"}
        else:
            props[f.name] = _field_schema(f)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Funnel raw record (see RAW_EVENTS.md)",
        "type": "object",
        "required": [f.name for f in ENVELOPE if f.required],
        "properties": props,
        "allOf": [
            {
                "if": {"properties": {"record_type": {"const": rt.name}}},
                "then": {
                    "properties": {
                        "payload": {
                            "type": "object",
                            "properties": {f.name: _field_schema(f) for f in rt.fields},
                            "required": [f.name for f in rt.fields if f.required],
                        }
                    }
                },
            }
            for rt in RECORD_TYPES.values()
        ],
    }
