from django.apps import AppConfig


class FaultInjectionConfig(AppConfig):
    name = "tests.support.fault_injection"
    label = "fault_injection"
    verbose_name = "Fault injection (tests only)"
    default_auto_field = "django.db.models.BigAutoField"
