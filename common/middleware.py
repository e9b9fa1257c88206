"""Request-level guards that run before any view."""

from django.conf import settings
from django.http import HttpResponse, JsonResponse


class BodySizeLimitMiddleware:
    """A body larger than DATA_UPLOAD_MAX_MEMORY_SIZE answers 413 before anything reads it.

    Django only notices an oversized body when something reads `request.body` or `request.POST`,
    and then answers a generic 400; DRF's JSON parser reads the stream directly and never checks
    at all. Refusing on the declared Content-Length gives clients the right status (and a JSON
    error on the API) and keeps huge bodies out of memory."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            message = f"The request body is too large (at most {limit} bytes)."
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": message, "errors": {}}, status=413)
            return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
