"""HTTP metrics, and 503 (not 500) while the database is unreachable."""

from __future__ import annotations

import time

from telemetry import instruments

PROBES = {"/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics"}


class RequestMetricsMiddleware:
    """Requests by view (the URL's name, never the raw path: ids would make a label per
    object), method and status, with their latency."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.monotonic()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        if match:
            view = match.view_name or match.url_name or "unnamed"
        else:  # answered by ProbeMiddleware, or no URL matched
            view = PROBES.get(request.path_info, "unmatched")
        instruments.http_requests.labels(view, request.method, str(response.status_code)).inc()
        instruments.http_latency.labels(view).observe(time.monotonic() - started)
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        """The log lines of this request (and of the tasks it sends) name the view and the
        object ids in its URL, e.g. view=request-approve pk=42."""
        import structlog

        match = request.resolver_match
        ids = {k: v for k, v in view_kwargs.items() if k == "pk" or k.endswith("_id")}
        structlog.contextvars.bind_contextvars(view=match.view_name if match else None, **ids)


class ProbeMiddleware:
    """/healthz, /readyz and /metrics are answered here, before the host check and the HTTPS
    redirect: an orchestrator probes a pod by its IP over plain HTTP (a redirect would count as
    healthy to the kubelet, a refused Host header as dead). /metrics keeps its own access rule."""

    def __init__(self, get_response):
        self.get_response = get_response
        from . import views

        self.views = {path: getattr(views, name) for path, name in PROBES.items()}

    def __call__(self, request):
        view = self.views.get(request.path_info)
        if view is not None:
            return view(request)
        return self.get_response(request)
