"""The lake's health on one screen: tables with their versions and rows,
the last runs and their accounting, freshness per table and platform, the
last days' rows per event day, and the failing data-quality checks of each
pipeline's latest run.

    python -m pipelines.status --lake DIR

Exit status 1 when a blocking check failed in a pipeline's latest run (gold
was then not released), so a scheduler can stop what reads the lake.
"""

from __future__ import annotations

from pipelines.arguments import check_lake, command_parser
from pipelines.common import use_filesystems
from reporting.status import health, render


class BlockingFailure(SystemExit):
    """A blocking check failed in a pipeline's latest run (exit status 1)."""


def main(argv=None):
    parser = command_parser(__doc__)
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    args = parser.parse_args(argv)
    use_filesystems()
    check_lake(parser, args.lake, must_exist=True)
    h = health(args.lake)
    print(render(h, args.lake))
    if h.blocking:
        raise BlockingFailure(f"status: {len(h.blocking)} blocking data-quality checks failed (see above)")
    return h


if __name__ == "__main__":
    main()
