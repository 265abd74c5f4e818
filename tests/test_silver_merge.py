"""Merging silver is associative: any split of bronze into batches, merged in
any order (late and redelivered rows included), gives exactly the silver of
one build from all of it (hypothesis, on rows chosen to collide: shared
keys, versions tying, nulls in newer versions, children before parents,
copies naming another session)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE, SILVER
from tests.conftest import MIN, T0, bronze
from transforms.lake.silver import new_rows
from transforms.rules.arrow import concat
from transforms.rules.dedup import parse_merge_versions
from transforms.rules.merge import MergeResult, build_silver, merge_batch

EXAMPLES = settings(
    max_examples=int(os.environ.get("MERGE_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TIMES = [T0 + n * MIN for n in (0, 1, 1, 5, 40, 24 * 60)]  # ties on purpose
_maybe = lambda values: st.sampled_from([None, *values])  # noqa: E731


class MemorySilver:
    """Silver as in-memory tables: a ``Lookup``, and where merges are applied."""

    def __init__(self):
        self.tables = {name: t.arrow_schema().empty_table() for name, t in SILVER.items()}

    def rows(self, table, column, values):
        rows = self.tables[table]
        return rows.filter(pc.is_in(rows.column(column), value_set=values))

    def apply(self, result: MergeResult) -> None:
        for name, rows in self.tables.items():
            changed = result.changed_keys(name)
            kept = rows.filter(pc.invert(pc.is_in(rows.column(SILVER[name].key[0]), value_set=changed)))
            upserts = [result.upserts[name]] if name in result.upserts else []
            self.tables[name] = concat([kept, *upserts], rows.schema)


def _sorted(table: pa.Table, key: str) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r[key])


@st.composite
def bronze_rows(draw):
    """Bronze rows of every type on few keys; each with its own place of
    arrival (file and line, or message id), some delivered twice."""
    ingest = st.tuples(st.sampled_from(TIMES), st.sampled_from(["a.jsonl", "b.jsonl", None]), st.integers(1, 3))
    made = []
    for _ in range(draw(st.integers(1, 28))):
        (at, source_file, _), kind = draw(ingest), draw(st.sampled_from(list(RECORD_TYPES)))
        line = len(made) + 1
        envelope = dict(
            ingested_at=at,
            source_file=source_file,
            source_line=line if source_file else None,
            message_id=None if source_file else f"m-{line}",
            emitted_at=draw(_maybe(TIMES)),
            platform=draw(st.sampled_from(["web", "ios", "unknown"])),
        )
        if kind == "session":
            values = dict(
                session_id=draw(st.sampled_from(["s-1", "s-2"])),
                user_id=draw(_maybe(["u-1", "u-2"])),
                session_start_time=draw(st.sampled_from(TIMES[:3])),
                session_end_time=draw(_maybe(TIMES[3:])),
                device_type=draw(_maybe(["mobile", "desktop"])),
                geo_location=draw(_maybe(["ES", "1.0,2.0"])),
                experiments_json=draw(_maybe(['{"checkout_button":"B"}'])),
            )
        elif kind == "user":
            values = dict(
                user_id=draw(st.sampled_from(["u-1", "u-2"])),
                country=draw(_maybe(["ES", "DE"])),
                updated_at=draw(_maybe(TIMES)),
                is_active=draw(_maybe([True, False])),
            )
        elif kind == "view":
            values = dict(
                view_id=draw(st.sampled_from(["v-1", "v-2", "v-3"])),
                session_id=draw(st.sampled_from(["s-1", "s-2", "s-3"])),
                view_timestamp=draw(st.sampled_from(TIMES)),
                page_type=draw(_maybe(["landing", "checkout"])),
            )
        elif kind == "click":
            values = dict(
                click_id=draw(st.sampled_from(["c-1", "c-2"])),
                session_id=draw(st.sampled_from(["s-1", "s-3"])),
                click_timestamp=draw(st.sampled_from(TIMES)),
            )
        elif kind == "event":
            values = dict(
                event_id=draw(st.sampled_from(["e-1", "e-2", "e-3"])),
                session_id=draw(st.sampled_from(["s-1", "s-2", "s-3"])),
                event_type=draw(st.sampled_from(["browse", "add_to_cart", "payment_successful", "search"])),
                timestamp=draw(st.sampled_from(TIMES)),
            )
        elif kind == "event_response":
            values = dict(
                response_id=draw(st.sampled_from(["r-1", "r-2"])),
                event_id=draw(st.sampled_from(["e-1", "e-2", "e-9"])),
                response_type="email_confirmation",
                status=draw(st.sampled_from(["sent", "delivered", "failed"])),
                sent_at=draw(st.sampled_from(TIMES)),
            )
        else:
            values = dict(
                activity_id=draw(st.sampled_from(["a-1", "a-2"])),
                response_id=draw(st.sampled_from(["r-1", "r-2", "r-9"])),
                activity_type="barcode_scanned",
                activity_time=draw(st.sampled_from(TIMES)),
            )
        made.append((kind, bronze(RECORD_TYPES[kind].bronze_table, line, **envelope, **values)))
    # Redeliveries: the same received record again (Pub/Sub after a lost ack, a replayed file).
    made += [made[i] for i in draw(st.lists(st.integers(0, len(made) - 1), max_size=4))]
    return made


def _tables(rows: list[tuple[str, dict]]) -> dict[str, pa.Table]:
    by_kind = {}
    for kind, row in rows:
        by_kind.setdefault(kind, []).append(row)
    return {
        kind: BRONZE[RECORD_TYPES[kind].bronze_table].to_arrow(values, with_partition_columns=True)
        for kind, values in by_kind.items()
    }


@EXAMPLES
@given(rows=bronze_rows(), data=st.data())
def test_any_split_merged_in_any_order_equals_one_build(rows, data):
    expected = build_silver(_tables(rows))
    batches = data.draw(st.integers(1, 5))
    assignment = data.draw(st.lists(st.integers(0, batches - 1), min_size=len(rows), max_size=len(rows)))
    order = data.draw(st.permutations(range(batches)))
    silver = MemorySilver()
    for b in order:
        part = [row for row, a in zip(rows, assignment) if a == b]
        if part:
            silver.apply(merge_batch(_tables(part), silver))
    for name, table in SILVER.items():
        key = table.key[0]
        assert _sorted(silver.tables[name], key) == _sorted(
            expected.upserts.get(name, table.arrow_schema().empty_table()), key
        ), name


def test_only_rows_bronze_did_not_hold_are_merged_again():
    """A rerun of a landing file merges nothing; a replay only what bronze
    lacked; a message delivered twice counts twice, once per delivery."""

    def rows(*provenances):
        return pa.table(
            {
                "source_file": [p[0] for p in provenances],
                "source_line": [p[1] for p in provenances],
                "message_id": [p[2] for p in provenances],
                "n": list(range(len(provenances))),
            },
            schema=pa.schema(
                [
                    ("source_file", pa.string()),
                    ("source_line", pa.int64()),
                    ("message_id", pa.string()),
                    ("n", pa.int64()),
                ]
            ),
        )

    before = rows(("a.jsonl", 1, None), ("a.jsonl", 2, None), (None, None, "m-1"))
    again = rows(
        ("a.jsonl", 1, None), ("a.jsonl", 2, None), ("a.jsonl", 3, None), (None, None, "m-1"), (None, None, "m-1")
    )
    assert new_rows(again, before).column("n").to_pylist() == [2, 4]  # line 3, and the second delivery
    assert new_rows(before, before).num_rows == 0


def test_an_older_session_version_arriving_later_fills_only_what_the_newer_left_null():
    newer = bronze(
        "bronze_sessions",
        2,
        session_id="s-1",
        session_start_time=T0,
        session_end_time=T0 + 20 * MIN,
        emitted_at=T0 + 20 * MIN,
        platform="unknown",
    )
    older = bronze(
        "bronze_sessions",
        1,
        session_id="s-1",
        session_start_time=T0,
        user_id="u-1",
        platform="ios",
        device_type="mobile",
        emitted_at=T0,
        session_end_time=T0 + 5 * MIN,
    )
    silver = MemorySilver()
    silver.apply(merge_batch(_tables([("session", newer)]), silver))
    silver.apply(merge_batch(_tables([("session", older)]), silver))
    [row] = silver.tables["silver_sessions"].to_pylist()
    assert (row["user_id"], row["platform"], row["device_type"], row["copies"]) == ("u-1", "ios", "mobile", 2)
    assert row["session_end_time"].timestamp() * 1e6 == T0 + 20 * MIN  # the newer version's, not replaced
    assert row["merge_versions"] is not None and '"user_id"' in row["merge_versions"]
    # and a third, newest version naming another device wins that field only
    newest = bronze(
        "bronze_sessions", 3, session_id="s-1", session_start_time=T0, device_type="tablet", emitted_at=T0 + 30 * MIN
    )
    silver.apply(merge_batch(_tables([("session", newest)]), silver))
    [row] = silver.tables["silver_sessions"].to_pylist()
    assert (row["user_id"], row["device_type"], row["copies"]) == ("u-1", "tablet", 3)


def test_fields_from_two_older_versions_are_kept_apart_and_merge_in_any_order():
    newest = bronze(
        "bronze_sessions",
        3,
        session_id="s-1",
        session_start_time=T0,
        emitted_at=T0 + 30 * MIN,
        session_end_time=T0 + 30 * MIN,
    )
    middle = bronze(
        "bronze_sessions", 2, session_id="s-1", session_start_time=T0, emitted_at=T0 + 20 * MIN, device_type="tablet"
    )
    oldest = bronze(
        "bronze_sessions",
        1,
        session_id="s-1",
        session_start_time=T0,
        emitted_at=T0,
        device_type="mobile",
        user_id="u-1",
    )
    rows = []
    for order in ([newest, middle, oldest], [oldest, newest, middle], [middle, oldest, newest]):
        silver = MemorySilver()
        for version in order:
            silver.apply(merge_batch(_tables([("session", version)]), silver))
        [row] = silver.tables["silver_sessions"].to_pylist()
        rows.append(row)
    assert rows[0] == rows[1] == rows[2]
    assert (rows[0]["device_type"], rows[0]["user_id"], rows[0]["copies"]) == ("tablet", "u-1", 3)
    versions = parse_merge_versions(rows[0]["merge_versions"])
    assert [(v["emitted_at"], fields) for v, fields in versions] == [
        (T0 + 20 * MIN, ["device_type"]),
        (T0, ["user_id"]),
    ]


def test_a_child_arriving_later_updates_its_session_and_a_changed_session_its_children():
    silver = MemorySilver()
    view = bronze("bronze_views", 1, view_id="v-1", session_id="s-1", view_timestamp=T0 + MIN, platform="android")
    silver.apply(merge_batch(_tables([("view", view)]), silver))
    [session] = silver.tables["silver_sessions"].to_pylist()
    assert (session["has_session_record"], session["platform"], session["views"]) == (False, "android", 1)
    record = bronze("bronze_sessions", 2, session_id="s-1", session_start_time=T0, user_id="u-1", platform="ios")
    response = bronze(
        "bronze_event_responses",
        3,
        response_id="r-1",
        event_id="e-1",
        status="sent",
        response_type="email_confirmation",
        platform="email",
    )
    silver.apply(merge_batch(_tables([("session", record), ("event_response", response)]), silver))
    [view_row] = silver.tables["silver_views"].to_pylist()
    assert (view_row["user_id"], view_row["platform"]) == ("u-1", "ios")  # the child follows its parent
    [response_row] = silver.tables["silver_event_responses"].to_pylist()
    assert (response_row["session_id"], response_row["platform"]) == (None, "email")  # no event yet
    event = bronze(
        "bronze_events", 4, event_id="e-1", session_id="s-1", event_type="payment_successful", timestamp=T0 + 2 * MIN
    )
    silver.apply(merge_batch(_tables([("event", event)]), silver))
    [response_row] = silver.tables["silver_event_responses"].to_pylist()
    assert (response_row["session_id"], response_row["user_id"], response_row["platform"]) == ("s-1", "u-1", "ios")
    [session] = silver.tables["silver_sessions"].to_pylist()
    assert (session["views"], session["events"], session["payment_events"]) == (1, 1, 1)
