"""Prints the DDL of BigLake external tables over the lake's bronze, dead
letter and silver on Cloud Storage (``transforms.sinks.biglake``).

    python -m pipelines.biglake_ddl --lake gs://BUCKET/lake --project P --connection P.REGION.CONNECTION
        | bq query --use_legacy_sql=false
"""

from __future__ import annotations

from pipelines.arguments import command_parser
from transforms.sinks.biglake import create_statements


def main(argv=None) -> list[str]:
    parser = command_parser(__doc__)
    parser.add_argument("--lake", required=True, help="gs://bucket/path of the lake")
    parser.add_argument("--project", required=True, help="BigQuery project of the lake_* datasets")
    parser.add_argument(
        "--connection",
        required=True,
        help="PROJECT.REGION.CONNECTION_ID: a Cloud resource connection that can read the lake",
    )
    args = parser.parse_args(argv)
    try:
        statements = create_statements(args.project, args.connection, args.lake)
    except ValueError as error:
        parser.error(str(error))
    print("\n\n".join(statements))
    return statements


if __name__ == "__main__":
    main()
