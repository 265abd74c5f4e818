"""The validator follows RAW_EVENTS.md: every reason, every accepted timestamp format."""

import copy

import jsonschema
import orjson
import pytest

from schemas import contract
from schemas.contract import Rejected, raw_event_json_schema, validate_record
from tests.conftest import SAMPLE, ts

NOW = ts("2026-11-25T00:00:00Z")
VIEW = {
    "record_type": "view",
    "schema_version": 1,
    "source": "web-app",
    "platform": "web",
    "payload": {"view_id": "v-1", "session_id": "s-1", "view_timestamp": "2026-11-02T10:00:00Z"},
}


def reject(obj) -> Rejected:
    with pytest.raises(Rejected) as info:
        validate_record(obj, NOW)
    return info.value


def with_payload(**changes):
    obj = copy.deepcopy(VIEW)
    obj["payload"].update(changes)
    return obj


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-02T10:00:00Z",
        "2026-11-02T11:00:00+01:00",
        "2026-11-02T10:00:00",
        "2026-11-02T10:00:00.000Z",
        1793613600000,
    ],
)
def test_every_timestamp_format_means_the_same_utc_instant(value):
    _, _, payload, _ = validate_record(with_payload(view_timestamp=value), NOW)
    assert payload["view_timestamp"] == ts("2026-11-02T10:00:00Z")


@pytest.mark.parametrize(
    "obj, reason, field",
    [
        ([1, 2], contract.INVALID_JSON, None),
        ({**VIEW, "record_type": "refund"}, contract.UNKNOWN_RECORD_TYPE, "record_type"),
        ({k: v for k, v in VIEW.items() if k != "record_type"}, contract.MISSING_FIELD, "record_type"),
        ({k: v for k, v in VIEW.items() if k != "source"}, contract.MISSING_FIELD, "source"),
        ({**VIEW, "schema_version": "1"}, contract.INVALID_TYPE, "schema_version"),
        ({**VIEW, "schema_version": 0}, contract.INVALID_VALUE, "schema_version"),
        ({**VIEW, "schema_version": 2**63}, contract.INVALID_VALUE, "schema_version"),  # bronze stores INT64
        ({**VIEW, "payload": "x"}, contract.INVALID_TYPE, "payload"),
        (with_payload(view_id=None), contract.MISSING_FIELD, "payload.view_id"),
        (with_payload(view_id=""), contract.MISSING_FIELD, "payload.view_id"),
        (with_payload(is_referral="yes"), contract.INVALID_TYPE, "payload.is_referral"),
        (with_payload(view_timestamp="yesterday"), contract.INVALID_TIMESTAMP, "payload.view_timestamp"),
        (with_payload(view_timestamp="2026-13-45T00:00:00Z"), contract.INVALID_TIMESTAMP, "payload.view_timestamp"),
        (with_payload(view_timestamp=1.5e12), contract.INVALID_TYPE, "payload.view_timestamp"),
        (
            with_payload(view_timestamp="1999-12-31T23:59:59Z"),
            contract.TIMESTAMP_OUT_OF_RANGE,
            "payload.view_timestamp",
        ),
        (with_payload(view_timestamp=915148800000), contract.TIMESTAMP_OUT_OF_RANGE, "payload.view_timestamp"),
        (
            with_payload(view_timestamp="2026-11-26T00:00:01Z"),
            contract.TIMESTAMP_OUT_OF_RANGE,
            "payload.view_timestamp",
        ),
        (
            {
                "record_type": "event_response",
                "schema_version": 1,
                "source": "mailer",
                "payload": {
                    "response_id": "r",
                    "event_id": "e",
                    "response_type": "email_confirmation",
                    "sent_email": "secret@example.com",
                    "status": "opened",
                },
            },
            contract.INVALID_VALUE,
            "payload.status",
        ),
    ],
)
def test_each_violation_has_its_typed_reason_and_field(obj, reason, field):
    rejected = reject(obj)
    assert (rejected.reason, rejected.field) == (reason, field)
    assert "secret@example.com" not in rejected.message


def test_a_day_ahead_is_still_accepted():
    _, _, payload, _ = validate_record(with_payload(view_timestamp="2026-11-25T23:59:00Z"), NOW)
    assert payload["view_timestamp"] == ts("2026-11-25T23:59:00Z")


def test_newer_schema_version_keeps_extra_fields():
    obj = {**with_payload(app_build="7.4.1"), "schema_version": 2, "trace": "abc"}
    rt, envelope, payload, extra = validate_record(obj, NOW)
    assert (rt.name, envelope["schema_version"]) == ("view", 2)
    assert extra == {"payload": {"app_build": "7.4.1"}, "envelope": {"trace": "abc"}}
    assert "app_build" not in payload


def test_validator_agrees_with_the_json_schema_on_the_sample():
    """Differential check: where JSON Schema can decide (structure and types),
    both say the same about every sample line."""
    validator = jsonschema.Draft202012Validator(raw_event_json_schema())
    for line in SAMPLE.read_bytes().splitlines():
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        try:
            validate_record(obj, NOW)
            ours = True
        except Rejected:
            ours = False
        assert validator.is_valid(obj) == ours, line
