"""Every rule that exists twice -- per element (the streaming path, and the
definition) and vectorized on Arrow (the batch path) -- gives the same
result on generated input (hypothesis)."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.contract import ENVELOPE, RECORD_TYPES, RESPONSE_STATUSES
from schemas.tables import ALL_TABLES, BRONZE, RAW, SILVER
from tests.conftest import MIN, T0, ts
from transforms.rules.bronze_arrow import parse_chunk
from transforms.rules.dedup import combine_fn_for, dedup_table
from transforms.rules.funnel import reached_stages, stage_times
from transforms.rules.pii import PiiKey
from transforms.rules.silver import (
    RESPONSE_JOIN,
    SESSION_CHILDREN,
    attach_parent,
    parent_context,
    resolve_session,
    resolve_sessions,
    unknown_parent_context,
)

RULES = settings(
    max_examples=int(__import__("os").environ.get("RULE_EXAMPLES", 150)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
KEY = PiiKey(b"property-key", "property-v1")
NOW = ts("2026-11-25T00:00:00Z")
UTC = UTC


# --- raw records: valid, almost valid and invalid, in every spelling ---------------------------
@st.composite
def _timestamp(draw):
    """A valid timestamp in one of the spellings producers use (and some the
    contract accepts that are rarer)."""
    moment = draw(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2026, 11, 24)))
    zone = draw(
        st.sampled_from(
            [
                UTC,
                None,
                timezone(timedelta(hours=2)),
                timezone(timedelta(hours=-5)),
                timezone(timedelta(hours=5, minutes=30)),
            ]
        )
    )
    moment = moment.replace(tzinfo=zone)
    spelling = draw(st.integers(0, 7))
    if spelling == 0:
        return int(moment.replace(tzinfo=zone or UTC).timestamp() * 1000)
    if spelling == 1:
        return moment.isoformat().replace("+00:00", "Z")
    if spelling == 2:
        return moment.isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds", "microseconds"])))
    if spelling == 3:
        return moment.isoformat(sep=" ")
    if spelling == 4:
        return moment.strftime("%Y-%m-%dT%H:%M") + ("Z" if zone else "")
    if spelling == 5:
        return moment.date().isoformat()
    if spelling == 6:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "1" * draw(st.integers(1, 9)) + "Z"
    return moment.isoformat(timespec="milliseconds")


_TEXT = st.sampled_from(
    [
        "web",
        "iPhone",
        "android-app",
        "Ana@Example.com ",
        "+34 600 1",
        "0034-600",
        "es",
        "BROWSE",
        "Article added to cart",
        "s-1",
        "e-1",
        "r-1",
        "ständig",
    ]
) | st.text(alphabet=string.ascii_letters + " -_.@+0123456789", min_size=1, max_size=8)
_INVALID = {
    "text": st.sampled_from(["", None, 5, True, ["x"]]),
    "timestamp": st.sampled_from(
        [
            "yesterday",
            "2026-02-30T10:00:00Z",
            "2026-11-02T24:00:00Z",
            "2099-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "2026-11",
            915148800000,
            10**20,
            -5,
            True,
            1.5e12,
            {"t": 1},
        ]
    ),
    "date": st.sampled_from(["2026-02-30", "0000-01-01", "14/03/2025", 20250314, ""]),
    "bool": st.sampled_from([1, 0, "true"]),
    "int": st.sampled_from([0, -1, 2**63, 10**20, True, 1.0, "1"]),
    "enum": st.sampled_from(["SENT", "unknown", 3]),
    "object": st.sampled_from([[], "x", {"checkout_button": 5}, 7]),
}


def _valid(field):
    kind = field.kind
    if kind == "text":
        return _TEXT if field.required else st.one_of(_TEXT, st.just(""), st.none())
    if kind == "timestamp":
        return _timestamp() if field.required else st.one_of(_timestamp(), st.none())
    if kind == "date":
        return st.sampled_from(["2025-03-14", "2025-3-14", "2025-03-14T10:00:00Z", "1999-12-31", None])
    if kind == "bool":
        return st.sampled_from([True, False, None])
    if kind == "int":
        return st.sampled_from([1, 2])
    if kind == "enum":
        return st.sampled_from(field.values)
    strings = st.sampled_from(["B", "control"])
    values = strings if field.string_values else st.sampled_from(["B", 12.5, 3, None, True, "EUR"])
    return st.one_of(
        st.dictionaries(
            st.sampled_from(["checkout_button", "price", "article_id", "currency", "order_id"]), values, max_size=3
        ),
        st.none(),
    )


@st.composite
def raw_record(draw):
    """Mostly valid records in varied spellings; a third carry one defect."""
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([b"not json", b'{"a": "\xff"}', b"[1, 2]", b"", b'{"record_type": 5}']))
    rt = draw(st.sampled_from(list(RECORD_TYPES.values())))
    obj = {"record_type": rt.name}
    for f in ENVELOPE[1:-1]:
        value = draw(_valid(f))
        if value is not None or draw(st.booleans()):  # absent and null alike
            obj[f.name] = value
    payload = {}
    for f in rt.fields:
        value = draw(_valid(f))
        if value is not None or draw(st.booleans()):
            payload[f.name] = value
    defect = draw(st.integers(0, 8))
    if defect == 0:
        f = draw(st.sampled_from(list(ENVELOPE[1:-1]) + list(rt.fields)))
        (obj if f in ENVELOPE else payload)[f.name] = draw(_INVALID[f.kind])
    elif defect == 1:
        required = [f for f in rt.fields if f.required]
        payload.pop(draw(st.sampled_from(required)).name, None)
    elif defect == 2:
        payload["app_build"] = "7.4"  # a newer schema version's field
    elif defect == 3:
        obj[draw(st.sampled_from(["trace", "record_type"]))] = draw(st.sampled_from([{"id": 1}, "refund", None]))
    obj["payload"] = payload if draw(st.integers(0, 10)) else json.dumps(payload)
    if defect == 4:  # a payload sent as a string that is not JSON (Parquet landing files)
        obj["payload"] = draw(st.sampled_from(["{broken", "[1]", "7"]))
        if draw(st.booleans()):
            obj["trace"] = "t-1"
    return json.dumps(obj, separators=(",", ":")).encode()  # json: integers beyond 64 bits too


def _raw_chunk(records: list[bytes]) -> pa.Table:
    return RAW.to_arrow(
        [
            {
                "ingest_date": "2026-11-20",
                "ingested_at": NOW - 60 * MIN,
                "source_file": "f.jsonl",
                "source_line": n,
                "data": data,
            }
            for n, data in enumerate(records, start=1)
        ],
        with_partition_columns=True,
    )


@RULES
@given(st.lists(raw_record(), min_size=1, max_size=25))
def test_columnar_parse_equals_the_per_record_parse(records):
    """Valid records the fast path takes, valid ones it leaves to the
    definition (rare spellings, extra fields), invalid ones: same rows."""
    raw = _raw_chunk(records)
    fast, definition = parse_chunk(raw, KEY, "backfill", NOW), parse_chunk(raw, KEY, "backfill", NOW, fast=False)
    for name in set(fast.bronze) | set(definition.bronze):
        a, b = (p.bronze[name].sort_by("source_line") for p in (fast, definition))
        assert a.equals(b), (name, ALL_TABLES[name].from_arrow(a), ALL_TABLES[name].from_arrow(b))
    assert fast.dead_letter.sort_by("source_line").equals(definition.dead_letter.sort_by("source_line"))


# --- dedup -------------------------------------------------------------------------------------
_moments = st.sampled_from([None, T0, T0 + MIN, T0 + 2 * MIN])


@st.composite
def bronze_copies(draw, record_type):
    """Copies and versions of a few identities of one record type, each with its own arrival."""
    rt = RECORD_TYPES[record_type]
    table = BRONZE[rt.bronze_table]
    arrivals = draw(
        st.lists(
            st.tuples(
                st.sampled_from([T0, T0 + MIN]),
                st.sampled_from([None, "a", "b"]),
                st.sampled_from([None, 1, 2]),
                st.sampled_from([None, "m1", "m2"]),
            ),
            min_size=1,
            max_size=12,
            unique_by=lambda a: (a[0], a[1] or "", a[2] or 0, a[3] or ""),
        )
    )
    rows = []
    for ingested_at, source_file, source_line, message_id in arrivals:
        row = {c: None for c in table.column_names}
        row.update(
            event_date="2026-11-02",
            platform=draw(st.sampled_from(["web", "ios", "unknown"])),
            source=draw(st.sampled_from(["x", "y"])),
            schema_version=1,
            ingested_at=ingested_at,
            source_file=source_file,
            source_line=source_line,
            message_id=message_id,
            emitted_at=draw(_moments),
        )
        row[rt.key] = draw(st.sampled_from(["k1", "k2", "k3"]))
        for c in table.column_names:
            if row[c] is None and c not in ("emitted_at", "source_file", "source_line", "message_id"):
                column = next(col for col in table.columns if col.name == c)
                row[c] = draw(
                    {
                        "STRING": st.sampled_from(["p", "q", None]),
                        "BOOL": st.sampled_from([True, None]),
                        "TIMESTAMP": _moments,
                        "FLOAT64": st.sampled_from([1.5, None]),
                        "DATE": st.sampled_from(["2026-11-01", None]),
                        "INT64": st.just(1),
                    }[column.type]
                )
                if column.required and row[c] is None:
                    row[c] = {
                        "STRING": "r",
                        "BOOL": True,
                        "TIMESTAMP": T0,
                        "FLOAT64": 1.0,
                        "DATE": "2026-11-01",
                        "INT64": 1,
                    }[column.type]
        rows.append(row)
    return rows


def _per_element_dedup(record_type, rows):
    rt = RECORD_TYPES[record_type]
    fn = combine_fn_for(record_type, BRONZE[rt.bronze_table])
    accumulators = {}
    for row in rows:
        key = row[rt.key]
        accumulators[key] = fn.add_input(accumulators.get(key) or fn.create_accumulator(), row)
    out, conflicts = {}, 0
    for key, acc in accumulators.items():
        winner, copies, conflict = fn.extract_output(acc)
        out[key] = {**winner, "copies": copies}
        conflicts += conflict
    return out, conflicts


@RULES
@given(st.sampled_from(list(RECORD_TYPES)).flatmap(lambda t: st.tuples(st.just(t), bronze_copies(t))))
def test_vectorized_dedup_equals_the_combine_fns(case):
    record_type, rows = case
    table = BRONZE[RECORD_TYPES[record_type].bronze_table]
    expected, conflicts = _per_element_dedup(record_type, rows)
    winners, counts = dedup_table(record_type, table.to_arrow(rows, with_partition_columns=True))
    got = {r[RECORD_TYPES[record_type].key]: r for r in table.from_arrow(winners)}
    assert got.keys() == expected.keys()
    for key, row in got.items():  # merge_versions: the Arrow form's bookkeeping (tests/test_silver_merge.py)
        assert {c: v for c, v in row.items() if c != "merge_versions"} == {
            c: expected[key].get(c) for c in row if c != "merge_versions"
        }, key
    assert (counts.unique, counts.extra_copies, counts.conflicts) == (
        len(expected),
        len(rows) - len(expected),
        conflicts,
    )


# --- sessions and stages -------------------------------------------------------------------------
_session_ids = st.sampled_from(["s1", "s2", "s3"])
_times = st.sampled_from([T0 - MIN, T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN])


@st.composite
def session_children(draw):
    """Deduped views, clicks and events of a few sessions (unique ids)."""
    children = {}
    for join in SESSION_CHILDREN:
        n = draw(st.integers(0, 6))
        rows = []
        for i in range(n):
            row = {c: None for c in SILVER[join.table].column_names if c not in ("user_id",)}
            row.update(
                {
                    RECORD_TYPES[join.child].key: f"{join.child}-{i}",
                    "session_id": draw(_session_ids),
                    join.time_column: draw(_times),
                    "platform": draw(st.sampled_from(["web", "ios"])),
                    "copies": 1,
                }
            )
            if join.child == "event":
                row["event_type"] = draw(st.sampled_from(["browse", "add_to_cart", "payment_successful", "search"]))
            rows.append(row)
        children[join.child] = rows
    return children


@st.composite
def merged_sessions(draw):
    return [
        {
            "session_id": sid,
            "user_id": draw(st.sampled_from([None, "u1"])),
            "platform": draw(st.sampled_from(["web", "unknown"])),
            "session_start_time": draw(_times),
            "session_end_time": draw(st.one_of(st.none(), _times)),
            "device_type": "desktop",
            "geo_location": None,
            "experiments_json": None,
            "source": "x",
            "emitted_at": None,
            "copies": draw(st.integers(1, 3)),
            "ingested_at": T0,
            "source_file": draw(st.sampled_from(["a", None])),
            "source_line": 1,
            "message_id": None,
            "merge_versions": draw(st.sampled_from([None, '{"x":1}'])),
        }
        for sid in draw(st.lists(_session_ids, unique=True, max_size=3))
    ]


def _arrow(rows: list[dict], table, columns) -> pa.Table:
    """In-pipeline dict rows -> Arrow with ``columns`` of ``table`` (its types;
    ``copies`` as int64), empty lists included."""
    schema = table.arrow_schema()
    fields = [
        schema.field(c) if c in schema.names else pa.field(c, pa.string() if c == "merge_versions" else pa.int64())
        for c in columns
    ]

    def built(t):
        return pa.int64() if pa.types.is_timestamp(t) else pa.string() if pa.types.is_date(t) else t

    return pa.table({f.name: pa.array([r.get(f.name) for r in rows], built(f.type)).cast(f.type) for f in fields})


_SESSION_COLUMNS = (
    "session_id",
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
    "ingested_at",
    "source_file",
    "source_line",
    "message_id",
    "merge_versions",
)


@RULES
@given(merged_sessions(), session_children())
def test_vectorized_session_resolution_equals_resolve_session(sessions, children):
    expected = {}
    ids = {s["session_id"] for s in sessions} | {c["session_id"] for rows in children.values() for c in rows}
    by_id = {s["session_id"]: s for s in sessions}
    for sid in ids:
        expected[sid] = resolve_session(
            sid, by_id.get(sid), {kind: [c for c in rows if c["session_id"] == sid] for kind, rows in children.items()}
        )
    sessions_table = _arrow(sessions, BRONZE["bronze_sessions"], _SESSION_COLUMNS)
    child_tables = {
        j.child: _arrow(children[j.child], SILVER[j.table], [c for c in SILVER[j.table].column_names if c != "user_id"])
        for j in SESSION_CHILDREN
    }
    got = {
        r["session_id"]: r for r in SILVER["silver_sessions"].from_arrow(resolve_sessions(sessions_table, child_tables))
    }
    assert got.keys() == expected.keys()
    for sid, row in got.items():
        assert row == {c: expected[sid][c] for c in row}, sid


@st.composite
def journeys(draw):
    """Views, events, responses and activities of a few sessions, the way
    gold sees them (responses and activities resolved to a session)."""
    views = [{"session_id": draw(_session_ids), "view_timestamp": draw(_times)} for _ in range(draw(st.integers(0, 4)))]
    events = [
        {
            "event_id": f"e{i}",
            "session_id": draw(_session_ids),
            "timestamp": draw(_times),
            "event_type": draw(st.sampled_from(["browse", "add_to_cart", "payment_successful", "search"])),
        }
        for i in range(draw(st.integers(0, 7)))
    ]
    event_ids = [e["event_id"] for e in events] + ["e-unknown"]
    responses = [
        {
            "response_id": f"r{i}",
            "event_id": draw(st.sampled_from(event_ids)),
            "session_id": draw(_session_ids),
            "sent_at": draw(st.one_of(st.none(), _times)),
            "response_type": draw(st.sampled_from(["email_confirmation", "sms_confirmation"])),
            "status": draw(st.sampled_from(RESPONSE_STATUSES)),
        }
        for i in range(draw(st.integers(0, 5)))
    ]
    response_ids = [r["response_id"] for r in responses] + ["r-unknown"]
    activities = [
        {
            "activity_id": f"a{i}",
            "response_id": draw(st.sampled_from(response_ids)),
            "session_id": draw(_session_ids),
            "activity_time": draw(_times),
            "activity_type": draw(st.sampled_from(["barcode_scanned", "ticket_transferred"])),
        }
        for i in range(draw(st.integers(0, 4)))
    ]
    return views, events, responses, activities


@RULES
@given(journeys())
def test_vectorized_stages_equal_reached_stages(journey):
    views, events, responses, activities = journey
    ids = ["s1", "s2", "s3"]
    tables = [
        _arrow(rows, SILVER[name], keys)
        for rows, name, keys in (
            (views, "silver_views", ("session_id", "view_timestamp")),
            (events, "silver_events", ("event_id", "session_id", "timestamp", "event_type")),
            (
                responses,
                "silver_event_responses",
                ("response_id", "event_id", "session_id", "sent_at", "response_type", "status"),
            ),
            (
                activities,
                "silver_user_activity",
                ("activity_id", "response_id", "session_id", "activity_time", "activity_type"),
            ),
        )
    ]
    columns = [t.to_pylist() for t in stage_times(pa.array(ids), *tables)]
    for i, sid in enumerate(ids):

        def of(rows, sid=sid):
            return [r for r in rows if r["session_id"] == sid]

        expected = reached_stages(of(views), of(events), of(responses), of(activities))
        got = [c[i] for c in columns]
        assert got == expected + [None] * (5 - len(expected)), sid


@RULES
@given(
    st.lists(st.tuples(st.sampled_from(["e1", "e2", "e3"]), st.sampled_from(["email", "web"])), max_size=6),
    st.lists(
        st.tuples(
            st.sampled_from(["e1", "e2"]),
            st.sampled_from([None, "s1"]),
            st.sampled_from([None, "u1"]),
            st.sampled_from(["ios", "android"]),
        ),
        unique_by=lambda e: e[0],
    ),
)
def test_vectorized_parent_join_equals_the_per_child_rule(children, parents):
    join = RESPONSE_JOIN
    child_rows = [
        {
            "response_id": f"r{i}",
            "event_id": event_id,
            "response_type": "email_confirmation",
            "status": "sent",
            "platform": platform,
            "copies": 1,
            "event_date": "2026-11-02",
            "ingested_at": T0,
        }
        for i, (event_id, platform) in enumerate(children)
    ]
    parent_rows = [{"event_id": e, "session_id": s, "user_id": u, "platform": p} for e, s, u, p in parents]
    by_event = {p["event_id"]: p for p in parent_rows}
    expected = [
        {
            **c,
            **(
                parent_context(join, by_event[c["event_id"]])
                if c["event_id"] in by_event
                else unknown_parent_context(join.context)
            ),
        }
        for c in child_rows
    ]
    child_table = _arrow(
        child_rows,
        BRONZE["bronze_event_responses"],
        (
            "response_id",
            "event_id",
            "response_type",
            "status",
            "platform",
            "sent_email_hash",
            "sent_phone_number_hash",
            "sent_at",
            "source",
            "emitted_at",
            "copies",
            "pii_key_version",
            "event_date",
            "ingested_at",
            "source_file",
            "source_line",
            "message_id",
        ),
    )
    parent_table = pa.table(
        {
            c: pa.array([p[c] for p in parent_rows], pa.string())
            for c in ("event_id", "session_id", "user_id", "platform")
        }
    )
    joined, orphans = attach_parent(child_table, parent_table, join)
    got = SILVER[join.table].from_arrow(joined)
    assert [{c: r[c] for c in ("response_id", *join.context)} for r in got] == [
        {c: r[c] for c in ("response_id", *join.context)} for r in expected
    ]
    assert orphans == sum(c["event_id"] not in by_event for c in child_rows)


@RULES
@given(st.lists(st.one_of(st.none(), st.text(max_size=30)), max_size=50), st.integers(1, 300))
def test_one_keys_shard_is_the_shard_of_the_array_form(keys, shards):
    from transforms.rules.arrow import shard_of, shard_of_key

    assert [shard_of_key(k, shards) for k in keys] == shard_of(pa.array(keys, pa.string()), shards).tolist()
