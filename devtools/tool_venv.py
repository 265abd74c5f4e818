"""A tool that runs from a virtualenv of its own, because its pins clash with
Beam's: created on first use from a fully pinned requirements file, and
refreshed when the pins change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def ensure_venv(venv: Path, requirements: Path, title: str) -> Path:
    """Creates or refreshes ``venv`` from ``requirements``; returns its bin/ folder."""
    stamp = venv / ".installed-requirements"
    if not (stamp.exists() and stamp.read_text() == requirements.read_text()):
        print(f"installing {title} into {venv} (first time: about 30 s)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(requirements),
            ],
            check=True,
        )
        stamp.write_text(requirements.read_text())
    return venv / "bin"


def main() -> None:
    """Creates every tool's virtualenv at once (``make test`` runs this beside
    the main install: each is a pip run of its own, mostly waiting on I/O)."""
    from concurrent.futures import ThreadPoolExecutor

    from devtools import bigquery_emulator, infra_check, s3_emulator

    tools = [
        (bigquery_emulator.VENV, bigquery_emulator.REQUIREMENTS, "the BigQuery emulator"),
        (s3_emulator.VENV, s3_emulator.REQUIREMENTS, "the local S3 server (moto)"),
        (infra_check.VENV, infra_check.REQUIREMENTS, "checkov"),
    ]
    with ThreadPoolExecutor(len(tools)) as pool:
        for done in pool.map(lambda tool: ensure_venv(*tool), tools):
            print(f"ready: {done.parent}", flush=True)


if __name__ == "__main__":
    main()
