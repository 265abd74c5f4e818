"""The funnel's words, defined once: its stages in order, the event,
response and activity types its rules read, and the response statuses. Everything else (the rules, the gold tables'
columns, the generated LookML) reads them from here."""

from __future__ import annotations

from enum import StrEnum


class Layer(StrEnum):
    """The lake's layers (``Table.layer``; BigQuery datasets of the same names)."""

    RAW = "raw"
    BRONZE = "bronze"
    SILVER = "silver"
    GOLD = "gold"
    OPS = "ops"


class Stage(StrEnum):
    """The contract's funnel, in order (stage_number = position + 1)."""

    BROWSE = "browse"
    ADD_TO_CART = "add_to_cart"
    PAYMENT_SUCCESSFUL = "payment_successful"
    EMAIL_CONFIRMATION = "email_confirmation"
    BARCODE_SCANNED = "barcode_scanned"

    @property
    def number(self) -> int:
        return list(Stage).index(self) + 1

    @property
    def sessions_column(self) -> str:
        """The marts' ``sessions_<stage>`` column (payment: ``sessions_payment``)."""
        return "sessions_payment" if self is Stage.PAYMENT_SUCCESSFUL else f"sessions_{self.value}"


STAGES: tuple[str, ...] = tuple(s.value for s in Stage)


class Platform(StrEnum):
    """Bronze's normalized platforms (``transforms.rules.bronze``)."""

    WEB = "web"
    IOS = "ios"
    ANDROID = "android"
    EMAIL = "email"
    POS = "pos"
    UNKNOWN = "unknown"  # the record named none
    OTHER = "other"  # a spelling bronze does not know (kept in platform_raw)


# The platforms people browse and buy on: the ones whose silence is an incident.
APP_PLATFORMS = (Platform.WEB, Platform.IOS, Platform.ANDROID)


class EventType(StrEnum):
    """The event types the funnel reads (producers send others too; bronze
    normalizes spellings, ``transforms.rules.bronze``)."""

    BROWSE = "browse"
    ADD_TO_CART = "add_to_cart"
    PAYMENT_SUCCESSFUL = "payment_successful"


class ResponseType(StrEnum):
    EMAIL_CONFIRMATION = "email_confirmation"
    SMS_CONFIRMATION = "sms_confirmation"


class ResponseStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    BOUNCED = "bounced"


class ActivityType(StrEnum):
    BARCODE_SCANNED = "barcode_scanned"


# Statuses that mean the confirmation reached the person (the funnel's
# email_confirmation stage, the alerts' delivered outcomes), and that it did not.
DELIVERED_STATUSES = frozenset({ResponseStatus.SENT, ResponseStatus.DELIVERED})
FAILED_STATUSES = frozenset({ResponseStatus.FAILED, ResponseStatus.BOUNCED})
