"""``funnel``: one command, a subcommand per job.

Each subcommand is a module's ``main(argv)`` (the same module a flex
template or ``python -m pipelines.X`` runs), imported only when asked for:
``funnel --help`` lists them without importing Beam.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from enum import StrEnum

from pipelines import failures
from pipelines.arguments import USAGE_ERROR


class Group(StrEnum):
    RUN = "run"
    INSPECT = "inspect"
    OPERATE = "operate"
    DEVELOP = "develop"


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    group: Group
    summary: str


COMMANDS = (
    Command(
        "backfill", "pipelines.backfill", Group.RUN, "landing files or raw into bronze, merged into silver (batch)"
    ),
    Command("gold", "pipelines.gold_daily", Group.RUN, "recompute gold's facts and marts from silver (batch)"),
    Command(
        "stream",
        "pipelines.stream_ingest",
        Group.RUN,
        "Pub/Sub into raw, bronze and silver, with operational alerts (streaming)",
    ),
    Command("status", "pipelines.status", Group.INSPECT, "the lake's health: tables, runs, freshness, failing checks"),
    Command("report", "pipelines.report", Group.INSPECT, "the funnel as text, a chart and the explorer page"),
    Command(
        "export-audience",
        "pipelines.export_audience",
        Group.INSPECT,
        "the retargeting audience as a Customer Match CSV",
    ),
    Command("erase-user", "pipelines.erase_user", Group.OPERATE, "erase one person from every layer"),
    Command(
        "replay-dead-letter", "pipelines.replay_dead_letter", Group.OPERATE, "parse dead letters again after a fix"
    ),
    Command("maintain", "pipelines.maintain", Group.OPERATE, "compact the lake's tables and vacuum old files"),
    Command("biglake-ddl", "pipelines.biglake_ddl", Group.OPERATE, "BigLake external tables over a gs:// lake, as SQL"),
    Command(
        "generate", "pipelines.generate", Group.DEVELOP, "simulated traffic as landing files, with the truths it holds"
    ),
    Command("publish", "pipelines.publish", Group.DEVELOP, "landing files as Pub/Sub messages"),
)
BY_NAME = {c.name: c for c in COMMANDS}


def overview() -> str:
    width = max(len(c.name) for c in COMMANDS)
    lines = [
        "usage: funnel COMMAND [options]   (funnel COMMAND --help: that command's options)",
        "",
        "The customer funnel on Apache Beam: raw -> bronze -> silver -> gold, batch and streaming.",
    ]
    for group in Group:
        lines += ["", f"{group}:"]
        lines += [f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS if c.group is group]
    lines += ["", "Runs locally by default; --runner=DataflowRunner --project P ... runs on Dataflow."]
    lines += [
        "Exit status: 0 done, 1 failed, 2 a mistake in the command (nothing written), 130 interrupted,",
        "75 another writer changed the lake first (nothing of this run committed: run it again).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(overview())
        return 0
    name, rest = argv[0], argv[1:]
    command = BY_NAME.get(name)
    if command is None:
        print(
            f"funnel: error: no command {name!r}; the commands are {', '.join(BY_NAME)} (see funnel --help)",
            file=sys.stderr,
        )
        return USAGE_ERROR
    program, sys.argv[0] = sys.argv[0], f"funnel {name}"  # argparse names the command in its messages
    try:
        importlib.import_module(command.module).main(rest)
    except KeyboardInterrupt:
        return failures.report_interrupt(name)
    except SystemExit as exit_:
        if isinstance(exit_.code, str):  # a run's own verdict (a blocking check, the accounting): its line
            print(f"funnel {name}: error: {exit_.code}", file=sys.stderr)
            return failures.FAILED
        raise
    except Exception as error:  # every failure a user can cause ends in one line (pipelines.failures)
        if failures.was_interrupted(error):
            return failures.report_interrupt(name)
        return failures.report_failure(name, error)
    finally:
        sys.argv[0] = program
    return 0


if __name__ == "__main__":
    sys.exit(main())
