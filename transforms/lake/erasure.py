"""Erasing one person: what of theirs the lake holds, and its removal.

A person is one or more user ids (given, or found by email through
``email_sha256``/``email_hash`` in the users tables). Their **footprint** is
closed over the entities' links, from every version in bronze and silver:

* sessions whose ``user_id`` is theirs (in any version of the session);
* views, clicks and events of those sessions;
* responses to those events (and, given an email, responses sent to it);
* activities on those responses.

Each bronze and silver table then loses every row whose
``user_id``, ``session_id``, ``event_id`` or ``response_id`` is in the
footprint: one Delta ``DELETE`` per table, which rewrites only the files
holding such rows (a rewritten file keeps one landing file's rows, so the
backfill's replace rule still applies). Gold is recomputed from the erased
silver by ``pipelines.erase_user``.

Raw is immutable: its rows of the person are found by provenance (the
landing file and line, or the Pub/Sub message id, of each bronze row
erased) and listed; ``include_raw`` deletes them too. Old table versions
keep the data files until ``pipelines.maintain`` vacuums them (7 days'
retention); dead letters hold no content and are left as they are.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties

from schemas.table import Table
from schemas.tables import BRONZE, RAW, SILVER
from transforms.lake.tables import open_table, read_arrow, read_file, snapshot
from transforms.rules.bronze import normalize_email, pseudonym
from transforms.rules.pii import PiiKey

PERSONAL_TABLES = (*BRONZE.values(), *SILVER.values())
ID_COLUMNS = ("user_id", "session_id", "event_id", "response_id")


@dataclass
class Footprint:
    """The ids of one person's records, by id column."""

    ids: dict[str, set] = field(default_factory=lambda: {c: set() for c in ID_COLUMNS})

    def condition(self, table: Table) -> str | None:
        """The SQL predicate of ``table``'s rows in the footprint (None: none can be)."""
        parts = [
            f"{c} IN ({', '.join(_quote(v) for v in sorted(self.ids[c]))})"
            for c in ID_COLUMNS
            if c in table.column_names and self.ids[c]
        ]
        return " OR ".join(parts) or None

    def mask(self, rows: pa.Table) -> pa.ChunkedArray:
        hit = pa.chunked_array([pa.array([False] * rows.num_rows)])
        for c in ID_COLUMNS:
            if c in rows.column_names and self.ids[c]:
                hit = pc.or_(hit, pc.fill_null(pc.is_in(rows.column(c), pa.array(sorted(self.ids[c]))), False))
        return hit


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _ids(lake: str, table: Table, wanted: str, where: str, values: set) -> set:
    if not values or wanted not in table.column_names or where not in table.column_names:
        return set()
    rows = read_arrow(lake, table, columns=list(dict.fromkeys([wanted, where])))
    hit = pc.fill_null(pc.is_in(rows.column(where), pa.array(sorted(values))), False)
    return set(pc.drop_null(rows.filter(hit).column(wanted)).to_pylist())


def user_ids_of_email(lake: str, email: str, key: PiiKey) -> set:
    """User ids whose email (any version, bronze or silver) is ``email``:
    by the unkeyed SHA-256, and by the keyed hash for rows of this key."""
    normalized = normalize_email(email)
    found = set()
    for table in (BRONZE["bronze_users"], SILVER["silver_users"]):
        found |= _ids(lake, table, "user_id", "email_sha256", {hashlib.sha256(normalized.encode()).hexdigest()})
        found |= _ids(lake, table, "user_id", "email_hash", {pseudonym(key.secret, normalized)})
    return found


