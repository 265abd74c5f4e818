variable "project" {
  description = "GCP project id."
  type        = string
}

variable "region" {
  description = "Region of the lake bucket, datasets and Dataflow jobs."
  type        = string
  default     = "europe-west1"
}

variable "lake_bucket" {
  description = "Name of the GCS bucket that holds the lakehouse (raw/, bronze/, silver/, gold/, dead_letter/)."
  type        = string
}

variable "kms_key" {
  description = "Cloud KMS key (projects/.../cryptoKeys/...) encrypting the lake bucket and the datasets."
  type        = string
}
