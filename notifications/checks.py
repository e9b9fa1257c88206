"""The site's address must be known: notification emails link back to it."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register


@register()
def site_url_check(app_configs, **kwargs):
    value = getattr(settings, "ALLOTMENT_SITE_URL", "")
    parts = urlsplit(value or "")
    if parts.scheme in ("http", "https") and parts.netloc and not parts.query:
        return []
    return [
        Error(
            f"ALLOTMENT_SITE_URL is {value!r}: it must be the address people open Allotment at, "
            "e.g. https://allotment.example.org (emails link to pages there).",
            id="notifications.E001",
        )
    ]
