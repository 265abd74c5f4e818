"""Writes what derives from the schemas (``make generate``), or checks it.

    python -m schemas.generate            rewrite the files
    python -m schemas.generate --check    exit 1 naming the files that differ

Files: ``infra/bigquery_tables.tf`` (``schemas.terraform``), the LookML
project in ``looker/`` (``schemas.lookml``), ``dbt/models/sources.yml``
(``schemas.dbt``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from schemas import dbt, lookml, terraform

ROOT = Path(__file__).resolve().parent.parent


def generated() -> dict[str, str]:
    """Path from the repository root -> content."""
    return {terraform.PATH: terraform.render(), dbt.PATH: dbt.render(), **lookml.files()}


def drifted(root: Path = ROOT) -> list[str]:
    """Generated files that are missing or differ, and files left over in looker/views."""
    files = generated()
    out = [path for path, text in files.items() if not (root / path).exists() or (root / path).read_text() != text]
    out += [
        str(p.relative_to(root))
        for p in (root / lookml.ROOT / "views").glob("*.lkml")
        if str(p.relative_to(root)) not in files
    ]
    return sorted(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file drifted")
    args = parser.parse_args(argv)
    if args.check:
        stale = drifted()
        for path in stale:
            print(f"out of date: {path} (make generate)")
        return 1 if stale else 0
    for stale in (ROOT / lookml.ROOT / "views").glob("*.lkml"):
        stale.unlink()  # a view of a table no longer in gold goes
    for path, text in generated().items():
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
