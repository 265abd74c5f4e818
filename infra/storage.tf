# The buckets: the lake (Delta tables), the landing files the daily backfill
# reads, Dataflow's staging/temp and the template specs, and their access logs.

# Access logs go to a bucket of their own: a bucket logging to itself would log its own log writes.
resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:the access-log bucket does not log access to itself
  name                        = "${local.lake_bucket}-access-logs"
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
  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_storage_bucket" "lake" {
  name                        = local.lake_bucket
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

  # Files a vacuum deleted (or an erasure rewrote) stay recoverable this long, then go.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.lake_noncurrent_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
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
  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_storage_bucket" "landing" {
  name                        = local.landing_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = var.kms_key
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  # raw/ keeps every landed record; the landing files themselves are only needed until then.
  lifecycle_rule {
    condition {
      age = var.landing_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

# Dataflow's staging and temp files, and the flex-template specs (templates/).
resource "google_storage_bucket" "dataflow" {
  name                        = local.dataflow_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

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
      matches_prefix = ["temp/", "staging/"]
      age            = 7
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}
