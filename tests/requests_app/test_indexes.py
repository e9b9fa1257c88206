"""The list pages read their first page from an index (docs/performance.md): with sorting and
sequential scans made prohibitively expensive, PostgreSQL can still answer the page's query
without a Sort node only if an index serves the ORDER BY. On a handful of rows the planner would
rightly prefer a sequential scan, hence the settings."""

import pytest
from django.db import connection
from django.db.models import Sum

from allocator.models import Allocation, AllocationChange
from allocator.selectors import waiting_demand
from requests_app import selectors
from requests_app.workflow import Status
from tests import factories

pytestmark = pytest.mark.django_db


def plan_of(queryset) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
    try:
        return queryset.explain()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_sort")


def test_requests_list_page_reads_the_recent_index(make_request, executive, requester):
    # given
    for _ in range(3):
        make_request(Status.PENDING_DIVISION)

    for user in (executive, requester):
        # when
        plan = plan_of(selectors.requests_visible_to(user).order_by("-created_at", "-id")[:25])

        # then
        assert "request_recent" in plan
        assert "Sort Key" not in plan


def test_inbox_page_reads_the_stage_age_index(make_request, division_lead, executive):
    # given
    make_request(Status.PENDING_DIVISION)
    make_request(Status.PENDING_EXECUTIVE)

    for user in (division_lead, executive):
        # when
        plan = plan_of(selectors.inbox_for(user)[:25])

        # then
        assert "request_stage_age" in plan
        assert "Sort Key" not in plan


def test_allocations_api_page_reads_the_recent_index():
    # when
    plan = plan_of(
        Allocation.objects.select_related("pool", "project").order_by("-start", "-id")[:50]
    )

    # then
    assert "allocation_recent" in plan
    assert "Sort Key" not in plan


def test_waiting_demand_reads_the_waiting_gpus_index(pool):
    # given a waiting change
    factories.AllocationChangeFactory(pool=pool, status=AllocationChange.Status.WAITING)
    # when the overview's per-pool waiting demand is planned (bitmap scans of the status
    # index priced out too)
    queryset = (
        AllocationChange.objects.filter(status="waiting", pool_id__in=[pool.pk])
        .values("pool_id")
        .annotate(total=Sum("gpus"))
    )
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_bitmapscan = off")
    try:
        plan = plan_of(queryset)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET enable_bitmapscan")
    # then it reads the covering index, and says what waits
    assert "change_waiting_gpus" in plan
    assert waiting_demand([pool]) == {pool.pk: 8}
