"""The retargeting audience as a Google Ads Customer Match upload file.

    python -m pipelines.export_audience --lake DIR --out FILE.csv [--since DATE]

Reads ``gold/mart_retargeting`` (run ``gold_daily`` first) and writes one
row per user: the SHA-256 hex of the trimmed, lower-cased email under the
header ``Email``, the column Customer Match takes pre-hashed emails in (no
plaintext leaves the lake: the email was hashed in bronze). ``--since``
keeps users whose abandoned cart is on or after that UTC date. Users
without an email are left out (counted). Rows are sorted, so the same
audience gives the same file.
"""

from __future__ import annotations

import os
from datetime import date

from pipelines.arguments import check_gold, command_parser
from pipelines.common import use_filesystems
from reporting.audience import audience, write_csv


def main(argv=None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--lake", required=True, help="lakehouse root with gold/mart_retargeting")
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument("--since", type=date.fromisoformat, help="only carts abandoned on or after this UTC date")
    args = parser.parse_args(argv)
    use_filesystems()
    check_gold(parser, args.lake, "mart_retargeting")
    if os.path.isdir(args.out):
        parser.error(f"--out {args.out} is a folder; name the CSV file to write")
    hashes, missing = audience(args.lake, args.since)
    write_csv(args.out, hashes)
    print(
        f"retargeting audience: {len(hashes):,} users -> {args.out}"
        + (f" ({missing:,} without an email left out)" if missing else "")
    )
    return len(hashes)


if __name__ == "__main__":
    main()
