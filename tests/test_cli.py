"""The `funnel` command: its overview, and the mistakes a newcomer makes on
the first day, each ending in one line on stderr, exit status 2, nothing written."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import cli

REPO = Path(__file__).resolve().parent.parent


def _fails(capsys, argv: list[str]) -> str:
    """Runs ``funnel ARGV``; it must exit 2 with exactly one line on stderr, which is returned."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_the_overview_fits_one_screen_grouped(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert len(lines) <= 30 and max(map(len, lines)) <= 110
    for group in cli.Group:
        assert f"{group}:" in lines
    for command in cli.COMMANDS:
        assert any(line.split()[:1] == [command.name] for line in lines), command.name
    assert cli.main([]) == 0 and capsys.readouterr().out == text


def test_the_console_script_is_installed_and_dispatches():
    script = Path(sys.executable).parent / "funnel"
    assert script.exists(), "pip install -e . installs the funnel console script (setup.py entry_points)"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "backfill" in done.stdout
    done = subprocess.run([str(script), "generate", "--help"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("usage: funnel generate")


def test_an_unknown_command_names_the_commands(capsys):
    capsys.readouterr()
    assert cli.main(["bakfill"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no command 'bakfill'" in err and "backfill" in err


def test_a_missing_flag_is_one_line_naming_it(capsys):
    err = _fails(capsys, ["backfill", "--input", "x.jsonl"])
    assert err.startswith("funnel backfill: error:") and "--lake" in err and "--help" in err


def test_gold_on_a_lake_with_no_silver_says_what_to_run(tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    err = _fails(capsys, ["gold", "--lake", str(lake)])
    assert "no silver" in err and "funnel backfill" in err
    assert _files_under(lake) == []
    err = _fails(capsys, ["gold", "--lake", str(tmp_path / "nowhere")])
    assert "does not exist" in err
    assert not (tmp_path / "nowhere").exists()


def test_backfill_of_a_file_of_another_type_says_which_types_it_reads(tmp_path, capsys):
    readme = tmp_path / "README.md"
    shutil.copy(REPO / "README.md", readme)
    lake = tmp_path / "lake"
    err = _fails(capsys, ["backfill", "--input", str(readme), "--lake", str(lake)])
    assert str(readme) in err and ".jsonl" in err and ".parquet" in err
    assert not lake.exists()


def test_a_backfill_of_a_pattern_matching_nothing_is_still_a_quiet_success(tmp_path, capsys):
    # a day without landing files, on a schedule (issue 22): not a usage error
    lake = tmp_path / "lake"
    cli.main(["backfill", "--input", str(tmp_path / "none" / "*.jsonl"), "--lake", str(lake)])
    assert "nothing to read" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["backfill", "--input", "x.jsonl", "--lake", "{file}"],
        ["gold", "--lake", "{file}"],
        ["stream", "--subscription", "projects/p/subscriptions/s", "--lake", "{file}"],
        ["report", "--lake", "{file}"],
        ["export-audience", "--lake", "{file}", "--out", "{dir}/audience.csv"],
        ["erase-user", "--lake", "{file}", "--user-id", "u1"],
        ["replay-dead-letter", "--lake", "{file}"],
        ["maintain", "--lake", "{file}"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_lake_naming_a_file_is_one_line_not_a_traceback(argv, tmp_path, capsys):
    file = tmp_path / "lake.txt"
    file.write_text("not a lake\n")
    argv = [a.format(file=file, dir=tmp_path) for a in argv]
    err = _fails(capsys, argv)
    assert f"--lake {file} is a file" in err
    assert _files_under(tmp_path) == [file] and file.read_text() == "not a lake\n"


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--users", "-5", "at least 1"),
        ("--users", "many", "invalid positive_int value"),
        ("--days", "0", "at least 1"),
        ("--invalid-share", "1.5", "between 0 and 1"),
        ("--email-failure-bursts", "-1", "at least 0"),
        ("--start", "yesterday", "not a date"),
        ("--returns", "2", "between 0 and 1"),
    ],
)
def test_generate_refuses_what_would_write_nothing_or_nonsense(flag, value, expected, tmp_path, capsys):
    out = tmp_path / "landing"
    err = _fails(capsys, ["generate", "--out", str(out), f"{flag}={value}"])
    assert flag in err and expected in err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, table",
    [
        (["report", "--lake", "{lake}"], None),
        (["report", "--lake", "{lake}", "--out", "{dir}/reports"], None),
        (["export-audience", "--lake", "{lake}", "--out", "{dir}/audience.csv"], None),
    ],
    ids=["report", "report-out", "export-audience"],
)
def test_readers_of_a_lake_that_does_not_exist_write_nothing(argv, table, tmp_path, capsys):
    lake = tmp_path / "lake"
    err = _fails(capsys, [a.format(lake=lake, dir=tmp_path) for a in argv])
    assert f"--lake {lake} does not exist" in err
    assert _files_under(tmp_path) == [] and not lake.exists()


def test_readers_of_a_lake_without_gold_say_to_run_gold(tmp_path, capsys):
    lake = tmp_path / "lake"
    (lake / "silver").mkdir(parents=True)
    for argv in (
        ["report", "--lake", str(lake)],
        ["export-audience", "--lake", str(lake), "--out", str(tmp_path / "a.csv")],
    ):
        err = _fails(capsys, argv)
        assert "holds no gold" in err and f"funnel gold --lake {lake}" in err
    assert _files_under(tmp_path) == []


def test_publish_of_a_pattern_matching_nothing_is_an_error(tmp_path, capsys):
    err = _fails(capsys, ["publish", "--topic", "projects/p/topics/t", "--input", str(tmp_path / "*.jsonl")])
    assert "matches no file" in err
    err = _fails(capsys, ["publish", "--topic", "raw-events", "--input", str(REPO / "README.md")])
    assert "projects/P/topics/T" in err


def test_python_dash_m_keeps_working_for_the_flex_templates(tmp_path):
    # what FLEX_TEMPLATE_PYTHON_PY_FILE and the benchmarks' previous-release runs rely on
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.generate", "--out", str(tmp_path / "g"), "--users", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 2 and "at least 1" in done.stderr
