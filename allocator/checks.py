"""System checks for the engine's configuration (run by `manage.py check`, and with --deploy)."""

from django.conf import settings
from django.core.checks import Error, register


def fault_injection_off_in_production(app_configs=None, **kwargs):
    """Fault points (allocator/faults.py) kill, stall or break the apply path on purpose: only
    the test settings may turn them on."""
    enabled = getattr(settings, "ALLOTMENT_FAULT_INJECTION", False)
    if enabled and not settings.DEBUG and not getattr(settings, "ALLOTMENT_TEST_SETTINGS", False):
        return [
            Error(
                "ALLOTMENT_FAULT_INJECTION is on in production settings.",
                hint="Fault injection is for the test settings only: set it to False.",
                id="allocator.E001",
            )
        ]
    return []


def register_checks() -> None:
    register(fault_injection_off_in_production, "allotment")
    register(fault_injection_off_in_production, "allotment", deploy=True)
