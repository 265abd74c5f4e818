"""Independent reference: raw -> bronze -> silver -> gold as DuckDB SQL.

    python -m benchmarks.reference --input 'DIR/*.jsonl' --out DIR [--as-of DATE]
    python -m benchmarks.reference --compare LAKE --out DIR      # differential check only

The benchmark runs this over the same landing files as the Beam pipelines
and checks that every gold table is identical (``compare_gold``). It is
written from the contract (RAW_EVENTS.md, TABLES_AND_METRICS.md) as set-based
SQL, not translated from the Beam transforms, so a bug in one implementation
shows up as a difference. What the two share is deliberately small: the
field list of each record type (``schemas.contract.RECORD_TYPES``, the
contract itself, from which the validity checks below are generated), the
gold column names (``schemas.tables.GOLD``), the PII key, and the clock
helpers (processing time, end of the as-of day).

Scope, and where it is simpler than the pipeline (none of it changes gold):

* JSONL landing files of one backfill run (no Pub/Sub attributes, no Parquet
  landing files); every record has the same ingest time, so "earliest
  ingest" is file name then line number, exactly as in the pipeline;
* only the columns gold needs are kept;
* DuckDB's JSON reader is more lenient than the pipeline's on non-standard
  JSON (``NaN``, trailing commas), which producers do not send; such a line
  would be valid here and dead-lettered there.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

from benchmarks import reference_funnels
from schemas import contract, funnels
from schemas.contract import ENVELOPE, MAX_FUTURE_MICROS, MAX_RECORD_BYTES, MIN_TIMESTAMP_MS, RECORD_TYPES, Field
from schemas.table import DATE, TIMESTAMP
from schemas.tables import GOLD
from transforms.rules.gold import end_of_day_micros
from transforms.rules.pii import local_key

SQL_FILE = Path(__file__).with_name("reference.sql")
NEVER = -(1 << 62)  # version of a record without one: older than any


# --- loading: landing lines -> table "lines" ----------------------------------------------------
def _lines_of(path: str) -> bytes:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()


def load_lines(con: duckdb.DuckDBPyConnection, paths: list[str]) -> int:
    """Every non-blank line with its file and 1-based line number (blank
    lines keep their number, as in the pipeline's raw layer)."""
    con.execute("CREATE TABLE lines (source_file VARCHAR, source_line BIGINT, data BLOB)")
    total = 0
    for path in paths:
        numbered = [(n, line) for n, line in enumerate(_lines_of(path).split(b"\n"), start=1) if line.strip()]
        batch = pa.table(
            {
                "source_file": pa.array([path] * len(numbered), pa.string()),
                "source_line": pa.array([n for n, _ in numbered], pa.int64()),
                "data": pa.array([line for _, line in numbered], pa.binary()),
            }
        )
        con.register("batch", batch)
        con.execute("INSERT INTO lines SELECT * FROM batch")
        con.unregister("batch")
        total += len(numbered)
    return total


# --- bronze validity and typing, generated from the contract's field list ------------------------
def _json_path(name: str) -> str:
    return f"'$.\"{name}\"'"


def _typed(f: Field, x: str) -> str:
    """SQL of the typed value of JSON scalar ``x`` (NULL when absent or of the wrong type)."""
    t = f"json_type({x})"
    if f.kind in ("text", "enum"):
        return f"CASE WHEN {t} = 'VARCHAR' THEN {x}->>'$' END"
    if f.kind == "bool":
        return f"CASE WHEN {t} = 'BOOLEAN' THEN ({x}->>'$')::BOOLEAN END"
    if f.kind == "int":
        return f"CASE WHEN {t} IN ('BIGINT', 'UBIGINT') THEN TRY_CAST({x}->>'$' AS BIGINT) END"
    if f.kind == "timestamp":  # epoch micros, like the pipeline's in-memory form
        return (
            f"CASE WHEN {t} = 'VARCHAR' AND length({x}->>'$') >= 10 "
            f"THEN epoch_us(TRY_CAST({x}->>'$' AS TIMESTAMPTZ)) "
            f"WHEN {t} IN ('BIGINT', 'UBIGINT') THEN TRY_CAST({x}->>'$' AS BIGINT) * 1000 END"
        )
    if f.kind == "date":
        return f"CASE WHEN {t} = 'VARCHAR' THEN TRY_STRPTIME(left({x}->>'$', 10), '%Y-%m-%d')::DATE END"
    if f.kind == "object":
        return f"CASE WHEN {t} = 'OBJECT' THEN {x} END"
    raise AssertionError(f.kind)


def _valid(f: Field, x: str, max_micros: int, enum_values=None) -> str:
    """SQL predicate: ``x`` satisfies the field's rule (RAW_EVENTS.md)."""
    absent = f"coalesce(json_type({x}), 'NULL') = 'NULL'"
    typed = _typed(f, x)
    ok = f"{typed} IS NOT NULL"
    if f.kind == "text" and f.required:
        ok += f" AND {typed} <> ''"
    elif f.kind == "int":
        ok += f" AND {typed} >= 1"
    elif f.kind == "timestamp":
        # integers are checked before scaling, so huge ones cannot overflow
        ok = (
            f"(CASE WHEN json_type({x}) IN ('BIGINT', 'UBIGINT') "
            f"THEN TRY_CAST({x}->>'$' AS BIGINT) BETWEEN {MIN_TIMESTAMP_MS} AND {max_micros // 1000} "
            f"ELSE {typed} BETWEEN {MIN_TIMESTAMP_MS * 1000} AND {max_micros} END)"
        )
    elif f.kind == "object" and f.string_values:
        ok += f" AND len(list_filter(json_type({x}, '$.*'), lambda v: v <> 'VARCHAR')) = 0"
    values = enum_values or f.values
    if f.kind == "enum":
        ok += " AND " + typed + " IN (" + ", ".join(f"'{v}'" for v in values) + ")"
    return f"(NOT {absent} AND {ok})" if f.required else f"({absent} OR ({ok}))"


def typed_record_sql(max_micros: int) -> list[str]:
    """One ``typed_<record type>`` table per type: the valid records only,
    every contract field as a typed column (timestamps in epoch micros)."""
    envelope_paths = ", ".join(_json_path(f.name) for f in ENVELOPE)
    statements = [
        f"""
        CREATE TABLE records AS
        SELECT source_file, source_line, env, env[7] AS payload
        FROM (SELECT source_file, source_line, json_extract(text::JSON, [{envelope_paths}]) AS env
              FROM (SELECT source_file, source_line, TRY(decode(data)) AS text FROM lines
                    WHERE octet_length(data) <= {MAX_RECORD_BYTES})
              WHERE json_valid(text) AND json_type(text::JSON) = 'OBJECT')"""
    ]
    # A payload sent as a JSON string (allowed by the contract) is decoded first.
    statements.append("""
        UPDATE records SET payload = TRY_CAST(payload->>'$' AS JSON)
        WHERE json_type(payload) = 'VARCHAR'""")
    envelope_ok = " AND ".join(
        _valid(f, f"env[{i}]", max_micros, tuple(RECORD_TYPES) if f.name == "record_type" else None)
        for i, f in enumerate(ENVELOPE, start=1)
        if f.name != "payload"
    )
    envelope_cols = ", ".join(
        f"{_typed(f, f'env[{i}]')} AS env_{f.name}"
        for i, f in enumerate(ENVELOPE, start=1)
        if f.name in ("platform", "emitted_at")
    )
    for rt in RECORD_TYPES.values():
        paths = ", ".join(_json_path(f.name) for f in rt.fields)
        payload_ok = " AND ".join(_valid(f, f"p[{i}]", max_micros) for i, f in enumerate(rt.fields, start=1))
        columns = ", ".join(f"{_typed(f, f'p[{i}]')} AS {f.name}" for i, f in enumerate(rt.fields, start=1))
        statements.append(f"""
            CREATE TABLE typed_{rt.name} AS
            SELECT source_file, source_line, {envelope_cols}, {columns}
            FROM (SELECT *, json_extract(payload, [{paths}]) AS p FROM records
                  WHERE env[1]->>'$' = '{rt.name}' AND json_type(payload) = 'OBJECT' AND {envelope_ok})
            WHERE {payload_ok}""")
    statements.append("DROP TABLE records")
    return statements


# --- PII pseudonyms as SQL (HMAC-SHA256 from two SHA-256 passes) ----------------------------------
def hmac_macro(key: bytes) -> str:
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = bytes(b ^ 0x36 for b in key).hex()
    outer = bytes(b ^ 0x5C for b in key).hex()
    return f"CREATE MACRO pii_hash(v) AS sha256(unhex('{outer}') || unhex(sha256(unhex('{inner}') || encode(v))))"


def build(
    con: duckdb.DuckDBPyConnection,
    paths: list[str],
    as_of: date,
    now_micros: int,
    pii_key: bytes,
    progress=print,
    definitions: tuple[funnels.Funnel, ...] | None = None,
) -> dict:
    """Loads the landing files and runs the whole reference; returns row
    counts per gold table. ``definitions``: the funnels (default the packaged ones)."""
    con.execute("SET TimeZone = 'UTC'")
    started = time.time()
    lines = load_lines(con, paths)
    progress(f"reference: {lines:,} lines loaded in {time.time() - started:.1f} s")
    for statement in typed_record_sql(now_micros + MAX_FUTURE_MICROS):
        con.execute(statement)
    con.execute(hmac_macro(pii_key))
    script = "\n".join(line for line in SQL_FILE.read_text().splitlines() if not line.lstrip().startswith("--"))
    clock = min(end_of_day_micros(as_of), now_micros)
    script = (
        script.replace("{AS_OF_END}", str(end_of_day_micros(as_of)))
        .replace("{NEVER}", str(NEVER))
        .replace("{CLOCK}", str(clock))
    )
    for statement in (s for s in script.split(";") if s.strip()):
        con.execute(statement)
    ab_statistics(con)
    reference_funnels.build(con, funnels.load() if definitions is None else definitions, clock)
    progress(f"reference: bronze -> silver -> gold in {time.time() - started:.1f} s")
    return {name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in GOLD}


def ab_statistics(con: duckdb.DuckDBPyConnection) -> None:
    """``mart_ab_test`` from the SQL's ``ab_counts``, with statsmodels' and
    scipy's tests (the pipeline computes them itself from the distributions)."""
    from scipy.stats import chisquare
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    result = con.execute("SELECT * FROM ab_counts")
    names = [d[0] for d in result.description]
    counts = [dict(zip(names, values)) for values in result.fetchall()]
    rows = []
    for experiment in sorted({c["experiment"] for c in counts}):
        variants = {c["variant"]: c for c in counts if c["experiment"] == experiment}
        control = "control" if "control" in variants else "A" if "A" in variants else None
        split = [v["sessions"] for v in variants.values()]
        srm = float(chisquare(split).pvalue) if len(split) > 1 else None
        for name, v in variants.items():
            x, n = v["sessions_payment"], v["sessions"]
            row = {
                **v,
                "is_control": name == control,
                "conversion_rate": x / n,
                "lift_vs_control": None,
                "diff_vs_control": None,
                "ci_low": None,
                "ci_high": None,
                "p_value": None,
                "srm_p_value": srm,
                "srm_flag": None if srm is None else srm < 0.001,
            }
            if control is not None and name != control:
                xc, nc = variants[control]["sessions_payment"], variants[control]["sessions"]
                row["diff_vs_control"] = x / n - xc / nc
                row["lift_vs_control"] = (x / n) / (xc / nc) - 1 if xc else None
                low, high = confint_proportions_2indep(x, n, xc, nc, method="wald", compare="diff")
                row["ci_low"], row["ci_high"] = float(low), float(high)
                p = float(proportions_ztest([x, xc], [n, nc])[1])
                row["p_value"] = p if p == p else None  # NaN (zero variance): undefined
            rows.append(row)
    con.register("ab_rows", pa.Table.from_pylist(rows, schema=GOLD["mart_ab_test"].arrow_schema()))
    con.execute("CREATE TABLE mart_ab_test AS SELECT * FROM ab_rows")
    con.unregister("ab_rows")


def write_gold(con: duckdb.DuckDBPyConnection, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in GOLD:
        con.execute(f"COPY {name} TO '{out / name}.parquet' (FORMAT parquet)")


# --- differential check -------------------------------------------------------------------------
# Statistics computed by two libraries (the pipeline's formulas on scipy's
# distributions, statsmodels here) agree to rounding, not to the last bit.
ROUNDED = {"mart_ab_test": ("lift_vs_control", "diff_vs_control", "ci_low", "ci_high", "p_value", "srm_p_value")}
# So do the interpolated quantiles of mart_funnel (the pipeline's arithmetic, DuckDB's quantile_cont):
# seconds up to weeks, compared to 12 significant digits.
SIGNIFICANT = {
    "mart_funnel": (
        "median_seconds_to_convert",
        "p90_seconds_to_convert",
        "median_seconds_from_previous",
        "p90_seconds_from_previous",
    )
}


def _canonical(table, source: str, columns: set[str] | None = None) -> str:
    """A table's rows in one comparable form: timestamps as epoch micros, dates
    as DATE, ``ROUNDED`` statistics to 10 decimals, ``SIGNIFICANT`` ones to 12 digits.
    ``columns``: only these (what both sides have)."""
    cols = []
    for c in table.columns:
        if columns is not None and c.name not in columns:
            continue
        if c.name in ROUNDED.get(table.name, ()):
            cols.append(f"round({c.name}, 10) AS {c.name}")
        elif c.name in SIGNIFICANT.get(table.name, ()):
            digits = f"11 - CAST(floor(log10(abs({c.name}))) AS INTEGER)"
            cols.append(f"CASE WHEN {c.name} = 0 THEN 0 ELSE round({c.name}, {digits}) END AS {c.name}")
        elif c.type == TIMESTAMP and c.repeated:
            cols.append(f"list_transform({c.name}, lambda x: epoch_us(CAST(x AS TIMESTAMPTZ))) AS {c.name}")
        elif c.type == TIMESTAMP:
            cols.append(f"epoch_us(CAST({c.name} AS TIMESTAMPTZ)) AS {c.name}")
        elif c.type == DATE:
            cols.append(f"CAST({c.name} AS DATE) AS {c.name}")
        else:
            cols.append(c.name)
    return f"SELECT {', '.join(cols)} FROM {source}"


def compare_gold(lake: str | Path, reference: str | Path, show: int = 5, tables: list[str] | None = None) -> dict:
    """Every gold table (or ``tables``) of the lake against the reference's:
    ``{table: {rows, only_in_pipeline, only_in_reference, examples}}``. Rows
    are compared as multisets, every column exactly."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    report = {}
    for name, table in GOLD.items():
        if tables is not None and name not in tables:
            continue
        folder = Path(lake) / "gold" / name
        if (folder / "_delta_log").is_dir():
            # A Delta table (this code): its current version, through a registered Arrow dataset.
            con.register("pipeline_gold", DeltaTable(str(folder)).to_pyarrow_dataset())
            pipeline = "pipeline_gold"
        else:  # a plain Parquet folder (the previous release)
            pipeline = f"read_parquet('{folder}/**/*.parquet', hive_partitioning = false)"
        # a previous release may lack columns added since: the columns it has are compared
        have = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {pipeline}").fetchall()}
        common = have & set(table.column_names)
        con.execute(f"CREATE TABLE p AS {_canonical(table, pipeline, common)}")
        if pipeline == "pipeline_gold":
            con.unregister("pipeline_gold")
        con.execute(f"CREATE TABLE r AS {_canonical(table, repr(str(Path(reference) / name) + '.parquet'), common)}")
        only_p = con.execute("SELECT * FROM (SELECT * FROM p EXCEPT ALL SELECT * FROM r) ORDER BY ALL").fetchall()
        only_r = con.execute("SELECT * FROM (SELECT * FROM r EXCEPT ALL SELECT * FROM p) ORDER BY ALL").fetchall()
        report[name] = {
            "rows": con.execute("SELECT count(*) FROM p").fetchone()[0],
            "reference_rows": con.execute("SELECT count(*) FROM r").fetchone()[0],
            "only_in_pipeline": len(only_p),
            "only_in_reference": len(only_r),
            "columns_not_compared": sorted(set(table.column_names) - have),
            "examples": {
                "pipeline": [list(map(str, r)) for r in only_p[:show]],
                "reference": [list(map(str, r)) for r in only_r[:show]],
            },
        }
        con.execute("DROP TABLE p; DROP TABLE r")
    return report


def differences(report: dict) -> list[str]:
    """Human-readable lines for every table that differs; [] when all agree."""
    lines = []
    for name, r in report.items():
        if r["only_in_pipeline"] or r["only_in_reference"]:
            lines.append(
                f"{name}: {r['only_in_pipeline']} rows only in the pipeline, "
                f"{r['only_in_reference']} only in the reference"
            )
            lines += [f"  pipeline:  {row}" for row in r["examples"]["pipeline"]]
            lines += [f"  reference: {row}" for row in r["examples"]["reference"]]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", action="append", help="glob of JSONL landing files; repeatable")
    parser.add_argument("--out", required=True, help="folder for the reference gold tables (Parquet)")
    parser.add_argument(
        "--as-of",
        dest="as_of",
        type=date.fromisoformat,
        default=datetime.now(UTC).date(),
        help="as in pipelines.gold_daily",
    )
    parser.add_argument("--compare", metavar="LAKE", help="compare LAKE/gold with the tables in --out")
    args = parser.parse_args(argv)
    if args.input:
        paths = sorted({p for pattern in args.input for p in glob.glob(pattern)})
        if not paths:
            parser.error(f"no input files match {args.input}")
        con = duckdb.connect()
        counts = build(con, paths, args.as_of, contract.now_micros(), local_key().secret)
        write_gold(con, Path(args.out))
        print("reference gold rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if args.compare:
        lines = differences(compare_gold(args.compare, args.out))
        print("\n".join(lines) if lines else "every gold table is identical")
        return 1 if lines else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
