"""Bronze -> silver: one current row per identity, joined.

``JOINS`` is the one definition of how silver rows are resolved, read by
the batch composite (``transforms.batch.silver``) and by the merge (``transforms.rules.merge``);
each join is tolerant of either side missing:

* view / click / event -> session by ``session_id`` (a session whose record
  never arrived is inferred from its earliest view/click/event: that date
  and platform, no user);
* event_response -> event by ``event_id`` (-> session -> user);
* user_activity -> event_response by ``response_id`` (-> event -> session).

Every silver row carries ``session_id``, ``user_id`` and ``platform``
resolved as far as the data allows; when the parent is unknown the row keeps
its own platform and null session/user (``unknown_parent_context``).

The rules exist in two forms: per session or per child in plain Python
(``resolve_session``, ``unknown_parent_context``: the readable definition)
and on Arrow tables (``resolve_sessions``, ``attach_parent``: what the
batch and the merge apply). A property test checks that both give the same
rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from schemas import contract
from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE, SILVER
from schemas.vocabulary import EventType
from transforms.rules.arrow import concat, count_true, first_of_groups, micros
from transforms.rules.dedup import INGEST_ORDER, MERGE_VERSIONS, content_columns
from transforms.rules.funnel import lookup, reached_count, reached_stages, stage_times


@dataclass(frozen=True)
class ParentJoin:
    """Silver rows of ``child`` take the ``context`` columns of the silver row
    of their ``parent``, found by the child's ``key`` column (the parent's
    identity). ``orphan_counter`` counts children whose parent is unknown
    (None: it is inferred, never unknown); ``time_column`` is the child's own
    time."""

    child: str
    parent: str
    key: str
    context: tuple[str, ...]
    orphan_counter: str | None
    time_column: str

    @property
    def table(self) -> str:
        return RECORD_TYPES[self.child].silver_table


JOINS = (
    ParentJoin("view", "session", "session_id", ("user_id", "platform"), None, "view_timestamp"),
    ParentJoin("click", "session", "session_id", ("user_id", "platform"), None, "click_timestamp"),
    ParentJoin("event", "session", "session_id", ("user_id", "platform"), None, "timestamp"),
    ParentJoin(
        "event_response",
        "event",
        "event_id",
        ("session_id", "user_id", "platform"),
        "responses_without_event",
        "sent_at",
    ),
    ParentJoin(
        "user_activity",
        "event_response",
        "response_id",
        ("event_id", "session_id", "user_id", "platform"),
        "activities_without_response",
        "activity_time",
    ),
)
SESSION_CHILDREN = tuple(j for j in JOINS if j.parent == "session")
RESPONSE_JOIN, ACTIVITY_JOIN = (j for j in JOINS if j.parent != "session")
_SESSION_FIELDS = (
    "user_id",
    "platform",
    "session_start_time",
    "session_end_time",
    "device_type",
    "geo_location",
    "experiments_json",
    "source",
    "emitted_at",
    "copies",
    *INGEST_ORDER,
    MERGE_VERSIONS,
)


def parent_context(join: ParentJoin, parent_row: dict) -> dict:
    """The columns a child takes from its parent's silver row."""
    return {c: parent_row[c] for c in join.context}


def unknown_parent_context(columns: tuple[str, ...]) -> dict:
    """The parent's columns when the parent is unknown: nulls, except that the
    child keeps its own platform."""
    return {c: None for c in columns if c != "platform"}


# --- per session (streaming) -------------------------------------------------------------------
def resolve_session(session_id: str, session: dict | None, children: dict[str, list[dict]]) -> dict:
    """The silver_sessions row of one session from its (deduped) record and
    children (``{child kind: rows}``, in-pipeline types)."""
    times = [(c[j.time_column], c) for j in SESSION_CHILDREN for c in children[j.child]]
    first = min(times, key=lambda tc: (tc[0], tc[1]["platform"])) if times else None
    row = {
        "session_id": session_id,
        "first_activity_at": first[0] if first else None,
        "last_activity_at": max(t for t, _ in times) if times else None,
        "views": len(children["view"]),
        "clicks": len(children["click"]),
        "events": len(children["event"]),
    }
    if session is not None:
        row.update({k: session.get(k) for k in _SESSION_FIELDS})
        row["has_session_record"] = True
    else:
        row.update({k: None for k in _SESSION_FIELDS})
        row.update(
            {"platform": first[1]["platform"], "session_start_time": first[0], "copies": 0, "has_session_record": False}
        )
    row["session_date"] = contract.micros_to_date(row["session_start_time"])
    end = row["session_end_time"] if row["session_end_time"] is not None else row["last_activity_at"]
    row["duration_seconds"] = None if end is None else (end - row["session_start_time"]) / 1e6
    types = Counter(e["event_type"] for e in children["event"])
    row.update(
        browse_events=types[EventType.BROWSE],
        add_to_cart_events=types[EventType.ADD_TO_CART],
        payment_events=types[EventType.PAYMENT_SUCCESSFUL],
        furthest_stage_in_session=len(reached_stages(children["view"], children["event"], [], [])),
    )
    return row


# --- per shard (batch) -------------------------------------------------------------------------
def _per_session_count(ids: pa.Array, session_ids, mask=None) -> pa.Array:
    """How many of ``session_ids`` (where ``mask``) equal each id."""
    if mask is not None:
        session_ids = session_ids.filter(mask)
    counts = pa.table({"k": session_ids}).group_by("k", use_threads=False).aggregate([("k", "count")])
    return pc.fill_null(lookup(ids, counts.column("k"), counts.column("k_count")), 0)


