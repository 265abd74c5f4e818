"""Replaying dead letters after a parser fix: a record the fixed parser
accepts enters bronze once and leaves the dead letter; the rest stays; a
second replay, or one rerun after stopping halfway, adds nothing."""

import orjson
import pytest

from pipelines import backfill, replay_dead_letter
from schemas import contract
from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE
from tests.conftest import SAMPLE, read_table
from transforms.lake import replay as lake_replay
from transforms.rules import bronze_arrow as bronze_columnar

# The "bug": a record size limit far below the contract's 1 MiB, so valid records are dead-lettered.
TOO_TIGHT = 260


def _bronze(lake):
    return sorted((name, r["source_line"]) for name in BRONZE for r in read_table(lake / "bronze" / name))


def _dead(lake):
    return sorted((r["source_line"], r["reason"]) for r in read_table(lake / "dead_letter"))


@pytest.fixture
def lake_with_a_bug(tmp_path, monkeypatch):
    lake = tmp_path / "lake"
    with monkeypatch.context() as bug:
        bug.setattr(contract, "MAX_RECORD_BYTES", TOO_TIGHT)
        bug.setattr(bronze_columnar, "MAX_RECORD_BYTES", TOO_TIGHT)
        backfill.main(["--lake", str(lake), "--input", str(SAMPLE)])
    return lake


def test_a_fixed_record_is_accepted_once_and_a_second_replay_is_a_no_op(lake_with_a_bug):
    lake = lake_with_a_bug
    lines = SAMPLE.read_bytes().splitlines()
    oversized = {n for n, line in enumerate(lines, start=1) if len(line) > TOO_TIGHT and n not in (16, 17, 18)}
    assert oversized, "the sample must have records over the tight limit"
    assert {n for n, reason in _dead(lake) if reason == "oversized"} == oversized

    c = replay_dead_letter.main(["--lake", str(lake), "--reason", "invalid_json"])
    assert c["dead_letters_selected"] == 1 and c["still_rejected"] == 1 and not c["dead_letters_removed"]

    c = replay_dead_letter.main(["--lake", str(lake)])
    assert sum(v for k, v in c.items() if k.startswith("accepted_")) == len(oversized)
    assert c["dead_letters_removed"] == len(oversized) and c["still_rejected"] == 3
    expected = sorted(
        (RECORD_TYPES[orjson.loads(lines[n - 1])["record_type"]].bronze_table, n)
        for n in range(1, len(lines) + 1)
        if n not in (16, 17, 18)
    )
    assert _bronze(lake) == expected  # every valid record once
    assert _dead(lake) == [(16, "invalid_json"), (17, "invalid_timestamp"), (18, "unknown_record_type")]

    again = replay_dead_letter.main(["--lake", str(lake)])
    assert not any(k.startswith("accepted_") for k in again) and not again["dead_letters_removed"]
    assert _bronze(lake) == expected


def test_a_replay_stopped_before_the_dead_letter_commit_adds_nothing_when_rerun(lake_with_a_bug, monkeypatch):
    lake = lake_with_a_bug
    before = len(_bronze(lake))

    class Stopped(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stopped()

    with monkeypatch.context() as m:
        m.setattr(lake_replay, "provenance_condition", stop)  # after bronze, before the dead letter
        with pytest.raises(Stopped):
            replay_dead_letter.main(["--lake", str(lake)])
    added = len(_bronze(lake)) - before
    assert added > 0
    c = replay_dead_letter.main(["--lake", str(lake)])
    assert c["already_in_bronze"] == added and not any(k.startswith("accepted_") for k in c)
    assert c["dead_letters_removed"] == added
    assert len(_bronze(lake)) == before + added
