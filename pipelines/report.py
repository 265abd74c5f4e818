"""Funnel report from the gold tables: text, a funnel chart (PNG) and the
funnel explorer page (``reporting.explorer``).

    python -m pipelines.report --lake DIR [--out DIR] [--as-of-version N | --as-of-timestamp T]

Prints sessions per stage, the drop-off between stages, conversion by
platform, the A/B readout, the audience size and the alert counts; writes
``funnel.png`` and ``funnel.html`` (default ``LAKE/reports/``). Gold is
read at its latest release, or as it was (``--as-of-version``: a version of
``LAKE/releases``; ``--as-of-timestamp``: a time).
"""

from __future__ import annotations

import os
import posixpath
from datetime import datetime

from pipelines.arguments import check_gold, command_parser
from pipelines.common import use_filesystems
from reporting import explorer
from reporting.explorer import Gold
from reporting.summary import funnel_chart, funnel_summary, text_report, use_case_report


def main(argv=None):
    parser = command_parser(__doc__)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--out", help="folder for funnel.png and funnel.html (default LAKE/reports)")
    travel = parser.add_mutually_exclusive_group()
    travel.add_argument("--as-of-version", type=int, help="gold as of this version of LAKE/releases")
    travel.add_argument("--as-of-timestamp", type=datetime.fromisoformat, help="gold as it was at this time")
    args = parser.parse_args(argv)
    use_filesystems()
    check_gold(parser, args.lake, "mart_conversion_rate")
    if args.out and "://" not in args.out and os.path.isfile(args.out):
        parser.error(f"--out {args.out} is a file; name a folder for funnel.png and funnel.html")
    out = args.out or posixpath.join(args.lake, "reports")  # a folder or an object-store URL
    gold = Gold.of(args.lake, args.as_of_version, args.as_of_timestamp)
    summary = funnel_summary(gold)
    text = text_report(summary) + "\n\n" + use_case_report(gold)
    print(text)
    chart = posixpath.join(out, "funnel.png")
    funnel_chart(summary, chart)
    page = explorer.write(gold, posixpath.join(out, "funnel.html"))
    print(f"\nchart: {chart}\npage:  {page}")
    return summary


if __name__ == "__main__":
    main()
