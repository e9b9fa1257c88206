"""Routing on submit (PRODUCT.md section 3): division review always; executive review too when
the share rule, the large-request rule or urgency holds — tested at their boundaries."""

import pytest

from requests_app import services
from requests_app.workflow import Status
from tests import factories


@pytest.fixture
def big_pool(research):
    pool = factories.PoolFactory(cluster="west", gpu_model="H200", capacity=1024)
    factories.DivisionShareFactory(division=research, pool=pool, gpus=1024)
    return pool


def _submit(make_request, requester, **fields):
    req = make_request(Status.DRAFT, **fields)
    services.request_submit(user=requester, request_id=req.pk)
    req.refresh_from_db()
    return req


@pytest.mark.parametrize(("gpus", "needs"), [(255, False), (256, True)])
def test_large_request_boundary(make_request, requester, big_pool, gpus, needs):
    # given a share that is never exceeded / when submitted
    req = _submit(make_request, requester, pool=big_pool, gpus=gpus)

    # then
    assert req.status == Status.PENDING_DIVISION
    assert req.needs_executive is needs
    if needs:
        assert req.executive_reasons == [
            "asks for 256 GPUs, at or above the 256-GPU large-request mark"
        ]
    else:
        assert req.executive_reasons == []


def test_large_request_mark_is_a_setting(make_request, requester, big_pool, settings):
    # given
    settings.ALLOTMENT = {**settings.ALLOTMENT, "LARGE_REQUEST_GPUS": 100}

    # when
    req = _submit(make_request, requester, pool=big_pool, gpus=100)

    # then
    assert req.needs_executive
    assert "100-GPU" in req.executive_reasons[0]


@pytest.mark.parametrize(("gpus", "needs"), [(8, False), (9, True)])
def test_share_rule_boundary(make_request, requester, research, project, pool, gpus, needs):
    # given Research holds 24 of its 32-GPU share of east/H100 over the whole range
    factories.DivisionShareFactory(division=research, pool=pool, gpus=32)
    factories.AllocationFactory(
        pool=pool, project=project, gpus=24, start=factories.in_days(-1), end=factories.in_days(60)
    )

    # when it asks for 8 (exactly at the share) or 9 (one above)
    req = _submit(make_request, requester, gpus=gpus)

    # then
    assert req.needs_executive is needs
    if needs:
        assert req.executive_reasons == [
            "would put Research at 52% of east/H100 (33 of 64 GPUs), above its 50% share (32 GPUs)"
        ]


def test_share_rule_counts_only_the_requested_range(
    make_request, requester, research, project, pool
):
    # given Research's holding peaks after the request ends
    factories.DivisionShareFactory(division=research, pool=pool, gpus=32)
    factories.AllocationFactory(
        pool=pool, project=project, gpus=30, start=factories.in_days(30), end=factories.in_days(40)
    )

    # when a request ends before that peak
    req = _submit(
        make_request, requester, gpus=8, start=factories.in_days(2), end=factories.in_days(20)
    )

    # then
    assert not req.needs_executive


@pytest.mark.parametrize(("priority", "needs"), [("high", False), ("urgent", True)])
def test_urgent_needs_executive(make_request, requester, big_pool, priority, needs):
    # when
    req = _submit(make_request, requester, pool=big_pool, priority=priority)

    # then
    assert req.needs_executive is needs
    assert req.executive_reasons == (["is marked urgent"] if needs else [])


def test_all_reasons_are_stored(make_request, requester, pool):
    # given no share at all for Research in east/H100 (a share of 0)
    # when an urgent request is submitted
    req = _submit(make_request, requester, priority="urgent", gpus=8)

    # then both reasons are kept, in words
    assert len(req.executive_reasons) == 2
    assert req.executive_reasons[0].startswith("would put Research at 12% of east/H100 (8 of 64")
    assert req.executive_reasons[1] == "is marked urgent"


@pytest.mark.parametrize(("days_after", "needs"), [(0, False), (1, True)])
def test_request_ending_after_the_projects_expected_end_needs_executive(
    make_request, requester, big_pool, project, days_after, needs
):
    # given Atlas is expected to end on a date; a request ending that day is fine, one running
    # into the next day is not
    start = factories.in_days(2)
    project.expected_end = factories.in_days(20).date()
    project.save(update_fields=["expected_end"])
    from datetime import UTC, datetime, time, timedelta

    end = datetime.combine(project.expected_end, time(23, 0), tzinfo=UTC) + timedelta(
        days=days_after
    )
    # when
    req = _submit(make_request, requester, pool=big_pool, start=start, end=end)
    # then the reason is in words
    assert req.needs_executive is needs
    expected = (
        [
            f"runs until {end:%Y-%m-%d}, after project Atlas's expected end "
            f"({project.expected_end:%Y-%m-%d})"
        ]
        if needs
        else []
    )
    assert req.executive_reasons == expected
