"""The security log (PROOFS.md A1, ASVS 7.2.2 / 16.3): one `security` logger entry for every
request refused by policy (401/403, and 404 raised by a view for something the user may not see)
and every refused write (400 on POST/PUT/PATCH/DELETE).

An entry names the user, the method, the path (never the query string, headers or body: no
secrets), the status and the reason. Every value is encoded so a CR/LF or another control
character in a path, a username or a reason can never start a fake log line (PROOFS.md U3).

The API logs from common.api.exception_handler (it knows the reason); everything else, pages
and Django's own refusals (CSRF), from SecurityLogMiddleware when the response is a refusal."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.http import Http404

logger = logging.getLogger("security")

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
_LOGGED = "_security_logged"
_REASON = "security_reason"


def encode(value, limit: int = 300) -> str:
    """Printable, single-line text: control characters (CR, LF, ESC, NUL, ...), bidi overrides
    and backslashes are written as escapes, and long values are cut."""
    text = str(value)[:limit]
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif _invisible(code):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _invisible(code: int) -> bool:
    """Bidi overrides and isolates, line/paragraph separators, lone surrogates."""
    return (
        0x202A <= code <= 0x202E
        or 0x2066 <= code <= 0x2069
        or code in (0x2028, 0x2029)
        or 0xD800 <= code <= 0xDFFF
    )


def _username(request) -> str:
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return "anonymous"
    return user.get_username()


def log_refusal(request, *, status: int, reason: str) -> None:
    """Write one entry for this request (at most one: later calls for it are ignored)."""
    if getattr(request, _LOGGED, False):
        return
    setattr(request, _LOGGED, True)
    event = {
        "event": "validation_failed" if status == 400 else "denied",
        "status": status,
        "method": encode(request.method, 10),
        "path": encode(request.path),
        "user": encode(_username(request), 150),
        "reason": encode(reason or ""),
    }
    logger.warning(
        'event=%s status=%s method=%s path="%s" user="%s" reason="%s"',
        event["event"],
        event["status"],
        event["method"],
        event["path"],
        event["user"],
        event["reason"],
        extra={"security_event": event},
    )


def is_refusal(method: str, status: int) -> bool:
    return status in (401, 403) or (status == 400 and method in UNSAFE)


class SecurityLogMiddleware:
    """Logs the refusals nothing else logged: a page's 403, a view's Http404 or PermissionDenied,
    Django's CSRF failure, a refused form post that answers 400."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        status = response.status_code
        raised = getattr(request, "_security_raised", None)
        if is_refusal(request.method, status) or (status == 404 and raised is not None):
            reason = getattr(request, _REASON, None) or raised or f"HTTP {status}"
            log_refusal(request, status=status, reason=reason)
        return response

    def process_exception(self, request, exception):
        if isinstance(exception, Http404):
            request._security_raised = str(exception) or "not found (not visible to this user)"
        elif isinstance(exception, PermissionDenied):
            request._security_raised = str(exception) or "permission denied"
        return None
