"""What a person sees when a command fails: one line and a fitting exit
status, never a traceback (``FUNNEL_TRACEBACK=1`` shows it; otherwise it is
written to a file the line names).

Exit statuses (``funnel --help`` lists them too):

* 0: done; 2: a usage mistake (``pipelines.arguments``), nothing written;
* 1: the run failed (a check blocked it, the accounting did not balance,
  a store refused a write, anything unforeseen);
* 75 (``EX_TEMPFAIL``): another writer changed what this run planned
  against; nothing of this run was committed, and the same command again
  succeeds once that writer has ended;
* 130: interrupted (Ctrl-C); the line says what was committed before.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
import traceback

FAILED = 1
CONFLICT = 75
INTERRUPTED = 130
TRACEBACK_ENV = "FUNNEL_TRACEBACK"

# Beam appends the step to an error raised inside a pipeline: "... [while running 'Commit/CommitToLake']".
_BEAM_STEP = re.compile(r"\s*\[while running '[^']*'\]")


def first_line(error: BaseException) -> str:
    text = _BEAM_STEP.sub("", str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _keep_traceback(command: str, error: BaseException) -> str | None:
    path = os.path.join(tempfile.gettempdir(), f"funnel-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    try:
        with open(path, "w") as out:
            traceback.print_exception(error, file=out)
    except OSError:
        return None
    return path


def _status(error: BaseException) -> int:
    from transforms.lake.commit import LakeConflictError

    return CONFLICT if isinstance(error, LakeConflictError) else FAILED


def _known(error: BaseException) -> bool:
    """Errors whose message is written for a person (no type name needed)."""
    from schemas.funnels import FunnelDefinitionError
    from transforms.lake.commit import LakeConflictError
    from transforms.lake.lock import LockLostError
    from transforms.rules.pii import PiiKeyError

    return isinstance(error, LakeConflictError | LockLostError | FunnelDefinitionError | PiiKeyError)


def report_failure(command: str, error: BaseException) -> int:
    """Prints the one line for ``error`` and returns the exit status."""
    if os.environ.get(TRACEBACK_ENV):
        traceback.print_exception(error)
    line = first_line(error)
    if isinstance(error, PermissionError | IsADirectoryError | NotADirectoryError | FileNotFoundError):
        line = f"{error.strerror or 'cannot be used'}: {error.filename}" if error.filename else line
    elif isinstance(error, OSError) and error.errno == 28:
        line = f"no space left on the device ({error.filename or 'the lake'}): free some, then rerun"
    elif not _known(error):
        line = f"{type(error).__name__}: {line}"
    kept = None if os.environ.get(TRACEBACK_ENV) else _keep_traceback(command, error)
    print(f"funnel {command}: error: {line}" + (f" (details: {kept})" if kept else ""), file=sys.stderr)
    return _status(error)


def was_interrupted(error: BaseException) -> bool:
    """Ctrl-C inside a Beam stage reaches the launcher re-raised as another
    error (``RuntimeError('KeyboardInterrupt')``), the interrupt in its chain or text."""
    seen = error
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt) or first_line(seen).startswith("KeyboardInterrupt"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def report_interrupt(command: str) -> int:
    """Ctrl-C: what was committed before it, and what to do."""
    from transforms.lake.commit import last_commit

    last = last_commit()
    done = "nothing was committed" if last is None else f"the last commit was {last}"
    print(f"\nfunnel {command}: interrupted: {done}; rerun the same command", file=sys.stderr)
    return INTERRUPTED
