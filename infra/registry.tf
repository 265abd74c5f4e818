# The pipelines' images (templates/Dockerfile, one per pipeline, built by
# templates/cloudbuild.yaml) and the PII key's secret.
resource "google_artifact_registry_repository" "images" {
  repository_id = var.name_prefix
  location      = var.region
  format        = "DOCKER"
  description   = "funnel-lakehouse pipeline images (flex-template launchers and SDK containers)."
  kms_key_name  = var.kms_key
  depends_on    = [google_kms_crypto_key_iam_member.service_agents]
}

# The key that hashes emails and phone numbers. Terraform creates the secret,
# never its value (which would sit in the state): add a version by hand, see the README.
resource "google_secret_manager_secret" "pii_key" {
  secret_id = "${var.name_prefix}-pii-key"

  replication {
    user_managed {
      replicas {
        location = var.region
        customer_managed_encryption {
          kms_key_name = var.kms_key
        }
      }
    }
  }
  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}
