"""Operational alerts (``ops_alerts``): the rules, and their batch rebuild
over gold's shards (``transforms.rules.gold``). ``transforms.streaming.alerts``
raises the same alerts from the same definitions as records arrive.

* ``email_failed``: an email confirmation whose current status is failed or
  bounced; detected at that response's time.
* ``confirmation_missing``: a payment_successful event with no sent/delivered
  email confirmation whose ``sent_at`` is at most ``CONFIRMATION_DEADLINE``
  after the payment; detected at the deadline, and only once the clock
  (the recompute's cut, or the streaming watermark) has passed it. SMS
  confirmations do not count: the funnel's confirmation stage is the email.
* ``email_failure_rate``: a ``FAILURE_WINDOW`` (tumbling, aligned to the
  epoch) of email confirmations' times holding at least
  ``MIN_CONFIRMATIONS`` confirmations with an outcome (sent, delivered,
  failed, bounced; queued has none yet), over ``MAX_FAILURE_PERCENT``% of them
  failed or bounced; detected at the window's end.

``detected_at`` is event time, so a rerun or a replay gives an alert the
same row; ``alert_id`` hashes the type and
its subject (response, payment, window), so a redelivered record never
raises an alert twice.
"""

from __future__ import annotations

import enum
import hashlib
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from schemas.vocabulary import DELIVERED_STATUSES, FAILED_STATUSES, EventType, ResponseType

CONFIRMATION_DEADLINE = timedelta(minutes=30)
FAILURE_WINDOW = timedelta(minutes=15)
MIN_CONFIRMATIONS = 20
MAX_FAILURE_PERCENT = 5  # integer: 'over 5%' compared exactly

EMAIL_CONFIRMATION = ResponseType.EMAIL_CONFIRMATION
FAILED = FAILED_STATUSES
DELIVERED = DELIVERED_STATUSES
WITH_OUTCOME = FAILED | DELIVERED

DEADLINE_MICROS = CONFIRMATION_DEADLINE // timedelta(microseconds=1)
WINDOW_MICROS = FAILURE_WINDOW // timedelta(microseconds=1)


class AlertType(enum.StrEnum):
    EMAIL_FAILED = "email_failed"
    EMAIL_FAILURE_RATE = "email_failure_rate"
    CONFIRMATION_MISSING = "confirmation_missing"
    DATA_QUALITY = "data_quality"  # a failed check (transforms.rules.quality); raised by the checks, not by gold


def alert_id(alert_type: AlertType, subject: str) -> str:
    """Stable id of an alert: the same condition on the same subject always
    gets the same id."""
    return hashlib.sha256(f"{alert_type.value}|{subject}".encode()).hexdigest()[:32]


