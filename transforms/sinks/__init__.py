"""Sinks beside the lake: BigQuery, the sink dead letter and its retries, the run log, BigLake."""
