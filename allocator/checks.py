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


def fault_injection_app_installed(app_configs=None, **kwargs):
    """Armed faults live in a test-only app (tests/support/fault_injection): fault injection on
    without it would break the apply path at its first fault point."""
    from django.apps import apps

    from .faults import APP_LABEL

    enabled = getattr(settings, "ALLOTMENT_FAULT_INJECTION", False)
    if enabled and not apps.is_installed(f"tests.support.{APP_LABEL}"):
        return [
            Error(
                "ALLOTMENT_FAULT_INJECTION is on but its test-only app is not installed.",
                hint="Use the test settings (config/settings/test.py), or set it to False.",
                id="allocator.E002",
            )
        ]
    return []


def register_checks() -> None:
    for check in (fault_injection_off_in_production, fault_injection_app_installed):
        register(check, "allotment")
        register(check, "allotment", deploy=True)
