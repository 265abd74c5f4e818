"""The pipelines' counters: one namespace, and a name per outcome."""
from __future__ import annotations

from apache_beam.metrics import Metrics

NAMESPACE = "funnel"


def counter(name: str):
    return Metrics.counter(NAMESPACE, name)


def add(c, n: int) -> None:
    """``c.inc(n)``, skipped for 0: a counter appears once something happened."""
    if n:
        c.inc(n)
