"""Event metrics any app may count into (telemetry/instruments.py): a leaf that imports only
prometheus_client. The ops app reads and exposes them (/metrics)."""
