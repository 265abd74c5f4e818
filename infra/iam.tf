# Identities, least privilege: the Dataflow workers (and flex-template
# launchers) of all three pipelines; Cloud Scheduler, which only launches.

resource "google_service_account" "dataflow" {
  account_id   = "${var.name_prefix}-dataflow"
  display_name = "funnel-lakehouse Dataflow workers"
}

locals {
  dataflow_member = "serviceAccount:${google_service_account.dataflow.email}"
}

resource "google_project_iam_member" "dataflow_worker" {
  project = var.project
  role    = "roles/dataflow.worker"
  member  = local.dataflow_member
}

# Load jobs and the MERGE queries run as jobs in the project; the data roles are per dataset.
resource "google_project_iam_member" "dataflow_bigquery_jobs" {
  project = var.project
  role    = "roles/bigquery.jobUser"
  member  = local.dataflow_member
}

resource "google_bigquery_dataset_iam_member" "dataflow_datasets" {
  for_each   = google_bigquery_dataset.layer
  dataset_id = each.value.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = local.dataflow_member
}

# The lake's commits write, overwrite and (vacuum) delete objects; landing files are only read.
resource "google_storage_bucket_iam_member" "dataflow_buckets" {
  for_each = {
    lake     = { bucket = google_storage_bucket.lake.name, role = "roles/storage.objectAdmin" }
    dataflow = { bucket = google_storage_bucket.dataflow.name, role = "roles/storage.objectAdmin" }
    landing  = { bucket = google_storage_bucket.landing.name, role = "roles/storage.objectViewer" }
  }
  bucket = each.value.bucket
  role   = each.value.role
  member = local.dataflow_member
}

resource "google_pubsub_subscription_iam_member" "dataflow_subscription" {
  for_each     = toset(["roles/pubsub.subscriber", "roles/pubsub.viewer"])
  subscription = google_pubsub_subscription.stream_ingest.name
  role         = each.value
  member       = local.dataflow_member
}

resource "google_pubsub_topic_iam_member" "dataflow_alerts" {
  topic  = google_pubsub_topic.alerts.name
  role   = "roles/pubsub.publisher"
  member = local.dataflow_member
}

# Only the workers read the PII key (transforms/pii.py reads it in DoFn.setup).
resource "google_secret_manager_secret_iam_member" "dataflow_reads_pii_key" {
  secret_id = google_secret_manager_secret.pii_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.dataflow_member
}

# The launcher VM and the workers pull the pipeline image.
resource "google_artifact_registry_repository_iam_member" "dataflow_pulls_images" {
  repository = google_artifact_registry_repository.images.name
  location   = google_artifact_registry_repository.images.location
  role       = "roles/artifactregistry.reader"
  member     = local.dataflow_member
}

# --- Cloud Scheduler: launches the daily jobs and the maintenance -------------------
resource "google_service_account" "scheduler" {
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "funnel-lakehouse Cloud Scheduler"
}

resource "google_project_iam_member" "scheduler_launches_dataflow" {
  #checkov:skip=CKV_GCP_49:launching a flex template needs dataflow.jobs.create, granted by no narrower predefined role; the scheduler can act as the worker account only (serviceAccountUser on that account alone, below)
  project = var.project
  role    = "roles/dataflow.developer"
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}

# A launch names the worker service account: the launcher must be allowed to act as it.
resource "google_service_account_iam_member" "scheduler_acts_as_dataflow" {
  service_account_id = google_service_account.dataflow.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.scheduler.email}"
}

# It reads the template specs.
resource "google_storage_bucket_iam_member" "scheduler_reads_templates" {
  bucket = google_storage_bucket.dataflow.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.scheduler.email}"
}

# --- Looker (and dbt): read gold, run queries -------------------------------------
resource "google_service_account" "looker" {
  account_id   = "${var.name_prefix}-looker"
  display_name = "funnel-lakehouse Looker connection"
}

resource "google_bigquery_dataset_iam_member" "looker_reads_gold" {
  dataset_id = google_bigquery_dataset.layer["gold"].dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = "serviceAccount:${google_service_account.looker.email}"
}

resource "google_project_iam_member" "looker_bigquery_jobs" {
  project = var.project
  role    = "roles/bigquery.jobUser"
  member  = "serviceAccount:${google_service_account.looker.email}"
}
