"""Start-up checks of the sign-in settings: a typo in ALLOTMENT_OIDC_GROUPS must stop the
deployment, not silently grant nothing (or the wrong thing) at the next sign-in."""

from django.conf import settings
from django.core.checks import Error, register

from .oidc import parse_group_mapping


@register()
def sign_in_settings(app_configs, **kwargs):
    errors = []
    try:
        parse_group_mapping(settings.ALLOTMENT_OIDC_GROUPS)
    except ValueError as exc:
        errors.append(Error(f"ALLOTMENT_OIDC_GROUPS: {exc}", id="accounts.E001"))
    if settings.OIDC_ISSUER and not settings.OIDC_CLIENT_ID:
        errors.append(Error("OIDC_ISSUER is set but OIDC_CLIENT_ID is not", id="accounts.E002"))
    if not settings.OIDC_ISSUER and not settings.ALLOTMENT_LOCAL_LOGIN:
        errors.append(
            Error(
                "ALLOTMENT_LOCAL_LOGIN is off and no OIDC_ISSUER is set: nobody could sign in",
                id="accounts.E003",
            )
        )
    return errors
