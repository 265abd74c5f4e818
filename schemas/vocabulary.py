"""The funnel's words, defined once: its stages in order, and which email
statuses count as delivered. Everything else (the rules, the gold tables'
columns, the generated LookML) reads them from here."""

from __future__ import annotations

from enum import StrEnum


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

# Email statuses that mean the confirmation reached the person: the funnel's
# email_confirmation stage and the email-failure alert's denominator.
DELIVERED_STATUSES = frozenset({"sent", "delivered"})
