"""Test settings only: counts every response >= 500 into the figure "5xx responses". First in
MIDDLEWARE, so it also sees the 500 Django makes of an uncaught exception."""

from tests.support import figures


class Count5xxMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # /readyz saying "not ready" is its job, not a server error.
        if response.status_code >= 500 and not (
            response.status_code == 503 and request.path == "/readyz"
        ):
            figures.add("5xx responses")
            figures.set(
                "last 5xx response", f"{response.status_code} {request.method} {request.path}"[:200]
            )
        return response
