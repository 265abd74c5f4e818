"""The code a benchmark compares against, checked out beside this tree.

``worktree(ref, workdir)`` puts ``ref`` (default ``BASELINE``: the last
commit before the columnar engine and the lean streaming graph) in a git
worktree under ``workdir`` and returns its path; its pipelines run with this
tree's virtualenv (same pinned dependencies), from that folder, so ``python
-m pipelines.backfill`` there is the old code. Returns None outside a git
checkout (a source tarball), and the benchmarks then measure this tree only.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

BASELINE = "9f29f42"  # issue 6 landed; dict rows through every step
ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def worktree(ref: str, workdir: Path) -> Path | None:
    try:
        sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    path = Path(workdir) / f"baseline-{sha[:12]}"
    if not (path / "pipelines").is_dir():
        _git("worktree", "prune")
        path.parent.mkdir(parents=True, exist_ok=True)
        _git("worktree", "add", "--force", "--detach", str(path), sha)
    return path


def environment(tree: Path) -> dict:
    """The environment that makes ``python -m ...`` run ``tree``'s modules."""
    return {**os.environ, "PYTHONPATH": str(tree)}
