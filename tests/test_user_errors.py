"""A newcomer's mistakes and the situations a person causes, through the
``funnel`` console script: each ends in one line and a fitting exit status
(2: the command line, nothing written; 1: the run failed; 130: Ctrl-C),
never a traceback, and nothing passes silently: a file in another encoding
is named, a missing file is an error, an id that is nowhere erases nothing."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from schemas.tables import BRONZE, DEAD_LETTER, GOLD
from tests import console
from tests.conftest import SAMPLE, content_checksums, read_table
from transforms.lake.tables import snapshot

USAGE, FAILED = 2, 1


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    return console.generated(tmp_path_factory.mktemp("landing"), users=120, seed=5)


@pytest.fixture(scope="module")
def lake(landing, tmp_path_factory) -> Path:
    lake = console.backfilled(tmp_path_factory.mktemp("lake"), landing)
    console.ok("gold", "--lake", str(lake), "--as-of", "2026-11-20")
    return lake


def test_an_input_that_is_a_folder_named_like_a_file_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "x.jsonl").mkdir()
    line = console.fails(USAGE, "backfill", "--input", str(tmp_path / "x.jsonl"), "--lake", str(tmp_path / "lake"))
    assert "is a folder" in line and "*.jsonl" in line
    assert not (tmp_path / "lake").exists()


def test_a_literal_input_that_does_not_exist_is_an_error_a_glob_matching_nothing_is_not(tmp_path):
    line = console.fails(USAGE, "backfill", "--input", str(tmp_path / "nope.jsonl"), "--lake", str(tmp_path / "lake"))
    assert "does not exist" in line
    assert not (tmp_path / "lake").exists()
    out = console.ok("backfill", "--input", str(tmp_path / "*.jsonl"), "--lake", str(tmp_path / "lake"))
    assert "nothing to read" in out


def test_status_of_a_folder_that_is_no_lake_says_so(tmp_path):
    (tmp_path / "not-a-lake").mkdir()
    (tmp_path / "not-a-lake" / "notes.txt").write_text("hello")
    line = console.fails(USAGE, "status", "--lake", str(tmp_path / "not-a-lake"))
    assert "holds no Delta table" in line


def test_a_utf8_byte_order_mark_is_stripped_not_a_dead_letter(tmp_path):
    plain, marked = tmp_path / "plain", tmp_path / "marked"
    plain.mkdir(), marked.mkdir()
    (plain / "s.jsonl").write_bytes(SAMPLE.read_bytes())
    (marked / "s.jsonl").write_bytes(b"\xef\xbb\xbf" + SAMPLE.read_bytes())
    for folder in (plain, marked):
        console.ok("backfill", "--input", str(folder / "s.jsonl"), "--lake", str(folder / "lake"))
    assert len(read_table(marked / "lake" / "dead_letter")) == len(read_table(plain / "lake" / "dead_letter"))
    bronze = {name: len(read_table(marked / "lake" / "bronze" / name)) for name in BRONZE}
    assert bronze == {name: len(read_table(plain / "lake" / "bronze" / name)) for name in BRONZE}


def test_a_utf16_file_is_rejected_whole_as_invalid_encoding_and_named(tmp_path):
    data = SAMPLE.read_text().encode("utf-16")
    (tmp_path / "u16.jsonl").write_bytes(data)
    code, _, err = console.run("backfill", "--input", str(tmp_path / "u16.jsonl"), "--lake", str(tmp_path / "lake"))
    console.no_traceback(err)
    assert "u16.jsonl is not UTF-8" in err
    letters = read_table(tmp_path / "lake" / "dead_letter")
    assert letters and {row["reason"] for row in letters} == {"invalid_encoding"}
    # A record per line as read (split on the byte \n: UTF-16's last line is a lone NUL byte).
    assert len(letters) == len([line for line in data.split(b"\n") if line.strip()])
    assert all(not read_table(tmp_path / "lake" / "bronze" / name) for name in BRONZE)
    # The dead-letter share check blocks it: the run says so in one line.
    if code != 0:
        console.error_line("backfill", err)


def test_a_funnel_duration_without_a_unit_is_an_error(lake, tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "funnels:\n  - name: f\n    window: 2\n    steps:\n"
        "      - {name: a, record: view}\n      - {name: b, record: event, where: {event_type: add_to_cart}}\n"
    )
    line = console.fails(USAGE, "gold", "--lake", str(lake), "--funnels", str(mine))
    assert "window: 2 has no unit (write 2s, 2m, 2h or 2d)" in line


def test_erasing_an_id_that_is_nowhere_erases_nothing_and_says_so(lake):
    before = snapshot(str(lake), GOLD["fact_funnel_stage"]).version
    line = console.fails(FAILED, "erase-user", "--lake", str(lake), "--user-id", "u-no-such-user")
    assert "is nowhere in" in line and "nothing erased" in line
    assert snapshot(str(lake), GOLD["fact_funnel_stage"]).version == before


def test_generate_refuses_a_folder_with_files_unless_forced(tmp_path):
    out = tmp_path / "g"
    console.ok("generate", "--users", "20", "--days", "1", "--out", str(out))
    (out / "raw_events_1999-01-01.jsonl").write_text("{}\n")  # an earlier run's file
    (out / "keep.txt").write_text("mine")
    line = console.fails(USAGE, "generate", "--users", "20", "--days", "1", "--out", str(out))
    assert "not empty" in line and "--force" in line
    console.ok("generate", "--users", "20", "--days", "1", "--seed", "2", "--out", str(out), "--force")
    names = {p.name for p in out.iterdir()}
    assert "keep.txt" in names and "raw_events_1999-01-01.jsonl" not in names
    assert json.loads((out / "manifest.json").read_text())["files"] == len(names - {"keep.txt", "manifest.json"})


def test_bigquery_without_credentials_is_refused_before_any_work(lake):
    before = snapshot(str(lake), GOLD["fact_funnel_stage"]).version
    line = console.fails(USAGE, "gold", "--lake", str(lake), "--sink", "bigquery", "--project", "p")
    assert "no Google credentials" in line
    assert snapshot(str(lake), GOLD["fact_funnel_stage"]).version == before


def test_writing_a_report_or_an_audience_where_it_may_not_is_one_line(lake, tmp_path):
    (tmp_path / "file").write_text("x")
    line = console.fails(FAILED, "export-audience", "--lake", str(lake), "--out", str(tmp_path / "file" / "a.csv"))
    assert "file" in line
    line = console.fails(FAILED, "report", "--lake", str(lake), "--out", str(tmp_path / "file" / "reports"))
    assert "file" in line


def test_a_read_only_lake_is_one_line_for_backfill_and_gold(lake, landing, tmp_path):
    with console.tmpfs(tmp_path / "ro", "64m") as mount:
        copy = mount / "lake"
        shutil.copytree(lake, copy)
        console.read_only(mount)
        line = console.fails(FAILED, "backfill", "--input", f"{landing}/*.jsonl", "--lake", str(copy))
        assert "Read-only file system" in line
        line = console.fails(FAILED, "gold", "--lake", str(copy), "--as-of", "2026-11-20")
        assert "Read-only file system" in line


def test_ctrl_c_inside_a_beam_stage_is_exit_130_and_the_rerun_finishes(landing, tmp_path):
    lake = tmp_path / "lake"
    proc = console.start("backfill", "--input", f"{landing}/*.jsonl", "--lake", str(lake))
    err = []
    for line in proc.stderr:  # the per-file read lines come from inside the ReadEachFile stage
        err.append(line)
        if " INFO read " in line:
            proc.send_signal(signal.SIGINT)
            break
    rest_out, rest_err = proc.communicate()
    err = "".join(err) + rest_err
    assert proc.returncode == console.INTERRUPTED, err[-3000:]
    console.no_traceback(err)
    lines = [line for line in err.splitlines() if "interrupted:" in line]
    assert len(lines) == 1 and "rerun the same command" in lines[0]
    console.ok("backfill", "--input", f"{landing}/*.jsonl", "--lake", str(lake))
    reference = tmp_path / "reference"
    console.ok("backfill", "--input", f"{landing}/*.jsonl", "--lake", str(reference))
    assert content_checksums(lake, BRONZE, "bronze") == content_checksums(reference, BRONZE, "bronze")
    dead = {DEAD_LETTER.name: DEAD_LETTER}
    assert content_checksums(lake, dead, "") == content_checksums(reference, dead, "")
