"""Start and stop the local Pub/Sub emulator (gcloud's, Java).

    python -m devtools.pubsub_emulator start|stop|status

``start`` is a no-op when something already answers on the host:port (then
``stop`` leaves it alone too): tests and ``make`` targets only stop what they
started. The emulator ships with the gcloud CLI; on a machine without it,
``apt-get install google-cloud-cli-pubsub-emulator``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_HOST = "127.0.0.1:8085"
PROJECT = "funnel-local"  # emulator project ids need at least 6 characters
STATE_DIR = Path(__file__).resolve().parent.parent / ".emulators"
PID_FILE = STATE_DIR / "pubsub.pid"


def reachable(host: str) -> bool:
    name, port = host.rsplit(":", 1)
    with contextlib.suppress(OSError), socket.create_connection((name, int(port)), timeout=0.5):
        return True
    return False


def start(host: str = DEFAULT_HOST, timeout: float = 60.0) -> int | None:
    """Starts the emulator unless one answers already; returns the process
    group id it started, or None."""
    if reachable(host):
        return None
    if not shutil.which("gcloud"):
        raise RuntimeError("gcloud not found: apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator")
    STATE_DIR.mkdir(exist_ok=True)
    log = open(STATE_DIR / "pubsub.log", "wb")
    process = subprocess.Popen(
        ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={host}", f"--project={PROJECT}",
         f"--data-dir={tempfile.mkdtemp(prefix='pubsub-emulator-')}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while not reachable(host):
        if process.poll() is not None or time.time() > deadline:
            stop(process.pid)
            raise RuntimeError(f"Pub/Sub emulator did not start; see {STATE_DIR / 'pubsub.log'}")
        time.sleep(0.3)
    return process.pid


def stop(pgid: int) -> None:
    """Stops the emulator's whole process group (gcloud starts a Java child)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
        for _ in range(50):
            os.killpg(pgid, 0)
            time.sleep(0.1)
        os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def running(host: str = DEFAULT_HOST):
    """The emulator for the duration of the block; stopped after only if started here."""
    pgid = start(host)
    try:
        yield host
    finally:
        if pgid is not None:
            stop(pgid)


def main(argv=None) -> int:
    command = (argv or sys.argv[1:] or ["status"])[0]
    host = os.environ.get("PUBSUB_EMULATOR_HOST", DEFAULT_HOST)
    if command == "start":
        pgid = start(host)
        if pgid is not None:
            PID_FILE.write_text(str(pgid))
        print(f"Pub/Sub emulator on {host} ({'started' if pgid else 'already running'});"
              f" export PUBSUB_EMULATOR_HOST={host}")
    elif command == "stop":
        if PID_FILE.exists():
            stop(int(PID_FILE.read_text()))
            PID_FILE.unlink()
            print("Pub/Sub emulator stopped")
        else:
            print("no emulator started by `start` to stop")
    else:
        print(f"Pub/Sub emulator on {host}: {'up' if reachable(host) else 'down'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
