from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render

from allocator.selectors import pools_status


@login_required
def overview(request):
    return render(request, "common/overview.html", {"pools": pools_status()})


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("select 1")
    return JsonResponse({"status": "ok"})
