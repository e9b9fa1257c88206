"""Operations endpoints: no sign-in (an orchestrator and Prometheus call them), no secrets."""

from __future__ import annotations

import hmac
import ipaddress
import sys

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from . import health


@never_cache
@require_GET
def healthz(request):
    """Liveness: the process answers. Touches no dependency (a database outage must not make
    the orchestrator restart every web process)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    ready, detail = health.readiness()
    return JsonResponse(detail, status=200 if ready else 503)


def _metrics_allowed(request) -> bool:
    ops = getattr(settings, "ALLOTMENT_OPS", {})
    token = ops.get("METRICS_TOKEN", "")
    if token:
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
    # REMOTE_ADDR only: X-Forwarded-For is whatever the client says.
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(net) for net in ops.get("METRICS_ALLOWED_NETWORKS", [])
    )


@never_cache
@require_GET
def metrics(request):
    if not _metrics_allowed(request):
        return HttpResponse(
            "Metrics are open to the networks in METRICS_ALLOWED_NETWORKS or to a bearer "
            "METRICS_TOKEN.\n",
            status=403,
            content_type="text/plain",
        )
    from .metrics import exposition

    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


DATABASE_DOWN = (OperationalError, InterfaceError)


def database_down() -> bool:
    error = sys.exc_info()[1]
    while error is not None:
        if isinstance(error, DATABASE_DOWN):
            return True
        error = error.__cause__ or error.__context__
    return False


def server_error(request):
    """handler500: an outage of the database is a 503 the client may retry (Retry-After),
    not a 500; anything else is the app's usual 500."""
    if database_down():
        if request.path.startswith("/api/"):
            response = JsonResponse(
                {"detail": "The service is briefly unavailable; try again shortly.", "errors": {}},
                status=503,
            )
        else:
            response = HttpResponse(
                "<!doctype html><title>Unavailable</title><h1>Briefly unavailable</h1>"
                "<p>Allotment cannot reach its database just now. Try again in a moment.</p>",
                status=503,
            )
        response["Retry-After"] = "5"
        return response
    from common.views import server_error as app_server_error

    return app_server_error(request)
