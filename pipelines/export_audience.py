"""An audience as a Google Ads Customer Match upload file: the retargeting
audience, or the people who dropped at a step of a defined funnel.

    python -m pipelines.export_audience --lake DIR --out FILE.csv [--since DATE]
    python -m pipelines.export_audience --lake DIR --out FILE.csv --funnel NAME --step STEP
        [--breakdown PROPERTY --value VALUE] [--since DATE]

Without ``--funnel``: ``gold/mart_retargeting`` (``--since``: carts
abandoned on or after that UTC date). With it: the users of the entries of
``gold/fact_funnel`` that reached the step before ``--step`` and not
``--step``, their conversion window closed (an entry still inside it is
pending, not dropped), optionally of one cell of the mart's breakdown
(``--breakdown device_type --value mobile``; ``--value other`` is every
value the mart pools) and entered on or after ``--since``.

One row per user: the SHA-256 hex of the trimmed, lower-cased email under
the header ``Email``, the column Customer Match takes pre-hashed emails in
(no plaintext leaves the lake: the email was hashed in bronze). Users
without an email (and anonymous sessions) are left out, counted. Rows are
sorted, so the same audience gives the same file.
"""

from __future__ import annotations

import os
from datetime import date

from pipelines.arguments import check_gold, command_parser
from pipelines.common import use_filesystems
from reporting.audience import AudienceError, audience, dropped_audience, write_csv
from schemas.funnels import ALL


def main(argv=None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--lake", required=True, help="lakehouse root with gold/mart_retargeting")
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument(
        "--since",
        type=date.fromisoformat,
        help="only carts abandoned (with --funnel: entries) on or after this UTC date",
    )
    parser.add_argument("--funnel", help="a defined funnel (schemas/funnels.yaml): export who dropped at --step")
    parser.add_argument("--step", help="with --funnel: the step they did not reach (reaching the one before)")
    parser.add_argument("--breakdown", default=ALL, help="with --funnel: a breakdown of the funnel (default: all)")
    parser.add_argument("--value", default=ALL, help="with --breakdown: its value, as the mart shows it")
    args = parser.parse_args(argv)
    use_filesystems()
    if (args.funnel is None) != (args.step is None):
        parser.error("--funnel and --step go together")
    if args.funnel is None and (args.breakdown != ALL or args.value != ALL):
        parser.error("--breakdown and --value need --funnel and --step")
    if (args.breakdown == ALL) != (args.value == ALL):
        parser.error("--breakdown and --value go together")
    check_gold(parser, args.lake, "mart_retargeting" if args.funnel is None else "fact_funnel")
    if os.path.isdir(args.out):
        parser.error(f"--out {args.out} is a folder; name the CSV file to write")
    if args.funnel is None:
        hashes, missing = audience(args.lake, args.since)
        what = "retargeting audience"
    else:
        try:
            hashes, missing = dropped_audience(
                args.lake, args.funnel, args.step, args.breakdown, args.value, args.since
            )
        except AudienceError as e:
            parser.error(str(e))
        cell = "" if args.breakdown == ALL else f", {args.breakdown} = {args.value}"
        what = f"dropped at {args.funnel}.{args.step}{cell}"
    write_csv(args.out, hashes)
    print(
        f"{what}: {len(hashes):,} users -> {args.out}"
        + (f" ({missing:,} without a user or an email left out)" if missing else "")
    )
    return len(hashes)


if __name__ == "__main__":
    main()
