"""The stream's own health, as messages arrive or stop arriving
(``schemas.quality.StreamFreshness``, ``StreamVolume`` on the raw table).

Windows are of receipt time (the records' ``ingested_at``), not of when a
batch reached the judge, so the job's own batching never empties a window.
A window is judged once ``settle`` has passed after its end (what was
received in it has then reached the judge); the stall is judged against
the clock at every evaluation. Only failures are reported: a stream
judging itself every few seconds would otherwise fill ``dq_results`` with
passes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from schemas import contract
from schemas.quality import StreamFreshness, StreamVolume
from transforms.rules.quality import CheckResult, Verdict, subject

SECOND = 1_000_000


def _iso(micros: int) -> str:
    return contract.micros_to_datetime(micros).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class StreamHealth:
    """What the judge remembers between evaluations (small: counts of the
    trailing windows per platform)."""

    table: str
    freshness: StreamFreshness
    volume: StreamVolume
    settle: int  # micros
    counts: dict[str, dict[int, int]] = field(default_factory=dict)  # platform -> window index -> records
    first_window: dict[str, int] = field(default_factory=dict)  # platform -> the first window it sent in
    newest_ingest: int | None = None
    stall_alerted: int | None = None  # the newest ingest a stall was raised for
    silent: set[str] = field(default_factory=set)  # platforms alerted silent, until they send again
    judged: int | None = None  # the last window judged

    @property
    def window(self) -> int:
        return self.volume.window_seconds * SECOND

    def received(self, platform: str, ingested_at: int, records: int) -> None:
        """``records`` received at ``ingested_at`` (micros) from ``platform``."""
        w = ingested_at // self.window
        per = self.counts.setdefault(platform, {})
        per[w] = per.get(w, 0) + records
        self.first_window[platform] = min(self.first_window.get(platform, w), w)
        self.newest_ingest = ingested_at if self.newest_ingest is None else max(self.newest_ingest, ingested_at)
        if records:
            self.silent.discard(platform)

    def judge(self, now: int) -> list[CheckResult]:
        """The failures at ``now`` (micros): a stall, and each platform gone silent in a window judged now."""
        out = []
        if self.newest_ingest is not None:
            lag = (now - self.newest_ingest) / SECOND
            if lag > self.freshness.max_silence_seconds and self.stall_alerted != self.newest_ingest:
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
        last = (now - self.settle) // self.window - 1  # the newest window settled
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
