variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "region" {
  description = "Region of the buckets, datasets, images, Dataflow jobs and schedules."
  type        = string
  default     = "europe-west1"
}

variable "kms_key" {
  description = "Cloud KMS key (projects/.../locations/REGION/keyRings/.../cryptoKeys/...) encrypting the buckets, datasets, topics, images and the PII key's secret."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every resource name (topics, subscriptions, service accounts, jobs, the image repository)."
  type        = string
  default     = "funnel"
}

variable "lake_bucket" {
  description = "Bucket of the lakehouse (raw/, bronze/, silver/, gold/, dead_letter/ ...); default PROJECT-PREFIX-lake."
  type        = string
  default     = null
}

variable "landing_bucket" {
  description = "Bucket the landing files (.jsonl, .jsonl.gz, .parquet) arrive in; default PROJECT-PREFIX-landing."
  type        = string
  default     = null
}

variable "dataflow_bucket" {
  description = "Bucket of Dataflow's staging/ and temp/ files and the flex-template specs (templates/); default PROJECT-PREFIX-dataflow."
  type        = string
  default     = null
}

variable "landing_daily_glob" {
  description = "Glob, inside the landing bucket, of one day's files; {yesterday} becomes the UTC date the backfill launches for."
  type        = string
  default     = "{yesterday}/*.jsonl"
}

variable "image_tag" {
  description = "Tag of the pipeline images the maintenance job runs: the commit make template-build tagged them with (git rev-parse --short HEAD)."
  type        = string
}

variable "backfill_schedule" {
  description = "When the daily backfill of yesterday's landing files is launched (cron, UTC)."
  type        = string
  default     = "0 2 * * *"
}

variable "gold_schedule" {
  description = "When gold_daily is launched (cron, UTC): after the backfill has had time to finish."
  type        = string
  default     = "0 4 * * *"
}

variable "maintenance_schedule" {
  description = "When the lake maintenance runs (cron, UTC): after the daily gold recompute."
  type        = string
  default     = "30 6 * * *"
}

variable "lake_noncurrent_days" {
  description = "Days a deleted or replaced lake object (a vacuumed Delta file) stays recoverable."
  type        = number
  default     = 30
}

variable "landing_retention_days" {
  description = "Days landing files are kept (raw/ keeps every record regardless)."
  type        = number
  default     = 90
}

variable "dead_letter_alert_threshold" {
  description = "Dead-lettered records per hour above which the dead-letter alert fires."
  type        = number
  default     = 100
}

variable "freshness_alert_seconds" {
  description = "Age of the streaming job's data watermark (seconds) above which the freshness alert fires."
  type        = number
  default     = 900
}

variable "alert_notification_channels" {
  description = "Cloud Monitoring notification channel ids the alerts go to."
  type        = list(string)
  default     = []
}
