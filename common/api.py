"""API conventions shared by every endpoint: one JSON error shape, {"detail": "...", "errors":
{"field": ["message", ...]}}, and the write throttle. Lists page by cursor (common/pagination.py)
and refuse unknown query parameters (common/filters.py)."""

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

from common import security


class WriteThrottle(UserRateThrottle):
    """Per-user limit on the calls that file or decide something (PRODUCT.md section 6): a burst
    answers 429 with Retry-After instead of queueing work. The rate is read on every call from
    settings.API_WRITE_RATE (e.g. "30/min") so tests and deployments can change it."""

    scope = "writes"

    def get_rate(self):
        return getattr(settings, "API_WRITE_RATE", "30/min")


def _as_field_errors(detail) -> dict:
    if isinstance(detail, dict):
        return {
            key: [str(m) for m in (value if isinstance(value, list) else [value])]
            for key, value in detail.items()
        }
    if isinstance(detail, list):
        return {"non_field_errors": [str(m) for m in detail]}
    return {}


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        detail = (
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    _log_refusal(exc, context, response)
    if isinstance(exc, exceptions.ValidationError):
        errors = _as_field_errors(exc.detail)
        first = next(iter(errors.values()), ["Invalid input."])[0]
        # A refused query parameter says which one in `detail` too (common/filters.py).
        response.data = {"detail": getattr(exc, "summary", first), "errors": errors}
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"detail": str(response.data["detail"]), "errors": {}}
    return response


def _log_refusal(exc, context, response) -> None:
    """Every refusal by policy (401/403/404) and every refused write (400) goes to the security
    log with its reason; field names only for a validation failure, never the values sent."""
    request = getattr(context.get("request"), "_request", None)
    status_code = response.status_code
    if request is None:
        return
    if not (security.is_refusal(request.method, status_code) or status_code == 404):
        return
    if isinstance(exc, exceptions.ValidationError):
        reason = "invalid " + ", ".join(sorted(_as_field_errors(exc.detail))[:20])
    else:
        reason = str(getattr(exc, "detail", "") or exc)
    security.log_refusal(request, status=status_code, reason=reason)


def conflict(message: str) -> Response:
    return Response({"detail": message, "errors": {}}, status=status.HTTP_409_CONFLICT)
