from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.utils import timezone

from allocator.models import Allocation, CapacityChange, Pool
from allocator.selectors import horizon, pools_status
from allocator.shares import balance, daily_load, pool_summaries
from common.charts import Bar, Point, bar_chart, step_chart, weekly_rows
from org.roles import roles_of
from requests_app.models import ComputeRequest
from requests_app.selectors import inbox_for

EXPIRY_WINDOW = timedelta(days=14)
UPCOMING_LIMIT = 10
MY_REQUESTS_LIMIT = 10


def _may_see_project(roles, *, team_id: int, division_id: int, confidential: bool) -> bool:
    """PRODUCT.md section 2: a confidential project is seen by its team, its division's leads,
    executives and compute ops (admins operate the installation and see everything)."""
    return (
        not confidential
        or roles.member_of(team_id)
        or roles.leads(division_id)
        or roles.is_executive
        or roles.is_compute_ops
        or roles.is_admin
    )


def _selected_pool(raw: str | None, pools: list[Pool]) -> Pool | None:
    if raw and raw.isdigit() and len(raw) < 19:
        return next((p for p in pools if p.pk == int(raw)), None)
    return None


@login_required
def overview(request):
    """The landing page (PRODUCT.md section 5). A bounded number of queries whatever the number
    of pools, allocations or requests: every per-pool figure comes from bulk reads
    (pools_status: 3 queries, pool_summaries: 2, the chart series: 1, shares: 2) and every list
    is capped. The sums are made in PostgreSQL (allocator.shares)."""
    now = timezone.now()
    user = request.user
    roles = roles_of(user)
    days = horizon().days

    pools = list(Pool.objects.all())
    statuses = pools_status(pools, at=now)
    summaries = pool_summaries(pools, origin=now, until=now + timedelta(days=days))

    # Capacity against commitments: one pool (?pool=<id>) or all pools summed.
    chosen = _selected_pool(request.GET.get("pool"), pools)
    scope = chosen.name if chosen is not None else "all pools"
    points = (
        [Point(*p) for p in daily_load([chosen] if chosen else pools, origin=now, days=days)]
        if pools
        else []
    )
    capacity_chart = step_chart(
        points,
        id_prefix="capacity-chart",
        title=f"Capacity and commitments, {scope}, next {days} days",
        desc=(
            f"Step line: GPUs installed each day ({scope}); filled area: GPUs committed to "
            "allocations, scheduled ones included. Each day shows its lowest capacity and its "
            "highest commitment. The table below lists the same numbers by week."
        ),
    )

    # Each division's holding against its share, per pool (or only the chosen pool).
    balances = balance(
        origin=now, pools=[chosen] if chosen else pools, summaries=summaries, with_reclaim=False
    )
    share_rows = [row for pb in balances for row in pb.rows]
    holdings_chart = bar_chart(
        [
            Bar(
                label=f"{row.pool.name} · {row.division.name}",
                value=row.held_now,
                reference=row.share,
                scale=summaries[row.pool.pk].capacity_now,
            )
            for row in share_rows
        ],
        id_prefix="holdings-chart",
        title="Each division's holding against its share, per pool",
        desc=(
            "For each pool and division, a bar of the GPUs held now on the scale of the pool's "
            "capacity, and a marker at the division's share. Red bars are above the share. "
            "The table below lists the same numbers."
        ),
    )

    arrivals = list(
        CapacityChange.objects.filter(effective_at__gt=now, delta__gt=0)
        .select_related("pool")
        .order_by("effective_at", "id")[:UPCOMING_LIMIT]
    )
    expiries = list(
        Allocation.objects.filter(
            state=Allocation.State.ACTIVE, end__gt=now, end__lte=now + EXPIRY_WINDOW
        )
        .select_related("pool", "project__team")
        .order_by("end", "id")[:UPCOMING_LIMIT]
    )
    for allocation in expiries:
        project = allocation.project
        allocation.project_visible = _may_see_project(
            roles,
            team_id=project.team_id,
            division_id=project.team.division_id,
            confidential=project.confidential,
        )

    my_requests = list(
        ComputeRequest.objects.filter(requester=user)
        .select_related("project", "pool")
        .order_by("-created_at", "-id")[:MY_REQUESTS_LIMIT]
    )
    approvals_waiting = (
        inbox_for(user).count() if roles.is_division_lead or roles.is_executive else None
    )

    return render(
        request,
        "common/overview.html",
        {
            "pools": statuses,
            "chosen_pool": chosen,
            "all_pools": pools,
            "capacity_chart": capacity_chart,
            "capacity_rows": weekly_rows(points),
            "holdings_chart": holdings_chart,
            "share_rows": share_rows,
            "arrivals": arrivals,
            "expiries": expiries,
            "expiry_days": EXPIRY_WINDOW.days,
            "my_requests": my_requests,
            "approvals_waiting": approvals_waiting,
            "days": days,
        },
    )


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
