# The funnel lakehouse on Google Cloud, from an empty project: the APIs,
# names every other file uses, and the KMS grants the services' agents need
# to encrypt with var.kms_key. See the README's "Deploy" section.
terraform {
  required_version = ">= 1.6"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.0"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

provider "google-beta" {
  project = var.project
  region  = var.region
}

data "google_project" "this" {
  project_id = var.project
}

# The names devtools/deploy.py derives the same way (tests/test_deployment_files.py holds them equal).
locals {
  lake_bucket      = coalesce(var.lake_bucket, "${var.project}-${var.name_prefix}-lake")
  landing_bucket   = coalesce(var.landing_bucket, "${var.project}-${var.name_prefix}-landing")
  dataflow_bucket  = coalesce(var.dataflow_bucket, "${var.project}-${var.name_prefix}-dataflow")
  lake             = "gs://${local.lake_bucket}"
  template_root    = "gs://${local.dataflow_bucket}/templates"
  temp_location    = "gs://${local.dataflow_bucket}/temp"
  staging_location = "gs://${local.dataflow_bucket}/staging"
  image_root       = "${var.region}-docker.pkg.dev/${var.project}/${var.name_prefix}"
  stream_job_name  = "${var.name_prefix}-stream-ingest"
  pii_key_version  = "${google_secret_manager_secret.pii_key.id}/versions/latest"
}

resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com", "bigquery.googleapis.com", "cloudbuild.googleapis.com",
    "cloudkms.googleapis.com", "cloudscheduler.googleapis.com", "compute.googleapis.com",
    "dataflow.googleapis.com", "monitoring.googleapis.com", "pubsub.googleapis.com", "run.googleapis.com",
    "secretmanager.googleapis.com", "storage.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}

# --- customer-managed encryption: each service's agent uses var.kms_key ---------------
data "google_storage_project_service_account" "gcs" {}

data "google_bigquery_default_service_account" "bigquery" {}

resource "google_project_service_identity" "agents" {
  provider = google-beta
  for_each = toset(["pubsub.googleapis.com", "artifactregistry.googleapis.com", "secretmanager.googleapis.com"])
  project  = var.project
  service  = each.value

  depends_on = [google_project_service.apis]
}

resource "google_kms_crypto_key_iam_member" "service_agents" {
  for_each = {
    storage          = data.google_storage_project_service_account.gcs.email_address
    bigquery         = data.google_bigquery_default_service_account.bigquery.email
    pubsub           = google_project_service_identity.agents["pubsub.googleapis.com"].email
    artifactregistry = google_project_service_identity.agents["artifactregistry.googleapis.com"].email
    secretmanager    = google_project_service_identity.agents["secretmanager.googleapis.com"].email
  }
  crypto_key_id = var.kms_key
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${each.value}"
}
