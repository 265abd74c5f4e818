"""Synthetic funnel data that follows the raw contract, messiness included.

    python -m pipelines.generate --users 20000 --days 7 --seed 42 --out DIR [--format jsonl|parquet] [--force]

Writes one landing file per arrival day (``raw_events_YYYY-MM-DD.jsonl``;
lines in a shuffled order) and ``manifest.json`` with the true values used,
so tests can check that the pipelines recover them. Same seed, same bytes.

What it produces, per the contract:

* journeys per session: views (and sometimes a ``browse`` event), add to
  cart, payment (per-variant probability: the A/B test's true effect), email
  confirmation moving through statuses, a barcode scan days later;
* two experiments per session: ``checkout_button`` (control / B, true
  effects per stage, optional sample-ratio skew) and ``banner_color`` (an
  A/A test); payments never confirmed; bursts of failed confirmations in one
  15-minute window (the manifest lists the alerts and the retargeting
  audience the plan must produce);
* anonymous sessions, sessions whose record never arrives, session end
  times in a second record, user profile updates (some arriving out of order);
* payment without cart, confirmation failed then resent, SMS confirmations;
* mixed timestamp formats, platform and event-type spellings (and a few
  records with no platform at all), schema v2
  records with extra fields;
* duplicates: redelivered lines, retried publishes (new ``emitted_at``),
  conflicting copies (same key, other content, always after the original);
* late arrivals (1-3 days) and a configurable share of invalid records of
  every dead-letter reason.

The truth in the manifest comes from the journeys the generator planned, not
from re-applying the funnel rules to the records.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, date, datetime, timedelta

from pipelines.arguments import command_parser, non_negative_int, positive_int, share
from schemas.contract import LANDING_SUFFIXES
from simulator.traffic import Config, generate


def main(argv=None):
    parser = command_parser(__doc__)
    parser.add_argument("--users", type=positive_int, default=Config.users)
    parser.add_argument("--days", type=positive_int, default=Config.days)
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--start", default=Config.start, help="first session day, UTC (default %(default)s)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    parser.add_argument("--invalid-share", type=share, default=Config.invalid_share)
    parser.add_argument("--duplicate-share", type=share, default=Config.duplicate_share)
    parser.add_argument(
        "--b-share",
        type=share,
        default=Config.b_share,
        help="share of sessions in checkout_button variant B (not 0.5: a sample-ratio mismatch)",
    )
    parser.add_argument(
        "--email-failure-bursts",
        type=non_negative_int,
        default=Config.email_failure_bursts,
        help="15-minute windows with a burst of failed confirmations",
    )
    parser.add_argument(
        "--returns",
        type=share,
        default=Config.p_return,
        help="share of users whose session browsed without paying who come back 1-10 days later "
        "(journeys across sessions; the manifest's user_journeys_7d)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="--out holds files already: delete its landing files and manifest first (else refused)",
    )
    args = parser.parse_args(argv)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out} is a file; name a folder for the landing files")
    if os.path.isdir(args.out) and os.listdir(args.out):
        if not args.force:
            parser.error(
                f"--out {args.out} is not empty: its files would stay beside the new ones; "
                "name an empty folder, or add --force to replace its landing files"
            )
        for name in os.listdir(args.out):
            if name == "manifest.json" or name.endswith(LANDING_SUFFIXES):
                os.remove(os.path.join(args.out, name))
    try:
        date.fromisoformat(args.start)
    except ValueError:
        parser.error(f"--start {args.start} is not a date (YYYY-MM-DD)")
    cfg = Config(
        users=args.users,
        days=args.days,
        seed=args.seed,
        start=args.start,
        format=args.format,
        invalid_share=args.invalid_share,
        duplicate_share=args.duplicate_share,
        b_share=args.b_share,
        email_failure_bursts=args.email_failure_bursts,
        p_return=args.returns,
    )
    last = date.fromisoformat(cfg.start) + timedelta(days=cfg.days + cfg.max_scan_lag_days + 4)
    if last > datetime.now(UTC).date():
        print(
            f"warning: records up to {last} may be in the future and will be dead-lettered "
            "(timestamp_out_of_range); pick an earlier --start",
            file=sys.stderr,
        )
    manifest = generate(cfg, args.out)
    print(
        f"generated {manifest['records_total']:,} records ({manifest['records_invalid']} invalid) in "
        f"{manifest['files']} files, {manifest['sessions']:,} sessions -> {args.out}"
    )


if __name__ == "__main__":
    main()
