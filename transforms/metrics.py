"""The pipelines' counters (Beam metrics): one namespace, a name per
outcome, and the counter sets of the parse and the dedup, which batch and
streaming share."""

from __future__ import annotations

from apache_beam.metrics import Metrics

from schemas import contract
from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE
from transforms.rules.bronze import DEAD_LETTER
from transforms.rules.dedup import DedupCounts

NAMESPACE = "funnel"


def counter(name: str):
    return Metrics.counter(NAMESPACE, name)


def add(c, n: int) -> None:
    """``c.inc(n)``, skipped for 0: a counter appears once something happened."""
    if n:
        c.inc(n)


class ParseCounters:
    """The parse's counters: ``records_read``, ``valid_<table>``, ``dead_letter_<reason>``."""

    def __init__(self):
        self.read = counter("records_read")
        self.valid = {t: counter(f"valid_{t}") for t in BRONZE}
        self.rejected = {r: counter(f"dead_letter_{r}") for r in contract.REASONS}

    def count(self, table: str, row: dict, n: int = 1) -> None:
        if table == DEAD_LETTER:
            self.rejected[row["reason"]].inc(n)
        else:
            self.valid[table].inc(n)


def extra_copies_counter(record_type: str):
    """``duplicates_<type>``, or ``superseded_<type>`` for mutable types, whose
    extra copies are mostly newer versions. Batch and streaming count alike."""
    kind = "superseded" if RECORD_TYPES[record_type].mutable else "duplicates"
    return counter(f"{kind}_{record_type}")


class DedupCounters:
    """``unique_<type>``, ``duplicates_<type>``/``superseded_<type>``, ``conflicts_<type>``."""

    def __init__(self):
        self._unique = {t: counter(f"unique_{t}") for t in RECORD_TYPES}
        self._extra = {t: extra_copies_counter(t) for t in RECORD_TYPES}
        self._conflicts = {t: counter(f"conflicts_{t}") for t in RECORD_TYPES}

    def count(self, record_type: str, counts: DedupCounts) -> None:
        add(self._unique[record_type], counts.unique)
        add(self._extra[record_type], counts.extra_copies)
        add(self._conflicts[record_type], counts.conflicts)