def footprint(lake: str, user_ids: set, email: str | None = None, key: PiiKey | None = None) -> Footprint:
    """The person's footprint (see the module docstring)."""
    fp = Footprint()
    fp.ids["user_id"] = set(user_ids)
    sessions_tables = (BRONZE["bronze_sessions"], SILVER["silver_sessions"])
    children = [t for t in PERSONAL_TABLES if "session_id" in t.column_names and t not in sessions_tables]
    for table in sessions_tables:
        fp.ids["session_id"] |= _ids(lake, table, "session_id", "user_id", fp.ids["user_id"])
    for table in children:  # silver children carry the session's user, even for a session seen only there
        fp.ids["session_id"] |= _ids(lake, table, "session_id", "user_id", fp.ids["user_id"])
    for table in [t for t in PERSONAL_TABLES if "event_id" in t.column_names and "response_id" not in t.column_names]:
        fp.ids["event_id"] |= _ids(lake, table, "event_id", "session_id", fp.ids["session_id"])
    responses = [t for t in PERSONAL_TABLES if t.name.endswith("event_responses")]
    for table in responses:
        fp.ids["response_id"] |= _ids(lake, table, "response_id", "event_id", fp.ids["event_id"])
        if email is not None and key is not None:
            fp.ids["response_id"] |= _ids(
                lake, table, "response_id", "sent_email_hash", {pseudonym(key.secret, normalize_email(email))}
            )
    return fp


def found_anywhere(lake: str, fp: Footprint) -> bool:
    """Whether any bronze or silver row is in the footprint (an id that is
    nowhere is most likely a mistyped one)."""
    if any(fp.ids[c] for c in ID_COLUMNS if c != "user_id"):
        return True
    return any(
        _ids(lake, table, "user_id", "user_id", fp.ids["user_id"])
        for table in PERSONAL_TABLES
        if "user_id" in table.column_names
    )


def provenance(lake: str, fp: Footprint) -> tuple[set, set]:
    """Where the footprint's bronze rows were received: ``{(landing file,
    line)}`` and ``{Pub/Sub message id}``."""
    lines, messages = set(), set()
    for table in BRONZE.values():
        rows = read_arrow(
            lake,
            table,
            columns=[*(c for c in ID_COLUMNS if c in table.column_names), "source_file", "source_line", "message_id"],
        )
        rows = rows.filter(fp.mask(rows))
        lines |= {
            (f, n)
            for f, n in zip(rows.column("source_file").to_pylist(), rows.column("source_line").to_pylist())
            if f is not None
        }
        messages |= set(pc.drop_null(rows.column("message_id")).to_pylist())
    return lines, messages


def provenance_condition(lines: set, messages: set) -> str | None:
    """The SQL predicate of rows received as those landing lines or Pub/Sub messages."""
    by_file = defaultdict(list)
    for f, n in lines:
        by_file[f].append(n)
    parts = [
        f"(source_file = {_quote(f)} AND source_line IN ({', '.join(str(n) for n in sorted(ns))}))"
        for f, ns in sorted(by_file.items())
    ]
    if messages:
        parts.append(f"message_id IN ({', '.join(_quote(m) for m in sorted(messages))})")
    return " OR ".join(parts) or None


def raw_rows_holding(lake: str, lines: set, messages: set):
    """-> ``(raw data file, its rows received as those landing lines or
    Pub/Sub messages)`` per file holding any (a file's landing file is in the
    log's statistics: only candidates are read)."""
    files = {f for f, _ in lines}
    for file in snapshot(lake, RAW).files:
        if not (file.source in files or (messages and (file.from_pubsub or file.source is None))):
            continue
        rows = read_file(file, RAW)
        keys = zip(*(rows.column(c).to_pylist() for c in ("source_file", "source_line", "message_id")))
        hit = pa.array([(f, n) in lines if f is not None else m in messages for f, n, m in keys], pa.bool_())
        if pc.any(hit).as_py():
            yield file, rows.filter(hit)


def raw_objects(lake: str, lines: set, messages: set) -> list[str]:
    """The raw layer's data files holding any of those records."""
    return [file.path for file, _ in raw_rows_holding(lake, lines, messages)]


def delete_rows(lake: str, table: Table, condition: str, run_id: str) -> int:
    """Deletes ``table``'s rows matching ``condition`` in one commit; returns how many."""
    dt = open_table(lake, table)
    if dt is None:
        return 0
    metrics = dt.delete(
        condition,
        commit_properties=CommitProperties(
            custom_metadata={"pipeline": "erase_user", "run_id": run_id, "change": "erase"}
        ),
    )
    return int(metrics.get("num_deleted_rows") or 0)
