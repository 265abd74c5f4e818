"""Runs ``bqemulator start`` with its DuckDB spatial extension turned off.

Executed by the emulator's own virtualenv (see ``devtools.bigquery_emulator``),
so it imports nothing from this project. Offline, bqemulator refuses to
start because it downloads DuckDB's ``spatial`` extension; we use no
GEOGRAPHY columns, so loading it is skipped.
"""

import sys

from bqemulator.cli import main
from bqemulator.storage import engine

engine.DuckDBEngine._load_spatial = lambda self: None

if __name__ == "__main__":
    sys.exit(main(["start", *sys.argv[1:]]))
