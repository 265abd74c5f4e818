"""Start and stop the local BigQuery emulator (PyPI ``bqemulator``, DuckDB-backed).

    python -m devtools.bigquery_emulator start|stop|status

It runs from its own virtualenv, ``.venv-bqemulator`` (created on first start
from ``requirements-bqemulator.txt``), because its pins clash with Beam's,
through ``bqemulator_launcher.py``, which turns off the DuckDB ``spatial``
extension it would otherwise download (impossible offline; we use no
GEOGRAPHY). REST on 127.0.0.1:9050 (``BIGQUERY_EMULATOR_HOST``), gRPC on the
next port. Point ``google-cloud-bigquery`` at it with
``transforms.sinks.bigquery.client(project, endpoint)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from devtools.local_service import LocalService
from devtools.tool_venv import ensure_venv as ensure_tool_venv

DEFAULT_HOST = "127.0.0.1:9050"
PROJECT = "funnel-local"
ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-bqemulator"
REQUIREMENTS = ROOT / "requirements-bqemulator.txt"
LAUNCHER = Path(__file__).resolve().parent / "bqemulator_launcher.py"


def _python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> None:
    ensure_tool_venv(VENV, REQUIREMENTS, "the BigQuery emulator")


def _command(host: str) -> list[str]:
    name, port = host.rsplit(":", 1)
    return [
        str(_python()),
        str(LAUNCHER),
        "--rest-host",
        name,
        "--rest-port",
        port,
        "--grpc-host",
        name,
        "--grpc-port",
        str(int(port) + 10),
        "--project",
        PROJECT,
    ]


SERVICE = LocalService(
    "bigquery", "BigQuery emulator", "BIGQUERY_EMULATOR_HOST", DEFAULT_HOST, _command, prepare=ensure_venv
)
running = SERVICE.running


def endpoint(host: str) -> str:
    return f"http://{host}"


if __name__ == "__main__":
    sys.exit(SERVICE.cli())
