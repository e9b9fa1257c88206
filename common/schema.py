"""drf-spectacular postprocessing: document the error answers every endpoint can give, so the
OpenAPI schema tells clients (and Schemathesis) the truth without repeating it on each view.

- every operation: 403 (not signed in, or not allowed, with the reason);
- lists: 400 (an unknown query parameter, a filter value that is not valid, a page_size outside
  1..1000 or a cursor not of this list) and 404;
- operations on one object: 404 (no such object for you);
- writes: 400 (invalid input, by field), 404, 409 (the object's state does not allow it, or an
  Idempotency-Key still in progress), 413 (body too large), 415 (not JSON), 422 (an
  Idempotency-Key reused for another request) and 429 (throttled).
All of them have the JSON shape of common/api.py: {"detail": ..., "errors": {field: [...]}}."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
    "required": ["detail", "errors"],
}

DESCRIPTIONS = {
    "400": "Invalid input, with a message per field; nothing changed.",
    "403": "Not signed in, or not allowed (the reason is in `detail`).",
    "404": "No such object for you.",
    "409": "The object's state does not allow this now; nothing changed.",
    "413": "The request body is too large.",
    "415": "The body is not JSON.",
    "422": "This Idempotency-Key was used for a different request.",
    "429": "Too many calls; retry after the Retry-After header's seconds.",
}
WRITE = ("post", "put", "patch", "delete")


def document_error_responses(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ApiError", ERROR_SCHEMA)
    ref = {"$ref": "#/components/schemas/ApiError"}
    for path, operations in result.get("paths", {}).items():
        one_object = "{" in path
        for method, operation in operations.items():
            if method not in (*WRITE, "get"):
                continue
            codes = []
            if operation.get("security") != [{}] and operation.get("security", [None]) != []:
                codes.append("403")
            if method == "get":
                codes.append("404")
                if not one_object:
                    codes.append("400")
            else:
                codes += ["400", "404", "409", "413", "415", "422", "429"]
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(
                    code,
                    {
                        "description": DESCRIPTIONS[code],
                        "content": {"application/json": {"schema": ref}},
                    },
                )
    return result


# --- Pieces the views put in their own @extend_schema ---


class ApiErrorSerializer(serializers.Serializer):
    """The JSON error shape of every endpoint (api.py)."""

    detail = serializers.CharField()
    # A declared field, not Serializer.errors: DRF's metaclass moves fields out of the class body.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField())
    )


ERRORS = {
    400: OpenApiResponse(ApiErrorSerializer, description="Invalid input; nothing changed."),
    403: OpenApiResponse(ApiErrorSerializer, description="Not allowed, with the reason."),
}
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^\S(.*\S)?$"},
    OpenApiParameter.HEADER,
    required=False,
    description="1 to 255 characters. Send the same key again and the call has the effect of one.",
)
NOT_FOUND = {404: OpenApiResponse(ApiErrorSerializer, description="No such object for you.")}
