from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "allocator.connectors"
    label = "connectors"
    verbose_name = "Scheduler connectors"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from allocator.signals import allocation_usage_requested

        from . import receivers  # noqa: F401 — connects the ledger receiver
        from .usage import idle_usage_for

        allocation_usage_requested.connect(idle_usage_for, dispatch_uid="connectors-idle-usage")
