# The funnel lakehouse on Google Cloud: lake bucket, BigQuery datasets,
# Pub/Sub ingest with a dead-letter topic, and the identity Dataflow runs as.
terraform {
  required_version = ">= 1.6"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

# --- the lake ---------------------------------------------------------------
# Access logs of the lake go to a bucket of their own: a bucket logging to
# itself would log its own log writes.
resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:the access-log bucket does not log access to itself
  name                        = "${var.lake_bucket}-access-logs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = var.kms_key
  }

  lifecycle_rule {
    condition {
      age = 365
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket" "lake" {
  name                        = var.lake_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # raw/ is immutable by design; versioning keeps an accidental delete recoverable.
  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = var.kms_key
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  lifecycle_rule {
    condition {
      matches_prefix = ["_staging/"]
      age            = 2
    }
    action {
      type = "Delete"
    }
  }
}

# --- warehouse ----------------------------------------------------------------
locals {
  datasets = {
    bronze        = "Typed, normalized, PII-hashed rows per record type."
    silver        = "One current row per identity, joined (daily backfill)."
    silver_stream = "One current row per identity, joined, kept current by the streaming job."
    gold          = "Funnel facts, dimensions and marts (truncate and load)."
    ops           = "Dead letter, operational alerts, and the short-lived scratch tables MERGEs read from."
  }
}

resource "google_bigquery_dataset" "layer" {
  for_each    = local.datasets
  dataset_id  = each.key
  location    = var.region
  description = each.value

  default_encryption_configuration {
    kms_key_name = var.kms_key
  }
}

# --- ingest ---------------------------------------------------------------------
resource "google_pubsub_topic" "raw_events" {
  name         = "funnel-raw-events"
  kms_key_name = var.kms_key
}

resource "google_pubsub_topic" "raw_events_undeliverable" {
  name         = "funnel-raw-events-undeliverable"
  kms_key_name = var.kms_key
}

resource "google_pubsub_subscription" "stream_ingest" {
  name                       = "funnel-stream-ingest"
  topic                      = google_pubsub_topic.raw_events.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.raw_events_undeliverable.id
    max_delivery_attempts = 10
  }
}

# --- the identity the pipelines run as ----------------------------------------------
resource "google_service_account" "dataflow" {
  account_id   = "funnel-dataflow"
  display_name = "funnel-lakehouse Dataflow workers"
}

resource "google_storage_bucket_iam_member" "dataflow_lake" {
  bucket = google_storage_bucket.lake.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.dataflow.email}"
}

resource "google_bigquery_dataset_iam_member" "dataflow_datasets" {
  for_each   = google_bigquery_dataset.layer
  dataset_id = each.value.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.dataflow.email}"
}

resource "google_pubsub_subscription_iam_member" "dataflow_subscriber" {
  subscription = google_pubsub_subscription.stream_ingest.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.dataflow.email}"
}

resource "google_project_iam_member" "dataflow_worker" {
  project = var.project
  role    = "roles/dataflow.worker"
  member  = "serviceAccount:${google_service_account.dataflow.email}"
}

# Load jobs and the MERGE queries run as jobs in the project.
resource "google_project_iam_member" "dataflow_bigquery_jobs" {
  project = var.project
  role    = "roles/bigquery.jobUser"
  member  = "serviceAccount:${google_service_account.dataflow.email}"
}
