"""Writers that cannot double or drop: several commands writing one lake at
once, and one landing file under several names, each end with the lake a
single backfill makes (bronze, the dead letter, silver and gold compared row
for row); a run that lost the race ends in one line, exit 75, nothing of it
committed. Everything runs through the ``funnel`` console script, as a
person runs it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from schemas.tables import BRONZE, GOLD, SILVER
from tests import console
from tests.conftest import content_checksums, read_table

_start, _finish, _ok, _no_traceback, CONFLICT = console.start, console.finish, console.ok, console.no_traceback, 75


def _lost_cleanly(command: str, err: str) -> None:
    """A run that lost the race: exactly one error line, naming what to do."""
    line = console.error_line(command, err)
    assert "nothing of this run was committed" in line and "rerun" in line


def contents(lake: Path, with_gold: bool = False) -> dict[str, str]:
    sums = {
        **content_checksums(lake, BRONZE, "bronze"),
        **content_checksums(lake, SILVER, "silver"),
        **content_checksums(lake, {"dead_letter": None}, ""),
    }
    if with_gold:
        sums.update(content_checksums(lake, GOLD, "gold"))
    return sums


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    return console.generated(tmp_path_factory.mktemp("landing"), users=150, seed=11)


@pytest.fixture(scope="module")
def one_backfill(landing, tmp_path_factory) -> Path:
    """The lake one backfill of every landing file makes, then gold."""
    lake = console.backfilled(tmp_path_factory.mktemp("reference"), landing)
    _ok("gold", "--lake", str(lake), "--as-of", "2026-11-20")
    return lake


def _day_files(landing: Path) -> list[Path]:
    return sorted(landing.glob("*.jsonl"))


@pytest.mark.parametrize("writers", [2, 3])
def test_identical_backfills_at_once_on_a_new_lake_make_one_backfills_lake(writers, landing, one_backfill, tmp_path):
    lake = tmp_path / "lake"
    done = _finish(*(_start("backfill", "--input", f"{landing}/*.jsonl", "--lake", str(lake)) for _ in range(writers)))
    codes = sorted(code for code, _, _ in done)
    assert codes[0] == 0 and set(codes) <= {0, CONFLICT}, [err[-2000:] for _, _, err in done]
    for code, _, err in done:
        _no_traceback(err)
        if code == CONFLICT:
            _lost_cleanly("backfill", err)
    # A run that lost leaves no file behind either: every data file is one a version names.
    _ok("gold", "--lake", str(lake), "--as-of", "2026-11-20")
    assert contents(lake, with_gold=True) == contents(one_backfill, with_gold=True)
    # The losers rerun, as their line says: nothing changes.
    for code, _, _ in done:
        if code == CONFLICT:
            _ok("backfill", "--input", f"{landing}/*.jsonl", "--lake", str(lake))
    assert contents(lake) == contents(one_backfill)


@pytest.mark.parametrize("writers", [2, 3])
def test_identical_backfills_at_once_on_an_existing_lake_make_one_backfills_lake(
    writers, landing, one_backfill, tmp_path
):
    lake = tmp_path / "lake"
    first_day = _day_files(landing)[0]
    _ok("backfill", "--input", str(first_day), "--lake", str(lake))
    done = _finish(*(_start("backfill", "--input", f"{landing}/*.jsonl", "--lake", str(lake)) for _ in range(writers)))
    assert sorted(code for code, _, _ in done)[0] == 0
    for code, _, err in done:
        assert code in (0, CONFLICT), err[-2000:]
        if code == CONFLICT:
            _lost_cleanly("backfill", err)
    assert contents(lake) == contents(one_backfill)


def test_a_landing_file_under_other_names_is_one_file(landing, tmp_path):
    day = _day_files(landing)[1]
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(day, work / "s.jsonl")
    shutil.copy(day, work / "renamed.jsonl")
    reference = tmp_path / "reference"
    _ok("backfill", "--input", "s.jsonl", "--lake", str(reference), cwd=work)

    separately = tmp_path / "separately"
    for name in ("s.jsonl", str(work / "s.jsonl"), "renamed.jsonl"):  # ./s.jsonl: in the one run below
        _ok("backfill", "--input", name, "--lake", str(separately), cwd=work)
    assert contents(separately) == contents(reference)
    sources = {row["source_file"] for row in read_table(separately / "bronze" / "bronze_sessions")}
    assert sources == {"s.jsonl"}  # the name it was first received under

    together = tmp_path / "together"
    out = _ok(
        "backfill", "--input", "s.jsonl", "--input", "./s.jsonl", "--input", "renamed.jsonl",
        "--lake", str(together), cwd=work,
    )  # fmt: skip
    # One of the names is read, the others are said to hold the same content: the lake is that name's backfill.
    kept = {
        line.split(" has the same content as ")[1].split(":")[0] for line in out.splitlines() if "same content" in line
    }
    assert len(kept) == 1 and out.count("has the same content as") == 1  # s.jsonl and ./s.jsonl: one path
    alone = tmp_path / "alone"
    _ok("backfill", "--input", kept.pop(), "--lake", str(alone), cwd=work)
    assert contents(together) == contents(alone)


def test_a_backfill_during_maintain_or_erase_user_makes_one_backfills_lake(landing, one_backfill, tmp_path):
    first, second = _day_files(landing)[0], _day_files(landing)[1:]
    lake = tmp_path / "lake"
    _ok("backfill", "--input", str(first), "--lake", str(lake))
    maintain = _start("maintain", "--lake", str(lake))
    backfill = _start("backfill", *(a for f in second for a in ("--input", str(f))), "--lake", str(lake))
    for code, _, err in _finish(maintain, backfill):
        assert code == 0, err[-3000:]
    assert contents(lake) == contents(one_backfill)

    # A user whose records are all in the first day's file (id, sessions and events appear in no other),
    # erased while the other files are backfilled again: either order gives the same lake.
    later = b"".join(f.read_bytes() for f in second)
    sessions = read_table(lake / "silver" / "silver_sessions")
    events = read_table(lake / "silver" / "silver_events")

    def only_first_day(user: str) -> bool:
        ids = [user] + [s["session_id"] for s in sessions if s["user_id"] == user]
        ids += [e["event_id"] for e in events if e["session_id"] in ids]
        return not any(i.encode() in later for i in ids)

    users = sorted(row["user_id"] for row in read_table(lake / "silver" / "silver_users"))
    user = next(u for u in users if only_first_day(u))
    erase = _start("erase-user", "--lake", str(lake), "--user-id", user, "--as-of", "2026-11-20")
    again = _start("backfill", *(a for f in second for a in ("--input", str(f))), "--lake", str(lake))
    (erased, _, erase_err), (code, _, err) = _finish(erase, again)
    assert erased == 0, erase_err[-3000:]
    if code == CONFLICT:  # it lost the race to the erasure's commits: one line, then run again
        _lost_cleanly("backfill", err)
        _ok("backfill", *(a for f in second for a in ("--input", str(f))), "--lake", str(lake))
    else:
        assert code == 0, err[-3000:]
    expected = tmp_path / "expected"
    shutil.copytree(one_backfill, expected)
    _ok("erase-user", "--lake", str(expected), "--user-id", user, "--as-of", "2026-11-20")
    assert contents(lake) == contents(expected)
