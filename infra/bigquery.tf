# BigQuery: a dataset per layer and every table of schemas/tables.py
# (local.datasets and local.bigquery_tables, generated into bigquery_tables.tf by `make generate`).
resource "google_bigquery_dataset" "layer" {
  for_each    = local.datasets
  dataset_id  = each.key
  location    = var.region
  description = each.value

  default_encryption_configuration {
    kms_key_name = var.kms_key
  }
  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_bigquery_table" "table" {
  for_each            = local.bigquery_tables
  dataset_id          = google_bigquery_dataset.layer[each.value.dataset].dataset_id
  table_id            = each.value.table_id
  description         = each.value.description
  schema              = jsonencode(each.value.schema)
  clustering          = length(each.value.clustering) > 0 ? each.value.clustering : null
  deletion_protection = true

  dynamic "time_partitioning" {
    for_each = each.value.partition_field == null ? [] : [each.value.partition_field]
    content {
      type  = "DAY"
      field = time_partitioning.value
    }
  }

  encryption_configuration {
    kms_key_name = var.kms_key
  }
}
