"""Option parsing every command shares, importing no Beam (``funnel --help``
and the generator start fast).

A mistake on the command line ends in one line on stderr saying what is
wrong and what to do, exit status 2, before anything is written: argparse's
own errors (a missing flag, a bad number) and the commands' checks of what
the flags name (a lake that is a file, a lake with nothing to read).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

USAGE_ERROR = 2  # argparse's own exit status for a usage error


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, not the usage block."""

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: error: {message} (see {self.prog} --help)")


def fail(line: str) -> NoReturn:
    print(line, file=sys.stderr)
    sys.exit(USAGE_ERROR)


def command_parser(doc: str, prog: str | None = None) -> CommandParser:
    """A command's parser, described by its module docstring's summary."""
    return CommandParser(prog=prog, description=doc.split("\n\n")[0])


def _is_local(path: str) -> bool:
    return "://" not in path


def check_lake(
    parser: argparse.ArgumentParser,
    lake: str,
    must_exist: bool = False,
    what: str = "run `funnel backfill` or `funnel stream` into it first",
) -> None:
    """``--lake`` names a folder (or an object-store URL, not checked here):
    not a file, and when the command only reads, one that exists."""
    if not _is_local(lake):
        return
    if os.path.exists(lake) and not os.path.isdir(lake):
        parser.error(f"--lake {lake} is a file; name the lake's folder (it is created if missing)")
    if must_exist and not os.path.isdir(lake):
        parser.error(f"--lake {lake} does not exist: {what}")


def check_readable(parser: argparse.ArgumentParser, lake: str) -> None:
    """A lake folder that holds no Delta table (a wrong path, a folder that
    is no lake) or whose folders cannot be read is a mistake, not an empty
    lake."""
    if not _is_local(lake):
        return
    try:
        tables = [
            os.path.join(lake, *parts)
            for top in os.listdir(lake)
            for parts in [(top,)] + [(top, sub) for sub in _subfolders(os.path.join(lake, top))]
            if os.path.isdir(os.path.join(lake, *parts, "_delta_log"))
        ]
    except PermissionError as error:
        parser.error(f"--lake {lake}: {error.filename} cannot be read (permissions): run as a user who can read it")
    if not tables:
        parser.error(f"--lake {lake} holds no Delta table (no raw/, bronze/, silver/ ...): is it the lake's folder?")


def _subfolders(path: str) -> list[str]:
    return [name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name))] if os.path.isdir(path) else []


def instant(text: str, end_of_day: bool = False) -> int:
    """A flag's ISO time (UTC unless it names a zone) or day -> micros; a day
    is its start, or with ``end_of_day`` its last microsecond."""
    from datetime import UTC, date, datetime, time

    from schemas.contract import datetime_to_micros

    try:
        if end_of_day and len(text) == 10:
            return datetime_to_micros(datetime.combine(date.fromisoformat(text), time.max, UTC))
        return datetime_to_micros(datetime.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD or an ISO time, got {text}") from None


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text}")
    return value


def share(text: str) -> float:
    """A fraction between 0 and 1."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def check_gold(parser: argparse.ArgumentParser, lake: str, table: str) -> None:
    """A command reading gold: the lake exists and gold's ``table`` has been written."""
    from schemas.tables import GOLD
    from transforms.lake.tables import open_table

    check_lake(parser, lake, must_exist=True, what="run `funnel backfill` and `funnel gold` into it first")
    if open_table(lake, GOLD[table]) is None:
        parser.error(f"--lake {lake} holds no gold ({table}): run `funnel gold --lake {lake}` first")
