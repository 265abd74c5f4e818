"""The stream's own health, as messages arrive or stop arriving
(``schemas.quality.StreamFreshness``, ``StreamVolume`` on the raw table).

Windows are of receipt time (the records' ``ingested_at``), not of when a
batch reached the judge, so the job's own batching never empties a window.
A window is judged once the judge holds a record received ``settle`` after
the window's end: records reach the judge in about the order they were
received, so by then the window's own have too, however far behind the
clock the job runs (a backlog, a busy local runner). A stall is judged at
every evaluation, by the clock against the last time records reached the
judge: a job running behind delivers late but steadily, and is not silent.
Its observed value is the age of the newest receipt. Only failures are
reported: a stream judging itself every few seconds would otherwise fill
``dq_results`` with passes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from schemas import contract
from schemas.contract import SECOND
from schemas.quality import StreamFreshness, StreamVolume
from transforms.rules.quality import CheckResult, Verdict, subject


def _iso(micros: int) -> str:
    return contract.micros_to_datetime(micros).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class StreamHealth:
    """What the judge remembers between evaluations (small: counts of the
    trailing windows per platform)."""

    table: str
    freshness: StreamFreshness
    volume: StreamVolume
    settle: int  # micros of receipt time by which records may reach the judge out of order
    counts: dict[str, dict[int, int]] = field(default_factory=dict)  # platform -> window index -> records
    first_window: dict[str, int] = field(default_factory=dict)  # platform -> the first window it sent in
    newest_ingest: int | None = None
    last_arrival: int | None = None  # when records last reached the judge (micros)
    stall_alerted: int | None = None  # the newest ingest a stall was raised for
    silent: set[str] = field(default_factory=set)  # platforms alerted silent, until a judged window has them
    judged: int | None = None  # the last window judged

    @property
    def window(self) -> int:
        return self.volume.window_seconds * SECOND

    def received(self, platform: str, ingested_at: int, records: int, arrived: int) -> None:
        """``records`` received at ``ingested_at`` from ``platform``, reaching
        the judge at ``arrived`` (micros)."""
        w = ingested_at // self.window
        per = self.counts.setdefault(platform, {})
        per[w] = per.get(w, 0) + records
        self.first_window[platform] = min(self.first_window.get(platform, w), w)
        self.newest_ingest = ingested_at if self.newest_ingest is None else max(self.newest_ingest, ingested_at)
        self.last_arrival = arrived if self.last_arrival is None else max(self.last_arrival, arrived)

    def judge(self, now: int) -> list[CheckResult]:
        """The failures at ``now`` (micros): a stall, and each platform gone
        silent in a window settled since the last judgement."""
        if self.newest_ingest is None:
            return []
        out = []
        lag = (now - self.newest_ingest) / SECOND
        silence = (now - self.last_arrival) / SECOND
        if silence > self.freshness.max_silence_seconds and self.stall_alerted != self.newest_ingest:
            self.stall_alerted = self.newest_ingest
            out.append(
                CheckResult(
                    self.table,
                    self.freshness,
                    subject(other=f"stream silent since {_iso(self.newest_ingest)}"),
                    Verdict.FAIL,
                    round(lag, 1),
                    None,
                    float(self.freshness.max_silence_seconds),
                )
            )
        last = (self.newest_ingest - self.settle) // self.window - 1  # the newest window settled
        first = last if self.judged is None else self.judged + 1
        for w in range(first, last + 1):
            out += self._silent_in(w)
        if self.judged is None or last > self.judged:
            self.judged = last
        keep = last - self.volume.baseline_windows
        for per in self.counts.values():
            for old in [k for k in per if k < keep]:
                del per[old]
        return out

    def _silent_in(self, w: int) -> list[CheckResult]:
        v = self.volume
        sending = {p for p, per in self.counts.items() if per.get(w, 0) > 0}
        if not sending:
            return []  # nothing at all: a stall (freshness), not one platform
        self.silent -= sending  # silent until a judged window shows it sending again
        out = []
        for platform in v.platforms:
            if platform in sending or platform in self.silent or platform not in self.counts:
                continue
            start = max(w - v.baseline_windows, self.first_window[platform])
            baseline = [self.counts[platform].get(b, 0) for b in range(start, w)]
            if len(baseline) < v.min_windows:
                continue
            typical = statistics.median(baseline)
            if typical < v.min_records:
                continue
            self.silent.add(platform)
            out.append(
                CheckResult(
                    self.table,
                    v,
                    subject(platform=platform, other=f"window {_iso(w * self.window)}"),
                    Verdict.FAIL,
                    0.0,
                    1.0,
                    None,
                    platform=platform,
                    details={"baseline_median": typical, "windows": len(baseline)},
                )
            )
        return out
