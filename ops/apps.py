from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operating the installation: health, readiness, metrics, structured logs, ledger checks.
    Imports the domain apps (to read them); nothing in the domain imports this app except the
    leaf `telemetry`, which this app exposes."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self):
        from . import receivers  # noqa: F401 — connects the Celery and engine signals
