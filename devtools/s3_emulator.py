"""Start and stop a local S3 server (moto's), for the object-store lake.

    python -m devtools.s3_emulator start|stop|status

It runs from its own virtualenv, ``.venv-s3`` (created on first start from
``requirements-s3.txt``), because moto's server pins clash with Beam's. It
serves S3 on 127.0.0.1:9070 (``S3_EMULATOR_HOST``). ``environment(host)``
is what points delta-rs (``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP``) and
Beam's S3 filesystem (boto3 reads the same variables) at it.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from devtools.local_service import LocalService
from devtools.tool_venv import ensure_venv as ensure_tool_venv

DEFAULT_HOST = "127.0.0.1:9070"
ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-s3"
REQUIREMENTS = ROOT / "requirements-s3.txt"


def ensure_venv() -> None:
    ensure_tool_venv(VENV, REQUIREMENTS, "the local S3 server (moto)")


def _command(host: str) -> list[str]:
    name, port = host.rsplit(":", 1)
    return [str(VENV / "bin" / "moto_server"), "-H", name, "-p", port]


SERVICE = LocalService("s3", "S3 server (moto)", "S3_EMULATOR_HOST", DEFAULT_HOST, _command, prepare=ensure_venv)
running = SERVICE.running


def environment(host: str) -> dict[str, str]:
    """The variables that point delta-rs and boto3 (Beam's S3 filesystem) at the server."""
    return {
        "AWS_ENDPOINT_URL": f"http://{host}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    }


def create_bucket(host: str, bucket: str) -> str:
    """Creates ``bucket`` (moto accepts an unsigned request); returns ``s3://bucket``."""
    urllib.request.urlopen(urllib.request.Request(f"http://{host}/{bucket}", method="PUT"), timeout=30).close()
    return f"s3://{bucket}"


if __name__ == "__main__":
    sys.exit(SERVICE.cli())
