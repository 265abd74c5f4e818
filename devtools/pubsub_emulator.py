"""Start and stop the local Pub/Sub emulator (gcloud's, Java).

    python -m devtools.pubsub_emulator start|stop|status

The emulator ships with the gcloud CLI; on a machine without it,
``apt-get install google-cloud-cli-pubsub-emulator``. See
``devtools.local_service`` for what start and stop leave alone.
"""

from __future__ import annotations

import shutil
import sys
import tempfile

from devtools.local_service import LocalService

DEFAULT_HOST = "127.0.0.1:8085"
PROJECT = "funnel-local"  # emulator project ids need at least 6 characters


def _command(host: str) -> list[str]:
    if not shutil.which("gcloud"):
        raise RuntimeError("gcloud not found: apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator")
    return [
        "gcloud",
        "beta",
        "emulators",
        "pubsub",
        "start",
        f"--host-port={host}",
        f"--project={PROJECT}",
        f"--data-dir={tempfile.mkdtemp(prefix='pubsub-emulator-')}",
    ]


SERVICE = LocalService("pubsub", "Pub/Sub emulator", "PUBSUB_EMULATOR_HOST", DEFAULT_HOST, _command)
running = SERVICE.running

if __name__ == "__main__":
    sys.exit(SERVICE.cli())
