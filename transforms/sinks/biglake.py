"""DDL for BigLake external tables over the lake's Delta tables on Cloud
Storage: BigQuery reads the lake in place (no copy), for users who want to
query bronze and silver directly. The sink datasets (``bronze``,
``silver``, ...) stay what the pipelines load; these live in
``lake_<layer>`` datasets beside them.

BigQuery takes the schema of a Delta table from its log, which the lake
created from ``schemas/`` (``transforms.lake.tables.ensure_table``); the
statements name every table and carry its description from there.
"""

from __future__ import annotations

from schemas.table import Table
from schemas.tables import BRONZE, DEAD_LETTER, SILVER
from transforms.lake.tables import table_dir

# The tables worth querying in place: bronze (every record), the dead letter, both silvers.
BIGLAKE_TABLES = (*BRONZE.values(), DEAD_LETTER, *SILVER.values())


def dataset(table: Table) -> str:
    return f"lake_{table.layer}"


def _string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def create_statements(project: str, connection: str, lake: str, tables=BIGLAKE_TABLES) -> list[str]:
    """``connection``: ``PROJECT.REGION.CONNECTION_ID`` of a Cloud resource
    connection allowed to read the lake bucket; ``lake``: ``gs://bucket/path``."""
    if not lake.startswith("gs://"):
        raise ValueError(f"BigLake reads Cloud Storage: the lake must be a gs:// URL, not {lake}")
    datasets = sorted({dataset(t) for t in tables})
    statements = [f"CREATE SCHEMA IF NOT EXISTS `{project}.{name}`;" for name in datasets]
    for table in tables:
        statements.append(
            f"CREATE OR REPLACE EXTERNAL TABLE `{project}.{dataset(table)}.{table.name}`\n"
            f"WITH CONNECTION `{connection}`\n"
            f"OPTIONS (\n"
            f"  format = 'DELTA_LAKE',\n"
            f"  uris = ['{table_dir(lake, table).rstrip('/')}'],\n"
            f"  description = {_string(table.description + ' (BigLake: the lake table in place.)')}\n"
            f");"
        )
    return statements
