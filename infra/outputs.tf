# What the Makefile (devtools/deploy.py) and the launches need.
output "region" {
  description = "Region of the Dataflow jobs."
  value       = var.region
}

output "lake" {
  description = "Pass as --lake to the pipelines."
  value       = local.lake
}

output "landing_bucket" {
  description = "Where landing files go (the daily backfill reads gs://BUCKET/var.landing_daily_glob)."
  value       = google_storage_bucket.landing.name
}

output "template_root" {
  description = "Where make template-build writes the flex-template specs (BACKFILL.json ...)."
  value       = local.template_root
}

output "temp_location" {
  description = "Pass as --temp_location to Dataflow."
  value       = local.temp_location
}

output "staging_location" {
  description = "Pass as --staging_location to Dataflow."
  value       = local.staging_location
}

output "image_root" {
  description = "Artifact Registry path of the pipeline images (IMAGE_ROOT/PIPELINE:TAG)."
  value       = local.image_root
}

output "subscription" {
  description = "Pass as --subscription to stream_ingest."
  value       = google_pubsub_subscription.stream_ingest.id
}

output "raw_events_topic" {
  description = "Publish the raw events here."
  value       = google_pubsub_topic.raw_events.id
}

output "alerts_topic" {
  description = "Pass as --alerts-topic to stream_ingest."
  value       = google_pubsub_topic.alerts.id
}

output "pii_key_secret" {
  description = "Pass as --pii-key-secret (add a version first, see the README)."
  value       = local.pii_key_version
}

output "service_account" {
  description = "Pass as --service_account_email to Dataflow."
  value       = google_service_account.dataflow.email
}

output "stream_job_name" {
  description = "The streaming job's name the freshness alert watches."
  value       = local.stream_job_name
}

output "looker_service_account" {
  description = "The Looker connection's service account (reads dataset gold)."
  value       = google_service_account.looker.email
}
