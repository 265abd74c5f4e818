"""Start and stop a local emulator process, and only the ones started here.

``start`` is a no-op when something already answers on the host:port (then
``stop`` leaves it alone too): tests and ``make`` targets only stop what they
started. Each emulator module defines a ``LocalService`` and calls ``cli``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = Path(__file__).resolve().parent.parent / ".emulators"


def reachable(host: str) -> bool:
    name, port = host.rsplit(":", 1)
    with contextlib.suppress(OSError), socket.create_connection((name, int(port)), timeout=0.5):
        return True
    return False


@dataclass(frozen=True)
class LocalService:
    name: str  # file names under .emulators/, e.g. "pubsub"
    title: str  # for messages
    host_env: str  # environment variable naming host:port
    default_host: str
    command: Callable[[str], list[str]]  # host -> the command that serves on it
    prepare: Callable[[], None] = lambda: None  # e.g. install the service's own virtualenv

    def host(self) -> str:
        return os.environ.get(self.host_env, self.default_host)

    def start(self, host: str, timeout: float = 90.0) -> subprocess.Popen | None:
        """Starts the service unless one answers already; returns the process
        it started (the leader of its own process group), or None."""
        if reachable(host):
            return None
        self.prepare()
        STATE_DIR.mkdir(exist_ok=True)
        log_path = STATE_DIR / f"{self.name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                self.command(host),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.time() + timeout
        while not reachable(host):
            if process.poll() is not None or time.time() > deadline:
                stop(process.pid, process)
                raise RuntimeError(f"{self.title} did not start; see {log_path}")
            time.sleep(0.3)
        return process

    @contextlib.contextmanager
    def running(self, host: str | None = None):
        """The service for the duration of the block; stopped after only if started here."""
        host = host or self.host()
        process = self.start(host)
        try:
            yield host
        finally:
            if process is not None:
                stop(process.pid, process)

    def cli(self, argv=None) -> int:
        """``start`` (pid kept in .emulators/), ``stop`` (only what ``start`` started), ``status``."""
        command = (argv or sys.argv[1:] or ["status"])[0]
        host, pid_file = self.host(), STATE_DIR / f"{self.name}.pid"
        if command == "start":
            process = self.start(host)
            if process is not None:
                pid_file.write_text(str(process.pid))
            print(
                f"{self.title} on {host} ({'started' if process else 'already running'}); export {self.host_env}={host}"
            )
        elif command == "stop":
            if pid_file.exists():
                stop(int(pid_file.read_text()))
                pid_file.unlink()
                print(f"{self.title} stopped")
            else:
                print(f"no {self.title} started by `start` to stop")
        else:
            print(f"{self.title} on {host}: {'up' if reachable(host) else 'down'}")
        return 0


def stop(pgid: int, process: subprocess.Popen | None = None, grace: float = 5.0) -> None:
    """Stops a service's whole process group (e.g. gcloud and its Java
    child): SIGTERM, then SIGKILL for what is left after ``grace`` seconds.
    ``process``: the group's leader, when this process started it: it is
    reaped (waited for), so a leader that has exited is not mistaken for a
    live one (an unreaped child stays a zombie, and a zombie still counts
    as a member of its group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.time() + grace
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        while time.time() < deadline:
            os.killpg(pgid, 0)  # ProcessLookupError once every member is gone
            time.sleep(0.1)
        os.killpg(pgid, signal.SIGKILL)
    if process is not None:
        process.wait()
