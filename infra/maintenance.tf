# Daily lake maintenance (pipelines.maintain: compaction, log checkpoints,
# vacuum) as a Cloud Run job running the pipeline image, started by Cloud
# Scheduler. It is a plain command, not a Beam pipeline, so it needs no
# Dataflow; it touches only the lake bucket.

resource "google_service_account" "maintenance" {
  account_id   = "${var.name_prefix}-maintenance"
  display_name = "funnel-lakehouse lake maintenance"
}

# Compaction rewrites files and vacuum deletes them: object admin on the lake bucket, nothing else.
resource "google_storage_bucket_iam_member" "maintenance_lake" {
  bucket = google_storage_bucket.lake.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.maintenance.email}"
}

resource "google_cloud_run_v2_job" "maintain" {
  name     = "${var.name_prefix}-lake-maintenance"
  location = var.region

  template {
    template {
      service_account = google_service_account.maintenance.email
      timeout         = "3600s"
      max_retries     = 1
      containers {
        # any pipeline's image holds the package; maintain is not a flex template
        image   = "${local.image_root}/backfill:${var.image_tag}"
        command = ["python", "-m", "pipelines.maintain"]
        args    = ["--lake", local.lake]
      }
    }
  }
}

resource "google_cloud_run_v2_job_iam_member" "scheduler_runs_maintenance" {
  name     = google_cloud_run_v2_job.maintain.name
  location = google_cloud_run_v2_job.maintain.location
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_scheduler_job" "maintain" {
  name      = "${var.name_prefix}-lake-maintenance"
  region    = var.region
  schedule  = var.maintenance_schedule
  time_zone = "Etc/UTC"

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project}/locations/${var.region}/jobs/${google_cloud_run_v2_job.maintain.name}:run"
    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }
}
