from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "allocator.connectors"
    label = "connectors"
    verbose_name = "Scheduler connectors"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import receivers  # noqa: F401 — connects the ledger receiver
