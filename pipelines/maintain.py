"""Lake maintenance: compact small files, checkpoint the logs, vacuum.

    python -m pipelines.maintain --lake DIR [--retention-hours 168] [--no-compact]

For every table of the lake (``transforms.lake.maintenance``): merges small
files of the same partition and origin (the streaming job's per-batch files
above all), writes a log checkpoint and drops expired log entries, then
vacuums: deletes files that no version within the retention needs, and files
no version ever named (a failed run's) once older than the retention. Time
travel reaches back as far as the retention. Run it daily, after the gold
recompute (the Terraform schedule does); it is safe while other jobs run,
because the retention (default 7 days) is longer than any run.
"""

from __future__ import annotations

import uuid

from pipelines.arguments import check_lake, command_parser, non_negative_int
from pipelines.common import setup_logging, use_filesystems
from transforms.lake.lock import commit_lock
from transforms.lake.maintenance import RETENTION_HOURS, maintain
from transforms.lake.tables import ALL_LAKE_TABLES


def main(argv=None) -> dict:
    parser = command_parser(__doc__)
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or an object store URL)")
    parser.add_argument(
        "--retention-hours",
        type=non_negative_int,
        default=RETENTION_HOURS,
        help=f"keep unneeded files this long (default {RETENTION_HOURS}); longer than any run",
    )
    parser.add_argument("--no-compact", dest="compact", action="store_false", help="skip compaction")
    args = parser.parse_args(argv)
    check_lake(parser, args.lake, must_exist=True)
    use_filesystems()
    setup_logging()
    reports = {}
    tables = list(ALL_LAKE_TABLES)
    run_id = f"maintain-{uuid.uuid4().hex}"
    for i, table in enumerate(tables, 1):
        with commit_lock(args.lake, "maintain", run_id):  # one table at a time: writers wait seconds, not the whole run
            report = maintain(args.lake, table, args.retention_hours, args.compact)
        reports[table.name] = report
        if report.version is not None:
            print(
                f"[{i:2}/{len(tables)}] {table.layer:>13} {table.name:<28} files {report.files_before:>5} -> "
                f"{report.files_after:<5} vacuumed {report.vacuumed:>5}  version {report.version}",
                flush=True,
            )
    return reports


if __name__ == "__main__":
    main()
