"""The baselines a page is compared with: the cheapest views that still go through the whole
middleware stack, sign the user in and run one trivial query.

- `baseline`: the session (the HTML pages' way in), for the in-process page timings.
- `api_baseline`: DRF with token authentication (the API's way in for scripts), for the HTTP
  runs through gunicorn next to the API lists.
"""

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpResponse
from rest_framework.authentication import TokenAuthentication
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response


def _select_one() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (value,) = cursor.fetchone()
    return value


@login_required
def baseline(request):
    return HttpResponse(f"ok {_select_one()}", content_type="text/plain")


@api_view(["GET"])
@authentication_classes([TokenAuthentication])
@permission_classes([IsAuthenticated])
def api_baseline(request):
    return Response({"ok": _select_one()})
