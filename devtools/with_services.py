"""Runs a command with the local services the tests need: the Pub/Sub and
BigQuery emulators and the S3 server, each started unless one answers, and
stopped afterwards only if started here (``devtools.local_service``).

    python -m devtools.with_services pytest -n 2

``make test`` runs pytest this way: with two test processes (pytest-xdist)
the services must outlive either of them, so neither starts or stops one.
Exits with the command's status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack

from devtools import bigquery_emulator, pubsub_emulator, s3_emulator


def main(argv: list[str]) -> int:
    with ExitStack() as services:
        for service in (pubsub_emulator.SERVICE, bigquery_emulator.SERVICE, s3_emulator.SERVICE):
            os.environ[service.host_env] = services.enter_context(service.running())
        return subprocess.call(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
