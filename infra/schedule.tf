# The daily batch: Cloud Scheduler calls the Dataflow flex-template launch
# API, the backfill of yesterday's landing files first, gold_daily later.
# Each launch returns at once (the launcher does not wait for its job), so
# the order is the schedule's: gold_daily reads the last *released* silver,
# so a backfill still running at its hour makes gold a day behind, never a
# mix (the Airflow DAG in orchestration/ chains the two for real).
locals {
  flex_template_launch_uri = "https://dataflow.googleapis.com/v1b3/projects/${var.project}/locations/${var.region}/flexTemplates:launch"
  flex_template_environment = {
    serviceAccountEmail = google_service_account.dataflow.email
    tempLocation        = local.temp_location
    stagingLocation     = local.staging_location
    ipConfiguration     = "WORKER_IP_PRIVATE"
    kmsKeyName          = var.kms_key
  }
  daily_launches = {
    backfill = {
      schedule = var.backfill_schedule
      job_name = "${var.name_prefix}-backfill-daily"
      # {yesterday}: the backfill's launcher puts in the UTC date (pipelines.backfill --input)
      parameters = {
        input          = "gs://${local.landing_bucket}/${var.landing_daily_glob}"
        lake           = local.lake
        pii_key_secret = local.pii_key_version
        sink           = "bigquery"
      }
    }
    gold_daily = {
      schedule = var.gold_schedule
      job_name = "${var.name_prefix}-gold-daily"
      parameters = {
        lake = local.lake
        sink = "bigquery"
      }
    }
  }
}

resource "google_cloud_scheduler_job" "daily" {
  for_each  = local.daily_launches
  name      = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  region    = var.region
  schedule  = each.value.schedule
  time_zone = "Etc/UTC"

  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = local.flex_template_launch_uri
    headers     = { "Content-Type" = "application/json" }
    body = base64encode(jsonencode({
      launchParameter = {
        jobName              = each.value.job_name
        containerSpecGcsPath = "${local.template_root}/${each.key}.json"
        parameters           = each.value.parameters
        environment          = local.flex_template_environment
      }
    }))
    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }
  depends_on = [google_project_iam_member.scheduler_launches_dataflow]
}
