"""What gold reads of silver for the funnels: the columns their conditions
test, their units and times, and what a breakdown needs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from schemas.funnels import RECORDS, BreaksOn, Condition, Funnel
from schemas.tables import SILVER
from transforms.rules.gold import GOLD_INPUTS

# What a shard's breakdown properties are read from.
SESSION_PROPERTIES = ("platform", "device_type", "experiments_json")
VIEW_PROPERTIES = ("landing_page", "is_referral")


def all_conditions(funnel: Funnel) -> Iterator[Condition]:
    for step in funnel.steps:
        yield from step.any_of
    for exclusion in funnel.exclusions:
        yield from exclusion.any_of


def required_columns(funnels: tuple[Funnel, ...]) -> dict[str, set[str]]:
    """Silver columns the funnels read, per table: keys, units, times, the
    columns their conditions test, and what the breakdowns need."""
    needed: dict[str, set[str]] = defaultdict(set)
    for funnel in funnels:
        for condition in all_conditions(funnel):
            kind = condition.kind
            columns = needed[kind.table]
            columns.update({SILVER[kind.table].key[0], "session_id", "user_id", kind.time})
            columns.update(column for column, _ in condition.where)
            if condition.parent is not None:
                columns.add(kind.parent_key)
        if funnel.strict_breaks_on == BreaksOn.ANY_RECORD:
            for kind in RECORDS.values():  # every record of the unit can break the order
                needed[kind.table].update({"session_id", "user_id", kind.time})
    if funnels:
        needed["silver_sessions"].update({"session_id", "user_id", "geo_location", *SESSION_PROPERTIES})
        needed["silver_views"].update({"view_id", "session_id", "view_timestamp", *VIEW_PROPERTIES})
        needed["silver_users"].update({"user_id", "country"})
    return dict(needed)


def gold_inputs(funnels: tuple[Funnel, ...]) -> dict[str, tuple[str, ...]]:
    """What gold reads of each silver table: its own columns and the funnels'."""
    needed = required_columns(funnels)
    return {name: cols + tuple(sorted(needed.get(name, set()) - set(cols))) for name, cols in GOLD_INPUTS.items()}
