"""Erasing one person: no row of theirs is left in bronze, silver or gold,
gold equals a recompute from landing files without their records, raw is
listed (and deleted only when asked), and the audit holds no identifier."""

import json
from collections import defaultdict
from datetime import date

import orjson
import pytest

from pipelines import backfill, erase_user, gold_daily
from schemas.tables import BRONZE, ERASURE_LOG, GOLD, SILVER
from simulator import traffic
from tests.conftest import read_table

AS_OF = date(2026, 11, 20)


def _records(landing):
    for path in sorted(landing.glob("*.jsonl")):
        for n, line in enumerate(path.read_bytes().splitlines(), start=1):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
            yield (
                path,
                n,
                line,
                record if isinstance(record, dict) and isinstance(record.get("payload"), dict) else None,
            )


def footprint_in_landing(landing, user_id):
    """The person's records by the links in the raw JSON itself (not the code under test)."""
    by_type = defaultdict(list)
    for path, n, _, record in _records(landing):
        if record is not None:
            by_type[record.get("record_type")].append((path, n, record["payload"]))
    sessions = {p.get("session_id") for _, _, p in by_type["session"] if p.get("user_id") == user_id}
    events = {p.get("event_id") for _, _, p in by_type["event"] if p.get("session_id") in sessions}
    responses = {p.get("response_id") for _, _, p in by_type["event_response"] if p.get("event_id") in events}
    lines = set()
    for kind, rows in by_type.items():
        for path, n, p in rows:
            if (
                kind == "user"
                and p.get("user_id") == user_id
                or kind in ("session", "view", "click", "event")
                and p.get("session_id") in sessions
                or kind == "event_response"
                and p.get("event_id") in events
                or kind == "user_activity"
                and p.get("response_id") in responses
            ):
                lines.add((path.name, n))
    return {"sessions": sessions, "events": events, "responses": responses, "lines": lines}


def _gold(lake):
    return {
        name: sorted(json.dumps(r, sort_keys=True, default=str) for r in read_table(lake / "gold" / name))
        for name in GOLD
    }


@pytest.fixture(scope="module")
def erased(tmp_path_factory):
    root = tmp_path_factory.mktemp("erasure")
    landing, lake = root / "landing", root / "lake"
    traffic.generate(traffic.Config(users=300, days=3, seed=11), str(landing))
    backfill.main(["--lake", str(lake), "--input", str(landing / "*.jsonl")])
    gold_daily.main(["--lake", str(lake), "--as-of", AS_OF.isoformat()])
    scanned = {r["user_id"] for r in read_table(lake / "gold" / "fact_user_activity") if r["user_id"]}
    # A person with the whole funnel: a user record, sessions, events, confirmations, scans.
    user_id = sorted(scanned)[0]
    truth = footprint_in_landing(landing, user_id)
    audit = erase_user.main(
        [
            "--lake",
            str(lake),
            "--user-id",
            user_id,
            "--as-of",
            AS_OF.isoformat(),
            "--include-raw",
            "--requested-by",
            "dpo@example.com",
        ]
    )
    return {"root": root, "landing": landing, "lake": lake, "user_id": user_id, "truth": truth, "audit": audit}


def test_no_row_of_the_person_is_left_in_bronze_silver_or_gold(erased):
    lake, user_id, truth = erased["lake"], erased["user_id"], erased["truth"]
    assert truth["sessions"] and truth["events"] and truth["responses"]
    ids = {
        "user_id": {user_id},
        "session_id": truth["sessions"],
        "event_id": truth["events"],
        "response_id": truth["responses"],
    }
    checked = 0
    for folder, tables in (("bronze", BRONZE), ("silver", SILVER), ("gold", GOLD)):
        for name in tables:
            for row in read_table(lake / folder / name):
                checked += 1
                assert not any(row.get(c) in values for c, values in ids.items()), (name, row)
    assert checked > 1000
    rows = json.loads(erased["audit"]["rows_deleted_json"])
    assert rows["bronze.bronze_users"] >= 1 and rows["silver.silver_users"] == 1
    assert sum(v for k, v in rows.items() if k.startswith("bronze.")) == len(truth["lines"])


def test_gold_equals_a_recompute_without_the_person(erased):
    root, truth = erased["root"], erased["truth"]
    filtered, lake = root / "filtered", root / "reference-lake"
    filtered.mkdir()
    for path in sorted(erased["landing"].glob("*.jsonl")):
        kept = [
            line
            for n, line in enumerate(path.read_bytes().splitlines(), start=1)
            if (path.name, n) not in truth["lines"]
        ]
        (filtered / path.name).write_bytes(b"\n".join(kept) + b"\n")
    backfill.main(["--lake", str(lake), "--input", str(filtered / "*.jsonl")])
    gold_daily.main(["--lake", str(lake), "--as-of", AS_OF.isoformat()])
    assert _gold(erased["lake"]) == _gold(lake)


def test_raw_objects_are_listed_and_deleted_only_when_asked(erased):
    lake, truth = erased["lake"], erased["truth"]
    listed = json.loads(erased["audit"]["raw_objects_json"])
    assert listed and all("/raw/" in p for p in listed)
    assert erased["audit"]["raw_deleted"] is True
    left = {(r["source_file"].rsplit("/", 1)[-1], r["source_line"]) for r in read_table(lake / "raw")}
    assert left and not (left & truth["lines"])


def test_the_audit_names_who_when_and_what_without_the_identifier(erased):
    lake, user_id = erased["lake"], erased["user_id"]
    [row] = read_table(lake / ERASURE_LOG.name)
    assert row["requested_by"] == "dpo@example.com" and row["subject_kind"] == "user_id"
    assert row["pii_key_version"] and len(row["subject_hash"]) == 64
    assert user_id not in json.dumps(row, default=str)


def test_an_email_names_the_user_by_its_hashes(erased):
    from transforms.lake.erasure import user_ids_of_email
    from transforms.rules.pii import PiiKeySource

    users = [
        r["payload"]
        for _, _, _, r in _records(erased["landing"])
        if r is not None
        and r.get("record_type") == "user"
        and r["payload"].get("email")
        and r["payload"]["user_id"] != erased["user_id"]
    ]
    user = users[0]
    spelled = "  " + user["email"].upper() + " "  # trimmed and lower-cased, like the parse
    assert user_ids_of_email(str(erased["lake"]), spelled, PiiKeySource().resolve()) == {user["user_id"]}
    assert user_ids_of_email(str(erased["lake"]), "nobody@example.invalid", PiiKeySource().resolve()) == set()