def iso(micros: int) -> str:
    """UTC, always with six fractional digits (one spelling per instant)."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _details(**values) -> str:
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode()


def email_failed(response_id: str, event_id: str | None, status: str, at: int) -> dict:
    return {
        "alert_id": alert_id(AlertType.EMAIL_FAILED, response_id),
        "alert_type": AlertType.EMAIL_FAILED.value,
        "detected_at": at,
        "event_id": event_id,
        "response_id": response_id,
        "details": _details(status=status),
    }


def confirmation_missing(event_id: str, paid_at: int) -> dict:
    deadline = paid_at + DEADLINE_MICROS
    return {
        "alert_id": alert_id(AlertType.CONFIRMATION_MISSING, event_id),
        "alert_type": AlertType.CONFIRMATION_MISSING.value,
        "detected_at": deadline,
        "event_id": event_id,
        "response_id": None,
        "details": _details(paid_at=iso(paid_at), deadline=iso(deadline)),
    }


def window_start(micros):
    """The failure window holding ``micros`` (an int or a numpy array)."""
    return micros - micros % WINDOW_MICROS


def failure_rate_breached(confirmations: int, failed: int) -> bool:
    return confirmations >= MIN_CONFIRMATIONS and failed * 100 > MAX_FAILURE_PERCENT * confirmations


def email_failure_rate(start: int, confirmations: int, failed: int) -> dict:
    end = start + WINDOW_MICROS
    return {
        "alert_id": alert_id(AlertType.EMAIL_FAILURE_RATE, iso(start)),
        "alert_type": AlertType.EMAIL_FAILURE_RATE.value,
        "detected_at": end,
        "event_id": None,
        "response_id": None,
        "details": _details(
            window_start=iso(start),
            window_end=iso(end),
            confirmations=confirmations,
            failed=failed,
            failure_rate=failure_rate(failed, confirmations),
        ),
    }


def failure_rate(failed: int, confirmations: int) -> float:
    """``failed / confirmations`` to six places, a tie rounded away from zero
    as BigQuery's and DuckDB's ROUND do (9 of 128 is 0.070313; Python's
    ``round`` would give 0.070312)."""
    exact = Decimal(failed) / Decimal(confirmations)
    return float(exact.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))


# --- the batch rebuild, over one gold shard's silver rows (Arrow) -------------------------------
def _email_outcomes(responses):
    is_email = pc.equal(responses.column("response_type"), EMAIL_CONFIRMATION)
    return responses.filter(pc.fill_null(pc.and_(is_email, pc.is_valid(responses.column("sent_at"))), False))


def shard_alerts(events, responses, clock: int | None) -> list[dict]:
    """``email_failed`` and ``confirmation_missing`` alerts of a shard's
    events and responses (every response is in its event's shard).
    ``clock``: the recompute's now (epoch micros; None: no cut)."""
    emails = _email_outcomes(responses)
    out = []
    failed = emails.filter(pc.is_in(emails.column("status"), pa.array(sorted(FAILED))))
    for response_id, event_id, status, at in zip(
        *(failed.column(c).to_pylist() for c in ("response_id", "event_id", "status")),
        failed.column("sent_at").cast(pa.int64()).to_pylist(),
    ):
        out.append(email_failed(response_id, event_id, status, at))

    payments = events.filter(pc.fill_null(pc.equal(events.column("event_type"), EventType.PAYMENT_SUCCESSFUL), False))
    delivered = emails.filter(pc.is_in(emails.column("status"), pa.array(sorted(DELIVERED))))
    first_sent = {}
    for event_id, at in zip(
        delivered.column("event_id").to_pylist(), delivered.column("sent_at").cast(pa.int64()).to_pylist()
    ):
        if event_id not in first_sent or at < first_sent[event_id]:
            first_sent[event_id] = at
    for event_id, paid_at in zip(
        payments.column("event_id").to_pylist(), payments.column("timestamp").cast(pa.int64()).to_pylist()
    ):
        deadline = paid_at + DEADLINE_MICROS
        if clock is not None and deadline > clock:
            continue  # not yet due
        sent = first_sent.get(event_id)
        if sent is None or sent > deadline:
            out.append(confirmation_missing(event_id, paid_at))
    return out


def window_counts(responses):
    """Per failure window of a shard's email confirmations with an outcome:
    ``(window_start, confirmations, failed)`` (partial: sum over shards)."""
    emails = _email_outcomes(responses)
    emails = emails.filter(pc.is_in(emails.column("status"), pa.array(sorted(WITH_OUTCOME))))
    at = emails.column("sent_at").cast(pa.int64()).to_numpy(zero_copy_only=False)
    rows = pa.table(
        {
            "window_start": pa.array(window_start(at), pa.int64()),
            "confirmations": pa.array(np.ones(len(at), np.int64)),
            "failed": pc.cast(pc.is_in(emails.column("status"), pa.array(sorted(FAILED))), pa.int64()),
        }
    )
    return rows.group_by(["window_start"], use_threads=False).aggregate([("confirmations", "sum"), ("failed", "sum")])


def rate_alerts(partials, clock: int | None = None) -> list[dict]:
    """``email_failure_rate`` alerts from every shard's ``window_counts``, of
    the windows ended by ``clock`` (epoch micros; None: no cut)."""
    summed = partials.group_by(["window_start"], use_threads=False).aggregate(
        [("confirmations_sum", "sum"), ("failed_sum", "sum")]
    )
    return [
        email_failure_rate(start, n, failed)
        for start, n, failed in zip(
            *(summed.column(c).to_pylist() for c in ("window_start", "confirmations_sum_sum", "failed_sum_sum"))
        )
        if failure_rate_breached(n, failed) and (clock is None or start + WINDOW_MICROS <= clock)
    ]
