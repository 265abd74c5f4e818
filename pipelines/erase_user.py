"""Erase one person: their rows leave bronze, silver and gold.

    python -m pipelines.erase_user --lake DIR (--user-id U | --email E)
        [--include-raw] [--as-of DATE] [--requested-by WHO] [--pii-key-secret V]
        [--sink bigquery --project P [--bigquery-endpoint URL]]

Finds the person's footprint (``transforms.lake.erasure``), deletes it from
every bronze and silver table (one Delta commit each),
releases the erased silver, and recomputes gold from it (``gold_daily`` as
of ``--as-of``, default today), so gold equals a recompute without them.
With ``--sink bigquery`` the same rows are deleted from the BigQuery
datasets and gold is replaced there too.

Raw is immutable: the raw objects holding the person's records are listed,
and deleted only with ``--include-raw``. The landing files they came from
are listed too: a backfill from those files would bring the person back.

Writes one audit row to ``ops/erasure_log`` (and BigQuery ``ops`` with the
sink): who, when, what, row counts, and a keyed hash of the identifier -
never the identifier itself. Prints the same summary, also without it.
"""

from __future__ import annotations

import getpass
import json
import sys
import uuid
from datetime import UTC, date, datetime

from pipelines import gold_daily
from pipelines.arguments import check_lake, command_parser
from pipelines.common import (
    add_pii_key_flags,
    add_sink_flags,
    bigquery_target,
    parse,
    setup_logging,
)
from schemas import contract
from schemas.tables import ERASURE_LOG, RAW, SILVER
from transforms.lake import erasure
from transforms.lake.commit import commit_append, release
from transforms.lake.files import write_data_file
from transforms.lake.lock import commit_lock
from transforms.lake.tables import open_table
from transforms.rules.bronze import normalize_email, pseudonym
from transforms.rules.pii import PiiKeySource


def _bigquery_delete(bq, fp: erasure.Footprint) -> dict[str, int]:
    """The footprint deleted from the BigQuery bronze and silver tables."""
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    from transforms.sinks.bigquery import table_id

    deleted = {}
    for table in erasure.PERSONAL_TABLES:
        columns = [c for c in erasure.ID_COLUMNS if c in table.column_names and fp.ids[c]]
        if not columns:
            continue
        where = " OR ".join(f"{c} IN UNNEST(@{c}s)" for c in columns)
        params = [bigquery.ArrayQueryParameter(f"{c}s", "STRING", sorted(fp.ids[c])) for c in columns]
        try:
            job = bq.query(
                f"DELETE FROM `{table_id(bq.project, table)}` WHERE {where}",
                job_config=bigquery.QueryJobConfig(query_parameters=params),
            )
            job.result()
        except NotFound:
            continue  # a table the sink never wrote
        deleted[f"bq:{table.layer}.{table.name}"] = job.num_dml_affected_rows or 0
    return deleted


def _audit(lake: str, row: dict, bigquery) -> None:
    file = write_data_file(lake, ERASURE_LOG, [row], (("erased_date", row["erased_date"]),))
    commit_append(lake, ERASURE_LOG, [file], row["erasure_id"], pipeline="erase_user")
    if bigquery is not None:
        from transforms.sinks.bigquery import insert_new_rows

        insert_new_rows(bigquery, ERASURE_LOG, [row])


def _erase(args, fp: erasure.Footprint, lines: set, messages: set, run_id: str, deleted: dict) -> bool:
    """Deletes the footprint from every layer (raw with ``--include-raw``); True when raw rows went."""
    for table in erasure.PERSONAL_TABLES:
        condition = fp.condition(table)
        if condition is not None:
            deleted[f"{table.layer}.{table.name}"] = erasure.delete_rows(args.lake, table, condition, run_id)
    raw_rows = erasure.provenance_condition(lines, messages)
    if args.include_raw and raw_rows is not None:
        deleted[f"raw.{RAW.name}"] = erasure.delete_rows(args.lake, RAW, raw_rows, run_id)
    # The erased silver is released as a whole, then gold is recomputed from it.
    silver = {name: open_table(args.lake, table) for name, table in SILVER.items()}
    release(args.lake, "silver", {name: dt.version() for name, dt in silver.items() if dt is not None}, run_id)
    return bool(args.include_raw and raw_rows)


