"""The lake's health on one screen: tables with their versions and rows,
the last runs and their accounting, freshness per table and platform, the
last days' rows per event day, and the failing data-quality checks of each
pipeline's latest run.

    python -m pipelines.status --lake DIR

Freshness is shown twice: against the clock (``--as-of``, default now: the
newest event and receipt per bronze table and platform, from the Delta log;
a table whose newest receipt is over ``--stale-after-hours`` old is STALE),
and as the latest runs' freshness checks measured it (a platform behind the
table's newest record).

Exit status 1 when a blocking check failed in a pipeline's latest run (gold
was then not released), so a scheduler can stop what reads the lake. A
stale lake is shown, not an exit status: a lake of old data read on purpose
(a replay, a demo) is no failure.
"""

from __future__ import annotations

import functools

from pipelines.arguments import check_lake, check_readable, command_parser, instant, positive_float
from pipelines.common import use_filesystems
from reporting.status import STALE_AFTER_HOURS, health, render


class BlockingFailure(SystemExit):
    """A blocking check failed in a pipeline's latest run (exit status 1)."""


def main(argv=None):
    parser = command_parser(__doc__)
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    parser.add_argument(
        "--as-of",
        type=functools.partial(instant, end_of_day=True),
        help="the clock freshness is measured from: YYYY-MM-DD (its end) or an ISO time in UTC (default: now)",
    )
    parser.add_argument(
        "--stale-after-hours",
        type=positive_float,
        default=STALE_AFTER_HOURS,
        help=f"a table whose newest receipt is older than this is stale (default {STALE_AFTER_HOURS:g})",
    )
    args = parser.parse_args(argv)
    use_filesystems()
    check_lake(parser, args.lake, must_exist=True)
    check_readable(parser, args.lake)
    h = health(args.lake, args.as_of, args.stale_after_hours)
    print(render(h, args.lake))
    if h.blocking:
        raise BlockingFailure(f"status: {len(h.blocking)} blocking data-quality checks failed (see above)")
    return h


if __name__ == "__main__":
    main()
