# Alert policies: records rejected to the dead letter (by any pipeline, or
# by a sink), messages Pub/Sub gave up delivering, and the streaming job
# falling behind or going quiet.
resource "google_monitoring_alert_policy" "dead_letter_volume" {
  display_name          = "${var.name_prefix}: dead-letter volume"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "records dead-lettered in the last hour"
    # The pipelines' counters dead_letter_<reason> and sink_dead_lettered_<table> (namespace funnel).
    condition_prometheus_query_language {
      query               = "sum(delta(dataflow_googleapis_com:job_user_counter{monitored_resource=\"dataflow_job\",metric_name=~\"(dead_letter|sink_dead_lettered)_.*\"}[1h])) > ${var.dead_letter_alert_threshold}"
      duration            = "0s"
      evaluation_interval = "300s"
    }
  }

  conditions {
    display_name = "messages Pub/Sub could not deliver"
    condition_threshold {
      filter          = "resource.type = \"pubsub_topic\" AND resource.labels.topic_id = \"${google_pubsub_topic.raw_events_undeliverable.name}\" AND metric.type = \"pubsub.googleapis.com/topic/send_message_operation_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }

  documentation {
    content   = "Rejected records are in LAKE/dead_letter and BigQuery ops.dead_letter with a typed reason; failed sink writes in ops.sink_dead_letter; undeliverable messages wait on the subscription ${google_pubsub_subscription.raw_events_undeliverable.name}. After a fix: python -m pipelines.replay_dead_letter."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "stream_freshness" {
  display_name          = "${var.name_prefix}: streaming data freshness"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "watermark older than ${var.freshness_alert_seconds} s"
    condition_threshold {
      filter          = "resource.type = \"dataflow_job\" AND resource.labels.job_name = \"${local.stream_job_name}\" AND metric.type = \"dataflow.googleapis.com/job/data_watermark_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.freshness_alert_seconds
      duration        = "600s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  conditions {
    display_name = "the streaming job reports no watermark"
    condition_absent {
      filter   = "resource.type = \"dataflow_job\" AND resource.labels.job_name = \"${local.stream_job_name}\" AND metric.type = \"dataflow.googleapis.com/job/data_watermark_age\""
      duration = "900s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    content   = "The streaming job ${local.stream_job_name} is behind or stopped: silver and the operational alerts are late. Check the job's backlog (subscription ${google_pubsub_subscription.stream_ingest.name}) and its logs."
    mime_type = "text/markdown"
  }
}

# A gold run or a backfill whose blocking data-quality checks failed (counter
# dq_checks_blocking, namespace funnel; schemas/quality.py): gold was not
# released, the previous release stays.
resource "google_monitoring_alert_policy" "data_quality_blocking" {
  display_name          = "${var.name_prefix}: blocking data-quality failures"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "blocking data-quality checks failed in the last hour"
    condition_prometheus_query_language {
      query               = "sum(delta(dataflow_googleapis_com:job_user_counter{monitored_resource=\"dataflow_job\",metric_name=\"dq_checks_blocking\"}[1h])) > 0"
      duration            = "0s"
      evaluation_interval = "300s"
    }
  }

  documentation {
    content   = "A run's blocking checks failed: gold was not released (the previous release stays, in the lake and in BigQuery). The failing checks are rows of BigQuery ops.dq_results (verdict fail, severity block) and LAKE/ops/dq_results; `funnel status --lake LAKE` shows them. Fix the data or the rule, then rerun the gold job."
    mime_type = "text/markdown"
  }
}
