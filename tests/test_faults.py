"""Fault injection: a backfill that merges into silver and a gold run,
killed (SIGKILL, as a lost machine stops them) just before each of their
commits, and a lake whose disk is full. Each leaves readers of silver and
gold seeing the previous release or the new one, never a mix; the next run
of the same command finishes the work (or says in one line what is wrong)
and the lake then equals an undisturbed run's.

The commit points (``transforms.lake.commit``'s failpoint,
``FUNNEL_KILL_BEFORE_COMMIT``): a merging backfill commits up to 21 times
(raw, seven bronze tables, the dead letter, silver's head, each silver table
the merge changed, silver's release, the checks, the alerts, the run log),
gold 14 times (its checks, eleven gold tables and the funnel definitions,
the release, the run log). ``make test`` kills before a commit of each kind
(named by table); ``pytest -m slow tests/test_faults.py`` before every
commit, by number."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from schemas.tables import BRONZE, COMMIT_LOCK, GOLD, SILVER
from tests import console
from tests.conftest import content_checksums
from transforms.lake.commit import KILL_BEFORE_COMMIT_ENV
from transforms.lake.tables import ALL_LAKE_TABLES, layer_versions, read_arrow, snapshot

AS_OF = "2026-11-20"
# In make test, a point of each kind (before the first commit to that table): raw, the dead letter
# (bronze's last), silver's head, a silver table, silver's release; gold's first table, the funnel
# definitions (gold's last), the release. With -m slow: before every commit, by number.
BACKFILL_SAMPLE = ("raw_messages", "dead_letter", "silver_head", "silver_events", "releases")
GOLD_SAMPLE = ("fact_funnel_stage", "funnel_definitions", "releases")
MOST_COMMITS = 24  # more than either run makes here (counted in the fixture)
KILLED = -9


def _points(sample: tuple[str, ...]):
    return [*sample, *(pytest.param(str(n), marks=pytest.mark.slow) for n in range(1, MOST_COMMITS + 1))]


def _commits(before: Path, after: Path) -> int:
    """The commits a run made: its tables' version increments (the commit lock's aside; a table the
    run created starts at its empty version 0, which is no commit)."""
    total = 0
    for table in ALL_LAKE_TABLES:
        if table is not COMMIT_LOCK:
            old, new = snapshot(str(before), table).version, snapshot(str(after), table).version
            total += (new or 0) - (old or 0)
    return total


def _within(point: str, commits: int) -> None:
    if point.isdigit() and int(point) > commits:
        pytest.skip(f"this run commits {commits} times")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A lake holding all but one day's landing file (silver and gold
    released), that day's file, and the lake an undisturbed backfill and
    gold of it make."""
    root = tmp_path_factory.mktemp("faults")
    landing = console.generated(root, users=80, seed=17)
    days = sorted(landing.glob("*.jsonl"))
    measured = days[1]  # a whole day of traffic (the last files hold late scans only)
    before = root / "before"
    history = [a for day in days if day != measured for a in ("--input", str(day))]
    console.ok("backfill", *history, "--lake", str(before))
    console.ok("gold", "--lake", str(before), "--as-of", AS_OF)
    backfilled, after = root / "backfilled", root / "after"
    shutil.copytree(before, backfilled)
    console.ok("backfill", "--input", str(measured), "--lake", str(backfilled))
    shutil.copytree(backfilled, after)
    console.ok("gold", "--lake", str(after), "--as-of", AS_OF)
    regold = root / "regold"  # the gold run the gold tests kill: again over `after`
    shutil.copytree(after, regold)
    console.ok("gold", "--lake", str(regold), "--as-of", AS_OF)
    counts = {"backfill_commits": _commits(before, backfilled), "gold_commits": _commits(after, regold)}
    assert max(counts.values()) <= MOST_COMMITS
    return {"before": before, "after": after, "day": measured, **counts}


def released(lake: Path, tables: dict) -> dict[str, list]:
    """The rows readers of a layer see: each table at its latest release, sorted."""
    versions = layer_versions(str(lake), tables)
    out = {}
    for name, table in tables.items():
        rows = read_arrow(str(lake), table, versions[name]) if versions[name] is not None else None
        out[name] = sorted(map(repr, rows.to_pylist())) if rows is not None else []
    return out


def stored(lake: Path) -> dict[str, str]:
    return {**content_checksums(lake, BRONZE, "bronze"), **content_checksums(lake, SILVER, "silver")}


def _killed_at(point: str, *args: str) -> None:
    env = {**console.ENV, KILL_BEFORE_COMMIT_ENV: point}
    code, _, err = console.run(*args, env=env)
    assert code == KILLED, (code, err[-2000:])


@pytest.mark.parametrize("point", _points(BACKFILL_SAMPLE))
def test_a_backfill_killed_before_any_of_its_commits_is_all_or_nothing_and_the_rerun_finishes(point, world, tmp_path):
    _within(point, world["backfill_commits"])
    lake = tmp_path / "lake"
    shutil.copytree(world["before"], lake)
    _killed_at(point, "backfill", "--input", str(world["day"]), "--lake", str(lake))
    silver = released(lake, SILVER)
    assert silver in (released(world["before"], SILVER), released(world["after"], SILVER))
    assert released(lake, GOLD) == released(world["before"], GOLD)
    console.ok("backfill", "--input", str(world["day"]), "--lake", str(lake))
    assert stored(lake) == stored(world["after"])
    assert released(lake, SILVER) == released(world["after"], SILVER)


@pytest.mark.parametrize("point", _points(GOLD_SAMPLE))
def test_gold_killed_before_any_of_its_commits_is_all_or_nothing_and_the_rerun_finishes(point, world, tmp_path):
    _within(point, world["gold_commits"])
    lake = tmp_path / "lake"
    shutil.copytree(world["after"], lake)
    before = released(lake, GOLD)
    _killed_at(point, "gold", "--lake", str(lake), "--as-of", AS_OF)
    assert released(lake, GOLD) == before  # the same rows, released by this run or the last
    console.ok("gold", "--lake", str(lake), "--as-of", AS_OF)
    assert released(lake, GOLD) == released(world["after"], GOLD)


def test_a_full_disk_fails_in_one_line_leaves_the_release_and_the_rerun_finishes(world, tmp_path):
    with console.tmpfs(tmp_path / "disk", "64m") as disk:
        lake = disk / "lake"
        shutil.copytree(world["before"], lake)
        filler = disk / "filler"
        with open(filler, "wb") as out:  # fill the disk but for a few KB
            block = b"\0" * (1 << 20)
            try:
                while True:
                    out.write(block)
                    out.flush()
            except OSError:
                pass
        os.truncate(filler, os.path.getsize(filler) - (16 << 10))
        code, _, err = console.run("backfill", "--input", str(world["day"]), "--lake", str(lake))
        assert code == 1, err[-3000:]
        assert "no space left" in console.error_line("backfill", err).lower()
        assert released(lake, SILVER) == released(world["before"], SILVER)
        filler.unlink()
        console.ok("backfill", "--input", str(world["day"]), "--lake", str(lake))
        assert stored(lake) == stored(world["after"])
