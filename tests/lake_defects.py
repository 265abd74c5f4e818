"""Defects a test plants in a lake, as a bug in a merge would."""

from schemas.tables import SILVER
from transforms.lake.commit import commit_append, release
from transforms.lake.files import write_data_file
from transforms.lake.tables import layer_versions, open_table, read_file, snapshot


def duplicate_silver_sessions(lake: str) -> None:
    """A merge bug: one silver_sessions file's rows twice, released."""
    table = SILVER["silver_sessions"]
    versions = layer_versions(lake, SILVER)
    file = snapshot(lake, table, versions[table.name]).files[0]
    copy = write_data_file(lake, table, read_file(file, table), file.partitions)
    commit_append(lake, table, [copy], "test-duplicate", pipeline="test")
    versions[table.name] = open_table(lake, table).version()
    release(lake, "silver", versions, "test-duplicate")
