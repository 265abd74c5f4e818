"""The funnel definitions kept with the lake (``FUNNEL_DEFINITIONS``).

Every gold run commits the definitions it computes (their YAML text, under
its run id) with its gold tables, in the same gated commit. Those in force
are the ones of the run the latest gold release names: a run that failed or
was blocked by the gate commits nothing, and the definitions of the gold
people read stay in force. A gold run given no ``--funnels`` (the schedule, an erasure's
recompute, a replay) computes the definitions in force, so the funnels a
user defined survive every later run; a lake with none in force gets the
packaged ``schemas/funnels.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pyarrow.compute as pc

from schemas import contract, funnels
from schemas.tables import FUNNEL_DEFINITIONS
from schemas.vocabulary import Layer
from transforms.lake.files import DataFile, write_data_file
from transforms.lake.tables import read_arrow, released_run

PACKAGED = "packaged schemas/funnels.yaml"


@dataclass(frozen=True)
class Definitions:
    """Funnel definitions and where they were read."""

    text: str
    source: str
    run_id: str | None = None  # the gold run that recorded them (in-force definitions)

    @cached_property  # parsed once (a frozen dataclass's __dict__ still takes it)
    def funnels(self) -> tuple[funnels.Funnel, ...]:
        return funnels.parse(self.text, self.source)


def packaged() -> Definitions:
    return Definitions(funnels.DEFAULT_PATH.read_text(), PACKAGED)


def in_force(lake: str) -> Definitions | None:
    """The definitions of the latest gold release (None: no release recorded any)."""
    run_id = released_run(lake, Layer.GOLD)
    if run_id is None:
        return None
    rows = read_arrow(lake, FUNNEL_DEFINITIONS)
    rows = rows.filter(pc.equal(rows.column("run_id"), run_id)) if rows.num_rows else rows
    if not rows.num_rows:
        return None  # a release from before definitions were recorded
    row = rows.slice(0, 1).to_pylist()[0]
    return Definitions(row["definitions_yaml"], row["source"], run_id)


def definitions_row(run_id: str, definitions: Definitions) -> dict:
    return {
        "run_id": run_id,
        "recorded_at": contract.now_micros(),
        "source": definitions.source,
        "definitions_yaml": definitions.text,
        "funnel_names": ",".join(f.name for f in definitions.funnels),
    }


def write_definitions(row: dict, lake: str) -> DataFile:
    """The definitions' row as a data file, for the gold run's commit (gated and released with gold)."""
    return write_data_file(lake, FUNNEL_DEFINITIONS, [row])
