"""The BigLake DDL over the lake's Delta tables, generated from schemas/."""

import re

import pytest

from pipelines import biglake_ddl
from schemas.tables import BRONZE, DEAD_LETTER, SILVER
from transforms.sinks.biglake import BIGLAKE_TABLES, create_statements


def test_every_bronze_silver_and_dead_letter_table_gets_an_external_delta_table_at_its_lake_path():
    statements = create_statements("proj", "proj.eu.lake", "gs://bucket/lake")
    tables = [s for s in statements if s.startswith("CREATE OR REPLACE EXTERNAL TABLE")]
    assert len(tables) == len(BIGLAKE_TABLES) == len(BRONZE) + 1 + len(SILVER)
    found = {
        re.search(r"`proj\.(\w+)\.(\w+)`", s).groups(): re.search(r"uris = \['([^']+)'\]", s).group(1) for s in tables
    }
    assert found[("lake_bronze", "bronze_views")] == "gs://bucket/lake/bronze/bronze_views"
    assert found[("lake_ops", DEAD_LETTER.name)] == "gs://bucket/lake/dead_letter"
    assert found[("lake_silver", "silver_sessions")] == "gs://bucket/lake/silver/silver_sessions"
    assert all("format = 'DELTA_LAKE'" in s and "WITH CONNECTION `proj.eu.lake`" in s for s in tables)
    assert {s for s in statements if s.startswith("CREATE SCHEMA")} == {
        f"CREATE SCHEMA IF NOT EXISTS `proj.{d}`;" for d in ("lake_bronze", "lake_ops", "lake_silver")
    }
    for table, statement in zip(BIGLAKE_TABLES, tables):
        description = re.search(r'description = "((?:[^"\\]|\\.)*)"', statement).group(1)
        assert description.replace('\\"', '"').replace("\\\\", "\\").startswith(table.description)


def test_the_command_refuses_a_lake_bigquery_cannot_read(capsys):
    with pytest.raises(SystemExit):
        biglake_ddl.main(["--lake", "/tmp/lake", "--project", "p", "--connection", "p.eu.c"])
    assert "gs://" in capsys.readouterr().err
    printed = biglake_ddl.main(["--lake", "gs://b/lake", "--project", "p", "--connection", "p.eu.c"])
    assert capsys.readouterr().out.count("CREATE OR REPLACE EXTERNAL TABLE") == len(printed) - 3
