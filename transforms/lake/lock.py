"""One writer commits to a lake at a time: the lake's commit lock.

Every writer's commit section (the backfill's and gold's committer, a
stream batch's merge, ``maintain``, ``erase-user``, ``replay-dead-letter``)
holds the lock; the work before it (reading, parsing, writing data files)
runs side by side. Inside it a committer first checks that what it planned
against still holds (``transforms.lake.commit.check_plan``), then commits,
so a run that lost a race commits nothing and says so in one line.

The lock is a Delta table of its own (``COMMIT_LOCK``), holding one row:
who holds it, since when, until when. Taking it, renewing it and giving it
back are each one commit that removes the current row's file and adds the
next; two writers taking it at once remove the same file, and Delta lets
one of them commit. So it works on every store the lake works on, with no
other service.

A holder renews its lease in the background while it holds the lock. A
holder that died is passed over when its lease has run out, or at once when
it was a process on this machine that no longer runs (a killed local run).
The lock is re-entrant within a process: a merge inside a committer that
holds it does not wait for itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace

from apache_beam.io.filesystems import FileSystems
from deltalake import CommitProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from schemas import contract
from schemas.tables import COMMIT_LOCK
from transforms.lake.files import remove_action, write_data_file
from transforms.lake.tables import open_table, read_arrow, snapshot, table_dir

LEASE_SECONDS = 60  # a holder that stops renewing is passed over this long after its last renewal
RENEW_SECONDS = LEASE_SECONDS / 4
POLL_SECONDS = 0.25


class LockLostError(RuntimeError):
    """This process's lease ran out and another writer took the lock."""


@dataclass(frozen=True)
class Holder:
    """The lock's row (``COMMIT_LOCK``); all None: free."""

    holder: str | None = None
    pipeline: str | None = None
    host: str | None = None
    pid: int | None = None
    since: int | None = None  # micros
    expires: int | None = None  # micros

    def holds(self, now: int) -> bool:
        """Whether it still holds the lock: a lease running, and not a process of this machine that ended."""
        if self.holder is None or self.expires is None or now > self.expires:
            return False
        if self.host == socket.gethostname() and self.pid is not None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return True

    def describe(self) -> str:
        since = contract.micros_to_datetime(self.since or 0).strftime("%H:%M:%S UTC")
        return f"{self.pipeline} {self.holder} (pid {self.pid} on {self.host}) since {since}"


FREE = Holder()


@dataclass(frozen=True)
class _State:
    holder: Holder
    version: int
    files: tuple[tuple[str, int], ...]  # (relpath, size): one, or free rows of writers that created it at once


def _uri(lake: str) -> str:
    return table_dir(lake, COMMIT_LOCK).rstrip("/")


def _read(lake: str) -> _State:
    """The lock's current row, creating the table (free) on first use."""
    for _ in range(50):
        read = snapshot(lake, COMMIT_LOCK)
        if read.version is None:
            _create(lake)
            continue
        try:
            rows = COMMIT_LOCK.from_arrow(read_arrow(lake, COMMIT_LOCK, read.version))
        except (OSError, DeltaError):  # its file was replaced and deleted between the two reads
            continue
        held = [Holder(**row) for row in rows if row["holder"] is not None]
        files = tuple((f.relpath, f.size) for f in read.files)
        return _State(held[0] if held else FREE, read.version, files)
    raise RuntimeError(f"{_uri(lake)}: could not read the commit lock")


def _create(lake: str) -> None:
    # Writers creating it at once may each add a free row (delta-rs's create is not exclusive); the
    # first swap removes them all, and two swaps removing the same rows conflict.
    try:
        write_deltalake(_uri(lake), COMMIT_LOCK.to_arrow([asdict(FREE)]), mode="error", name=COMMIT_LOCK.name)
    except (DeltaError, OSError, ValueError) as error:
        if snapshot(lake, COMMIT_LOCK).version is None:
            raise RuntimeError(f"{_uri(lake)}: could not create the commit lock: {error}") from error


