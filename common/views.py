"""The app's own error pages and the liveness probe: no domain import (a leaf package)."""

from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("select 1")
    return JsonResponse({"status": "ok"})


def bad_request(request, exception=None):
    """400 raised by Django itself (e.g. too many form fields): JSON under /api/."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Bad request.", "errors": {}}, status=400)
    from django.views.defaults import bad_request as default_bad_request

    return default_bad_request(request, exception)


def server_error(request):
    """500: JSON under /api/, the plain page elsewhere (never reached when all goes well)."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Server error.", "errors": {}}, status=500)
    from django.views.defaults import server_error as default_server_error

    return default_server_error(request)


def not_found(request, exception=None):
    """404 for every URL: JSON under /api/ (the API's error shape), the app's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found.", "errors": {}}, status=404)
    return render(request, "404.html", status=404)
