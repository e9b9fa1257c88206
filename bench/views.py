"""The baseline a page is compared with: the cheapest view that still goes through the whole
middleware stack, signs the user in from the session and runs one trivial query."""

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpResponse


@login_required
def baseline(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (value,) = cursor.fetchone()
    return HttpResponse(f"ok {value}", content_type="text/plain")