def _swap(lake: str, state: _State, holder: Holder) -> _State | None:
    """Replaces the lock's row by ``holder`` against ``state``; None when
    another writer changed it since (the commits conflict)."""
    written = write_data_file(lake, COMMIT_LOCK, [asdict(holder)])
    dt = open_table(lake, COMMIT_LOCK, state.version)
    try:
        dt.create_write_transaction(
            [written.add_action(), *(remove_action(path, size, {}) for path, size in state.files)],
            "append",
            COMMIT_LOCK.arrow_schema(),
            None,
            commit_properties=CommitProperties(custom_metadata={"lock": "taken" if holder.holder else "free"}),
        )
    except CommitFailedError:
        FileSystems.delete([written.path])
        return None
    dt.update_incremental()
    # The replaced row's file goes at once (a reader that meets it gone reads again): a stream takes
    # the lock every batch, and a file per batch would pile up until a vacuum.
    with contextlib.suppress(OSError):
        FileSystems.delete([f"{_uri(lake)}/{path}" for path, _ in state.files])
    if dt.version() % 100 == 0:
        dt.create_checkpoint()
    return _State(holder, dt.version(), ((written.relpath, written.size),))


class _Lease:
    """This process's hold on one lake's lock: taken once, renewed by a thread, given back once."""

    def __init__(self, lake: str, pipeline: str, run_id: str):
        self.lake, self.pipeline, self.run_id = lake, pipeline, run_id
        self.depth = 0
        self.lost = False
        self._state: _State | None = None
        self._stop = threading.Event()
        self._guard = threading.Lock()  # the renewer and the giver-back take turns
        self._renewer: threading.Thread | None = None

    def take(self) -> None:
        announced = None
        while True:
            state = _read(self.lake)
            now = contract.now_micros()
            if not state.holder.holds(now):
                mine = Holder(
                    self.run_id,
                    self.pipeline,
                    socket.gethostname(),
                    os.getpid(),
                    now,
                    now + LEASE_SECONDS * 1_000_000,
                )
                taken = _swap(self.lake, state, mine)
                if taken is not None:
                    if state.holder.holder is not None:
                        logging.warning("commit lock: passing over %s (it no longer runs)", state.holder.describe())
                    self._state = taken
                    break
                continue
            if announced != state.holder.holder:
                logging.warning("waiting for the lake's commit lock: %s holds it", state.holder.describe())
                announced = state.holder.holder
            time.sleep(POLL_SECONDS)
        self._renewer = threading.Thread(target=self._renew, name="commit-lock-renewer", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            with self._guard:
                if self._stop.is_set() or self._state is None:
                    return
                now = contract.now_micros()
                renewed = _swap(
                    self.lake, self._state, replace(self._state.holder, expires=now + LEASE_SECONDS * 1_000_000)
                )
                if renewed is None:
                    self.lost = True
                    logging.error("commit lock of %s: lost to another writer (the lease ran out)", self.lake)
                    return
                self._state = renewed

    def give_back(self) -> None:
        self._stop.set()
        with self._guard:
            if self._state is not None and not self.lost and _swap(self.lake, self._state, FREE) is None:
                logging.error("commit lock of %s: lost before it was given back", self.lake)
            self._state = None
        if self._renewer is not None:
            self._renewer.join(timeout=5)


_HELD: dict[str, _Lease] = {}
_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_REGISTRY = threading.Lock()


def _key(lake: str) -> str:
    return lake.rstrip("/") if "://" in lake else os.path.realpath(lake)


class commit_lock:
    """``with commit_lock(lake, pipeline, run_id):`` holds the lake's commit
    lock for the block (waiting while another writer holds it)."""

    def __init__(self, lake: str, pipeline: str, run_id: str):
        self._lake, self._pipeline, self._run_id = lake, pipeline, run_id
        self._key = _key(lake)

    def __enter__(self) -> commit_lock:
        with _REGISTRY:
            local = _PROCESS_LOCKS.setdefault(self._key, threading.RLock())
        local.acquire()  # threads of this process take turns; the same thread re-enters
        try:
            lease = _HELD.get(self._key)
            if lease is None:
                lease = _Lease(self._lake, self._pipeline, self._run_id)
                lease.take()
                _HELD[self._key] = lease
            lease.depth += 1
        except BaseException:
            local.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        lease = _HELD[self._key]
        lease.depth -= 1
        try:
            if lease.depth == 0:
                del _HELD[self._key]
                lease.give_back()
        except Exception as error:  # the block's own error matters more; the lease runs out anyway
            logging.warning(
                "commit lock of %s: not given back (%s); it is passed over when its lease ends", self._lake, error
            )
        finally:
            _PROCESS_LOCKS[self._key].release()


def ensure_held(lake: str) -> None:
    """Raises when this process holds the lake's lock no more (its lease ran out
    and another writer took it): its next commit could race that writer."""
    lease = _HELD.get(_key(lake))
    if lease is not None and lease.lost:
        raise LockLostError(
            f"{lake}: this run's commit lock ran out and another writer took it; "
            "what it committed so far stays, rerun it to finish"
        )
