output "lake" {
  description = "Pass as --lake to the pipelines."
  value       = "gs://${google_storage_bucket.lake.name}"
}

output "subscription" {
  description = "Pass as --subscription to stream_ingest."
  value       = google_pubsub_subscription.stream_ingest.id
}

output "service_account" {
  description = "Pass as --service_account_email to Dataflow."
  value       = google_service_account.dataflow.email
}
