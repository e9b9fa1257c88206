"""The ops console's connector page: each pool's scheduler status, drift found and repaired,
errors with their command and output, what is not enforced yet, and "Sync now"."""

import csv

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from allocator.policies import can_manage_pools
from org.visibility import sees_every_project

from . import selectors
from .models import PoolConnector


def _require_ops(request):
    # Like the rest of the ops console: others are not told it exists.
    if not can_manage_pools(request.user):
        raise Http404


@login_required
def connectors_page(request):
    _require_ops(request)
    return render(
        request,
        "connectors/ops_connectors.html",
        {"connectors": selectors.connectors_overview(), "nav_section": "ops"},
    )


@login_required
@require_POST
def connector_sync_now(request, pk):
    _require_ops(request)
    connector = get_object_or_404(PoolConnector.objects.select_related("pool"), pk=pk)
    from .services import connector_sync_request

    connector_sync_request(connector=connector, actor=request.user)
    messages.success(
        request,
        f"Sync of {connector.pool} queued: the result shows here within a few seconds.",
    )
    return redirect("connectors:ops")


CHART_WIDTH = 600


@login_required
def usage_report_page(request):
    """GPU-hours allocated and used per division, team or project and month (compute ops and
    executives); `?format=csv` downloads the same rows."""
    if not sees_every_project(request.user):
        raise Http404
    from .usage import LEVELS, usage_report

    level = request.GET.get("level", "project")
    if level not in LEVELS:
        level = "project"
    rows = usage_report(level=level)
    if request.GET.get("format") == "csv":
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="gpu-usage-by-{level}.csv"'
        writer = csv.writer(response)
        writer.writerow([level, "month", "gpu_hours_allocated", "gpu_hours_used"])
        for row in rows:
            # A leading = + - @ would run as a formula in a spreadsheet.
            name = row["name"]
            if name[:1] in "=+-@":
                name = "'" + name
            writer.writerow(
                [name, row["month"], row["allocated"], row["used"] if row["measured"] else ""]
            )
        return response
    totals: dict[str, list[float]] = {}
    for row in rows:
        t = totals.setdefault(row["name"], [0.0, 0.0])
        t[0] += row["allocated"]
        t[1] += row["used"]
    peak = max((t[0] for t in totals.values()), default=0) or 1
    bars = [
        {
            "name": name,
            "y": 28 * i,
            "allocated": round(a, 1),
            "used": round(u, 1),
            "allocated_w": round(CHART_WIDTH * a / peak, 1),
            "used_w": round(CHART_WIDTH * min(u, a if a else u) / peak, 1),
        }
        for i, (name, (a, u)) in enumerate(sorted(totals.items(), key=lambda kv: -kv[1][0])[:30])
    ]
    return render(
        request,
        "connectors/usage_report.html",
        {
            "rows": rows,
            "level": level,
            "levels": LEVELS,
            "bars": bars,
            "chart_height": 28 * len(bars) + 4,
            "chart_width": CHART_WIDTH + 220,
            "nav_section": "ops",
        },
    )