def resolve_sessions(sessions: pa.Table, children: dict[str, pa.Table]) -> pa.Table:
    """``resolve_session`` for every session of a shard: merged session
    records (``dedup_table``) and the deduped children -> silver_sessions."""
    kids = concat(
        [
            pa.table(
                {
                    "session_id": children[j.child].column("session_id"),
                    "time": micros(children[j.child].column(j.time_column)),
                    "platform": children[j.child].column("platform"),
                }
            )
            for j in SESSION_CHILDREN
        ],
        pa.schema([("session_id", pa.string()), ("time", pa.int64()), ("platform", pa.string())]),
    )
    ids = pc.unique(
        pa.chunked_array(sessions.column("session_id").chunks + kids.column("session_id").chunks, pa.string())
    )
    ordered = kids.sort_by([("session_id", "ascending"), ("time", "ascending"), ("platform", "ascending")])
    firsts = ordered.filter(pa.array(first_of_groups(ordered.column("session_id"))))
    last = kids.group_by("session_id", use_threads=False).aggregate([("time", "max")])
    first_time = lookup(ids, firsts.column("session_id"), firsts.column("time"))

    record = pc.index_in(ids, value_set=sessions.column("session_id"))
    has_record = pc.is_valid(record)

    def of_record(c):
        return pc.take(sessions.column(c), record)

    events = children["event"]
    start = pc.if_else(has_record, micros(of_record("session_start_time")), first_time)
    end = micros(of_record("session_end_time"))
    last_time = lookup(ids, last.column("session_id"), last.column("time_max"))
    reached = stage_times(ids, children["view"], events)[:3]
    columns = {
        "session_id": ids,
        "user_id": of_record("user_id"),
        "platform": pc.if_else(
            has_record, of_record("platform"), lookup(ids, firsts.column("session_id"), firsts.column("platform"))
        ),
        "has_session_record": has_record,
        "session_date": start.cast(pa.timestamp("us", tz="UTC")).cast(pa.date32()),
        "session_start_time": start,
        "session_end_time": end,
        **{
            c: of_record(c)
            for c in (
                "device_type",
                "geo_location",
                "experiments_json",
                "source",
                "emitted_at",
                *INGEST_ORDER,
                MERGE_VERSIONS,
            )
        },
        "first_activity_at": first_time,
        "last_activity_at": last_time,
        "duration_seconds": pc.divide(pc.subtract(pc.coalesce(end, last_time), start).cast(pa.float64()), 1e6),
        "copies": pc.fill_null(of_record("copies"), 0),
        **{
            j.table.removeprefix("silver_"): _per_session_count(ids, children[j.child].column("session_id"))
            for j in SESSION_CHILDREN
        },
        **{
            measure: _per_session_count(ids, events.column("session_id"), pc.equal(events.column("event_type"), t))
            for measure, t in (
                ("browse_events", EventType.BROWSE),
                ("add_to_cart_events", EventType.ADD_TO_CART),
                ("payment_events", EventType.PAYMENT_SUCCESSFUL),
            )
        },
        "furthest_stage_in_session": pa.array(reached_count(reached), pa.int64()),
    }
    return silver_table("silver_sessions", columns)


def silver_table(name: str, columns: dict) -> pa.Table:
    table = SILVER[name]
    schema = table.arrow_schema()
    return pa.Table.from_arrays([pc.cast(columns[c], schema.field(c).type) for c in table.column_names], schema=schema)


def attach_parent(children: pa.Table, parents: pa.Table, join: ParentJoin) -> tuple[pa.Table, int]:
    """Children (deduped rows of ``join.child``) with the context columns of
    their parent's silver row, or ``unknown_parent_context``; -> (the
    child's silver rows, how many had no parent)."""
    row = pc.index_in(children.column(join.key), value_set=parents.column(join.key))
    found = pc.is_valid(row)
    columns = {c: children.column(c) for c in children.column_names}
    columns["record_platform"] = children.column("platform")
    for c in join.context:
        values = pc.take(parents.column(c), row)
        columns[c] = pc.if_else(found, values, children.column(c)) if c == "platform" else values
    return silver_table(join.table, columns), children.num_rows - count_true(found)


# --- the batch composite -----------------------------------------------------------------------
def shuffled_columns(record_type: str) -> tuple[str, ...]:
    """What the dedup shuffle carries of a bronze table: the columns silver
    keeps, what ``content`` compares, and the ingest order."""
    rt = RECORD_TYPES[record_type]
    bronze = BRONZE[rt.bronze_table]
    keep = set(SILVER[rt.silver_table].column_names) | set(content_columns(bronze)) | set(INGEST_ORDER)
    return tuple(c for c in bronze.column_names if c in keep)


def winner_schema(record_type: str) -> pa.Schema:
    """What the dedup takes of a type: the bronze columns it carries and ``copies``."""
    rt = RECORD_TYPES[record_type]
    schema = BRONZE[rt.bronze_table].arrow_schema()
    return pa.schema([schema.field(c) for c in shuffled_columns(record_type)] + [pa.field("copies", pa.int64())])


def merged_session_schema() -> pa.Schema:
    return winner_schema("session").append(pa.field(MERGE_VERSIONS, pa.string()))
