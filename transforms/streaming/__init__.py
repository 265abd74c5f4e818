"""The streaming job (Beam): Pub/Sub -> raw, bronze, silver, alerts, with its sinks."""
