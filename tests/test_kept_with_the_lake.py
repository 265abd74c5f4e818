"""What a lake keeps for the runs after it: the funnel definitions in force
(a later gold, an erasure, keep a user's funnels), BigQuery's silver
following the lake's when BigQuery comes later, and freshness measured
against the clock, not the newest record. Through the console script."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.tables import GOLD
from tests import console
from tests.bigquery_checks import assert_bigquery_holds_the_lake, fresh_project, sink_flags
from tests.conftest import SAMPLE, read_table

AS_OF = "2026-11-20"
MINE = """funnels:
  - name: mine
    unit: session
    order: sequential
    window: 1h
    steps:
      - {name: viewed, record: view}
      - {name: carted, record: event, where: {event_type: add_to_cart}}
"""


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    return console.generated(tmp_path_factory.mktemp("landing"), users=120, seed=23)


@pytest.fixture(scope="module")
def lake(landing, tmp_path_factory) -> Path:
    return console.backfilled(tmp_path_factory.mktemp("lake"), landing)


def _funnels_in_gold(lake: Path) -> set[str]:
    return {row["funnel"] for row in read_table(lake / "gold" / GOLD["mart_funnel"].name)}


def test_the_funnels_gold_computed_stay_in_force_for_every_later_recompute(lake, tmp_path):
    lake_copy = tmp_path / "lake"
    shutil.copytree(lake, lake_copy)
    mine = tmp_path / "mine.yaml"
    mine.write_text(MINE)
    console.ok("gold", "--lake", str(lake_copy), "--as-of", AS_OF, "--funnels", str(mine))
    assert _funnels_in_gold(lake_copy) == {"mine"}
    # The scheduled run: no --funnels.
    out = console.ok("gold", "--lake", str(lake_copy), "--as-of", AS_OF)
    assert f"funnels mine (from {mine})" in out
    assert _funnels_in_gold(lake_copy) == {"mine"}
    # An erasure recomputes gold: still the user's funnels, and the drop-off export finds them.
    user = sorted(row["user_id"] for row in read_table(lake_copy / "silver" / "silver_users"))[0]
    console.ok("erase-user", "--lake", str(lake_copy), "--user-id", user, "--as-of", AS_OF)
    assert _funnels_in_gold(lake_copy) == {"mine"}
    out = console.ok(
        "export-audience", "--lake", str(lake_copy), "--funnel", "mine", "--step", "carted",
        "--out", str(tmp_path / "audience.csv"),
    )  # fmt: skip
    assert "dropped at mine.carted" in out
    status = console.ok("status", "--lake", str(lake_copy))
    assert f"funnel definitions in force: mine (from {mine}" in status


def test_a_gold_run_the_gate_blocks_leaves_the_definitions_of_the_released_gold(lake, tmp_path):
    """Definitions are committed with gold: a run that commits nothing changes nothing in force."""
    lake_copy = tmp_path / "lake"
    shutil.copytree(lake, lake_copy)
    console.ok("gold", "--lake", str(lake_copy), "--as-of", AS_OF)
    packaged = _funnels_in_gold(lake_copy)
    mine = tmp_path / "mine.yaml"
    mine.write_text(MINE)
    env = {**console.ENV, "FUNNEL_KILL_BEFORE_COMMIT": "releases"}  # dies before its release
    code, _, _ = console.run("gold", "--lake", str(lake_copy), "--as-of", AS_OF, "--funnels", str(mine), env=env)
    assert code == -9
    out = console.ok("gold", "--lake", str(lake_copy), "--as-of", AS_OF)
    assert "(from packaged schemas/funnels.yaml)" in out and _funnels_in_gold(lake_copy) == packaged


def test_status_measures_freshness_against_the_clock(tmp_path):
    """A file that landed a month ago is a month-old lake, whatever its newest record says."""
    old, new = tmp_path / "old", tmp_path / "new"
    for folder in (old, new):
        folder.mkdir()
        shutil.copy(SAMPLE, folder / "s.jsonl")
    month_ago = time.time() - 30 * 86400
    os.utime(old / "s.jsonl", (month_ago, month_ago))  # received when it landed: its modification time
    for folder in (old, new):
        console.ok("backfill", "--input", str(folder / "s.jsonl"), "--lake", str(folder / "lake"))

    def verdict(lake: Path, *args: str) -> str:
        out = console.ok("status", "--lake", str(lake), *args)
        return out.split("freshness against the clock")[1].splitlines()[0]

    assert verdict(new / "lake").endswith(": fresh")
    assert "STALE" in verdict(old / "lake")
    # The clock is --as-of: the same new lake, read as of a month from now, is stale.
    later = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    assert "STALE" in verdict(new / "lake", "--as-of", later)
    clock = console.ok("status", "--lake", str(old / "lake")).split("freshness against the clock")[1]
    sessions = next(line for line in clock.splitlines() if line.strip().startswith("bronze_sessions"))
    landed = datetime.fromtimestamp(month_ago, UTC).strftime("%Y-%m-%d")
    assert landed in sessions and "2026-11-02" in sessions  # newest receipt, newest event (the sample's day)


@pytest.mark.emulator
def test_bigquery_silver_follows_a_lake_that_had_silver_before(lake, landing, bigquery_emulator, tmp_path):
    """`make demo-bq` after `make demo`: the first --sink bigquery run loads the lake's silver."""
    lake_copy = tmp_path / "lake"
    shutil.copytree(lake, lake_copy)
    bq = fresh_project()
    out = console.ok("backfill", "--input", f"{landing}/*.jsonl", "--lake", str(lake_copy), *sink_flags(bq))
    assert "BigQuery silver loaded whole from the lake" in out
    counts = assert_bigquery_holds_the_lake(bq, lake_copy)
    assert counts["silver_users"] == len(read_table(lake_copy / "silver" / "silver_users")) > 0
    # The next run finds BigQuery's silver equal and loads nothing whole.
    out = console.ok("gold", "--lake", str(lake_copy), "--as-of", AS_OF, *sink_flags(bq))
    assert "loaded whole" not in out
    assert_bigquery_holds_the_lake(bq, lake_copy)
