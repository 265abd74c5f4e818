"""Policy scan of ``infra/`` with checkov, offline (``--skip-download``).

    python -m devtools.infra_check          (make infra-check)

No ``terraform`` binary is needed: checkov reads the HCL itself. It runs
from its own virtualenv, ``.venv-checkov`` (created on first use from
``requirements-checkov.txt``). A check that does not apply is skipped in
``infra/`` with a ``#checkov:skip=ID:reason`` comment next to the resource.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from devtools.tool_venv import ensure_venv

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-checkov"
REQUIREMENTS = ROOT / "requirements-checkov.txt"
INFRA = ROOT / "infra"


def scan() -> dict:
    """checkov's Terraform results for ``infra/``: ``summary`` (passed,
    failed, skipped counts) and ``failed_checks``."""
    checkov = ensure_venv(VENV, REQUIREMENTS, "checkov") / "checkov"
    done = subprocess.run(
        [str(checkov), "-d", str(INFRA), "--framework", "terraform", "--skip-download", "--output", "json", "--quiet"],
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 1):  # 1: some check failed
        raise RuntimeError(f"checkov failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    if isinstance(report, list):  # one report per framework
        report = next(r for r in report if r.get("check_type") == "terraform")
    return {"summary": report["summary"], "failed_checks": report["results"]["failed_checks"]}


def main() -> int:
    result = scan()
    summary = result["summary"]
    print(f"checkov on infra/: {summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped")
    for check in result["failed_checks"]:
        print(
            f"  FAILED {check['check_id']} {check['check_name']}: {check['resource']} "
            f"({check['file_path']}:{check['file_line_range'][0]})"
        )
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
