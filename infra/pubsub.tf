# Ingest: the raw events topic, the streaming job's subscription (retried
# with backoff, then parked on a dead-letter topic), and the alerts topic.
resource "google_pubsub_topic" "raw_events" {
  name         = "${var.name_prefix}-raw-events"
  kms_key_name = var.kms_key
  depends_on   = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_pubsub_topic" "raw_events_undeliverable" {
  name         = "${var.name_prefix}-raw-events-undeliverable"
  kms_key_name = var.kms_key
  depends_on   = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_pubsub_subscription" "stream_ingest" {
  name                       = "${var.name_prefix}-stream-ingest"
  topic                      = google_pubsub_topic.raw_events.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = "" # never expires, even while the streaming job is stopped
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.raw_events_undeliverable.id
    max_delivery_attempts = 10
  }
}

# A topic keeps nothing by itself: undeliverable messages wait here to be inspected or replayed.
resource "google_pubsub_subscription" "raw_events_undeliverable" {
  name                       = "${var.name_prefix}-raw-events-undeliverable"
  topic                      = google_pubsub_topic.raw_events_undeliverable.id
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic" "alerts" {
  name         = "${var.name_prefix}-alerts"
  kms_key_name = var.kms_key
  depends_on   = [google_kms_crypto_key_iam_member.service_agents]
}

# Pub/Sub itself moves a message to the dead-letter topic: its agent publishes there and acks the original.
resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  topic  = google_pubsub_topic.raw_events_undeliverable.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_project_service_identity.agents["pubsub.googleapis.com"].email}"
}

resource "google_pubsub_subscription_iam_member" "agent_acks_dead_letters" {
  subscription = google_pubsub_subscription.stream_ingest.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_project_service_identity.agents["pubsub.googleapis.com"].email}"
}
