"""Running the ``funnel`` console script as a person does, and what its
failures must look like: one error line, no traceback."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

FUNNEL = Path(sys.executable).parent / "funnel"
ENV = {**os.environ, "NO_GCE_CHECK": "true"}
ENV.pop("FUNNEL_TRACEBACK", None)
ENV.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
CONFLICT = 75
INTERRUPTED = 130


def start(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [str(FUNNEL), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or ENV,
        cwd=cwd,
    )


def finish(*procs: subprocess.Popen) -> list[tuple[int, str, str]]:
    done = []
    for proc in procs:
        out, err = proc.communicate()
        done.append((proc.returncode, out, err))
    return done


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> tuple[int, str, str]:
    return finish(start(*args, cwd=cwd, env=env))[0]


def ok(*args: str, cwd: Path | None = None) -> str:
    code, out, err = run(*args, cwd=cwd)
    assert code == 0, err[-3000:]
    return out


def no_traceback(err: str) -> None:
    assert "Traceback" not in err, err[-3000:]


def error_line(command: str, err: str) -> str:
    """The one error line of a failed command (and no traceback)."""
    no_traceback(err)
    lines = [line for line in err.splitlines() if line.startswith(f"funnel {command}: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def fails(code: int, command: str, *args: str, cwd: Path | None = None, env: dict | None = None) -> str:
    """Runs ``funnel COMMAND ARGS``: it must exit ``code`` with one error line, returned."""
    status, _, err = run(command, *args, cwd=cwd, env=env)
    assert status == code, (status, err[-3000:])
    return error_line(command, err)


def generated(folder: Path, users: int, seed: int, days: int = 2) -> Path:
    """Landing files ``funnel generate`` writes into ``folder``/data."""
    out = folder / "data"
    ok("generate", "--users", str(users), "--days", str(days), "--seed", str(seed), "--out", str(out))
    return out


def backfilled(folder: Path, landing: Path) -> Path:
    """The lake one backfill of every landing file makes, in ``folder``/lake."""
    lake = folder / "lake"
    ok("backfill", "--input", f"{landing}/*.jsonl", "--lake", str(lake))
    return lake


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "8m"):
    """A small tmpfs at ``path`` (root only): a disk that fills, or is remounted read-only."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        import pytest

        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
