"""Idempotency-Key for POSTs that create or decide something (PRODUCT.md section 6): the same key
sent twice by the same user has the effect of one call.

Usage, on a DRF view method or @action:

    @idempotent
    def create(self, request, *args, **kwargs): ...

How it holds under concurrency: the key is claimed by inserting the IdempotencyRecord row *in
the same transaction* as the action itself, and the row is completed with the response before
that transaction commits. So:

- same user + key, same request (method, path, body), after the first finished: the stored status
  and body are replayed, and the action does not run again;
- same key with a different request: 422, nothing runs;
- a concurrent duplicate blocks on the unique (user, key) index until the first commits, then
  replays its response; if the first takes longer than IN_PROGRESS_WAIT, the duplicate answers
  409 "in progress" rather than tying up a worker (the client retries later);
- if the action fails (an exception, a 4xx or 5xx answer), the claim is rolled back or dropped
  with it: failures are not remembered and the same key may be retried after a fix.
"""

from __future__ import annotations

import functools
import hashlib
import json

from django.db import IntegrityError, OperationalError, connection, transaction
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from .models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# How long a duplicate waits for the first call with its key before answering 409.
IN_PROGRESS_WAIT = "3s"


def _error(code: int, message: str) -> Response:
    return Response({"detail": message, "errors": {}}, status=code)


def request_fingerprint(request) -> str:
    try:
        body = json.dumps(request.data, sort_keys=True, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        body = repr(request.data)
    raw = "\n".join([request.method, request.path, body])
    return hashlib.sha256(raw.encode()).hexdigest()


def _replay(record: IdempotencyRecord, request, fingerprint: str) -> Response:
    if (
        record.request_hash != fingerprint
        or record.method != request.method
        or record.path != request.path[:500]
    ):
        return _error(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            f"This {HEADER} was already used for a different request; use a new key.",
        )
    if record.status_code is None:
        return _error(status.HTTP_409_CONFLICT, "A request with this key is still in progress.")
    response = Response(record.response_body, status=record.status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def _claim(request, key: str, fingerprint: str):
    """Insert the claim row inside the caller's transaction. Returns (record, None) when this call
    owns the key, or (None, response) to answer at once."""
    try:
        with transaction.atomic():  # a savepoint: a failed insert leaves the transaction usable
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{IN_PROGRESS_WAIT}'")
            record = IdempotencyRecord.objects.create(
                user=request.user,
                key=key,
                method=request.method,
                path=request.path[:500],
                request_hash=fingerprint,
            )
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = DEFAULT")
        return record, None
    except IntegrityError:
        pass  # the first call committed: fall through and replay it
    except OperationalError:  # lock_timeout: the first call holds the key, uncommitted
        return None, _error(
            status.HTTP_409_CONFLICT, "A request with this key is still in progress."
        )
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = DEFAULT")
    existing = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
    if existing is None:  # claimed and dropped meanwhile (the first call failed): try again
        return _claim(request, key, fingerprint)
    return None, _replay(existing, request, fingerprint)


def idempotent(view_method):
    """Honour the Idempotency-Key header on a DRF view method (see the module docstring)."""

    @functools.wraps(view_method)
    def wrapper(self, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view_method(self, request, *args, **kwargs)
        key = key.strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            return Response(
                {
                    "detail": f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters.",
                    "errors": {HEADER: [f"Give 1 to {MAX_KEY_LENGTH} characters."]},
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        fingerprint = request_fingerprint(request)
        with transaction.atomic():
            record, answer = _claim(request, key, fingerprint)
            if answer is not None:
                return answer
            response = view_method(self, request, *args, **kwargs)
            if 200 <= response.status_code < 300:
                body = getattr(response, "data", None)
                record.status_code = response.status_code
                record.response_body = json.loads(JSONRenderer().render(body) or b"null")
                record.save(update_fields=["status_code", "response_body"])
            else:
                record.delete()
            return response

    return wrapper