def main(argv=None) -> dict:
    parser = command_parser(__doc__)
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user-id", help="the person's user id")
    who.add_argument("--email", help="the person's email (matched by its hashes; trimmed, lower-cased)")
    parser.add_argument(
        "--include-raw", action="store_true", help="also delete the person's records from the immutable raw layer"
    )
    parser.add_argument(
        "--as-of",
        type=date.fromisoformat,
        default=datetime.now(UTC).date(),
        help="the as-of day of the gold recompute (default: today, UTC)",
    )
    parser.add_argument("--requested-by", default=None, help="who asked for the erasure (default: this user)")
    add_sink_flags(parser, "the same rows are also deleted from BigQuery, and gold replaced there")
    add_pii_key_flags(parser)
    args, options = parse(parser, argv)
    bigquery = bigquery_target(parser, args, options)
    check_lake(parser, args.lake, must_exist=True)
    setup_logging()
    # A local command, not a job: it reads the key itself (to match an email's keyed hashes).
    key = PiiKeySource(args.pii_key_secret).resolve()
    run_id = f"erase_user-{uuid.uuid4().hex}"
    if args.email is not None:
        subject_kind, subject = "email", normalize_email(args.email)
        user_ids = erasure.user_ids_of_email(args.lake, args.email, key)
    else:
        subject_kind, subject = "user_id", args.user_id
        user_ids = {args.user_id}
    fp = erasure.footprint(args.lake, user_ids, args.email, key)
    if not erasure.found_anywhere(args.lake, fp):
        who = f"--email {args.email}" if args.email is not None else f"--user-id {args.user_id}"
        print(
            f"funnel erase-user: error: {who} is nowhere in {args.lake} (bronze and silver): nothing erased, "
            "gold not recomputed; check the id",
            file=sys.stderr,
        )
        sys.exit(1)
    lines, messages = erasure.provenance(args.lake, fp)
    raw_objects = erasure.raw_objects(args.lake, lines, messages)

    deleted = {}
    # The deletions and silver's release under the commit lock (transforms.lake.lock); gold's own
    # committer takes it again for the recompute.
    with commit_lock(args.lake, "erase_user", run_id):
        raw_deleted = _erase(args, fp, lines, messages, run_id, deleted)
    if bigquery is not None:
        deleted.update(_bigquery_delete(bigquery.client(), fp))
    gold_daily.recompute(args.lake, args.as_of, options, bigquery)

    now = contract.now_micros()
    audit = {
        "erased_date": contract.micros_to_date(now),
        "erasure_id": run_id,
        "erased_at": now,
        "requested_by": args.requested_by or getpass.getuser(),
        "subject_kind": subject_kind,
        "subject_hash": pseudonym(key.secret, f"{subject_kind}:{subject}"),
        "pii_key_version": key.version,
        "user_count": len(user_ids),
        "rows_deleted_json": json.dumps(deleted, sort_keys=True),
        "raw_objects_json": json.dumps(raw_objects),
        "raw_deleted": raw_deleted,
        "gold_recomputed_as_of": args.as_of.isoformat(),
    }
    _audit(args.lake, audit, bigquery)
    landing = sorted({f for f, _ in lines})
    print(
        f"\nerase_user {run_id}: {len(user_ids)} user id(s), "
        f"{sum(v for k, v in deleted.items() if k.split('.')[0] in ('bronze', 'silver'))} "
        f"lake rows deleted; gold recomputed as of {args.as_of}"
    )
    for name, n in sorted(deleted.items()):
        print(f"  {name:<40} {n:>8,}")
    verb = "deleted from" if audit["raw_deleted"] else "still in (raw is immutable; --include-raw deletes them)"
    print(f"  raw objects holding their records, {verb}: {len(raw_objects)}")
    for path in raw_objects:
        print(f"    {path}")
    if landing:
        print(f"  landing files they came from (a backfill of these would bring them back): {len(landing)}")
        for path in landing:
            print(f"    {path}")
    return audit


if __name__ == "__main__":
    main()
