"""The funnels of ``schemas.funnels`` on Arrow tables: one shard's silver rows
-> its ``fact_funnel`` rows and compact entries (``funnel_rows``); every
shard's entries -> the ``mart_funnel`` rows (``mart_rows``). What each
order, window, gap and exclusion means: docs/funnels.md.

A shard holds every silver row of its users (``transforms.batch.gold``), so
a user's journey across sessions is whole in it, and an entry's cohort,
breakdown values and step times are decided in one place; the mart is
counted over all shards' entries at the end. Ids become int codes per shard
and records are matched, paired with entries and ordered with numpy, not
per row in Python (BENCHMARKS.md: defined funnels).

One module per idea, as PostHog's ``insights/funnels``: ``inputs`` (what
gold reads), ``codes`` (ids as ints), ``records`` and ``shard`` (records
matching a condition), ``steps`` (which steps each record matches, and the
rule that one record reaches one step), ``entries``, one module per order
(``sequential``, ``strict``, ``any_order``), ``exclusions``,
``first_touch``, ``fact`` and ``mart``.
"""

from transforms.rules.defined_funnels.fact import BREAKDOWN_COLUMNS, fact_rows, funnel_rows
from transforms.rules.defined_funnels.inputs import gold_inputs, required_columns
from transforms.rules.defined_funnels.mart import COHORT_GRAINS, breakdown_values, mart_rows

__all__ = [
    "BREAKDOWN_COLUMNS",
    "COHORT_GRAINS",
    "breakdown_values",
    "fact_rows",
    "funnel_rows",
    "gold_inputs",
    "mart_rows",
    "required_columns",
]
