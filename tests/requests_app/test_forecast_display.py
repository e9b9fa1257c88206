"""The forecast where people look (issue 8): the request page, the requests list and the API
show the expected start and why, with the assumptions, in a bounded number of queries."""

import pytest
from django.core.cache import cache
from django.urls import reverse

from allocator import services
from allocator.waiting import when
from requests_app.workflow import Status
from tests import factories
from tests.factories import in_days


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()


@pytest.fixture
def waiting_request(make_request, pool, project, research):
    """A 32-GPU request waiting behind 40 GPUs held until day 5 (64 in the pool)."""
    factories.DivisionShareFactory(division=research, pool=pool, gpus=64)
    factories.AllocationFactory(pool=pool, project=project, gpus=40, end=in_days(5))
    req = make_request(Status.APPROVED, gpus=32, start=in_days(1), end=in_days(20))
    services.allocation_change_apply(change_id=req.change_id)
    req.refresh_from_db()
    assert req.status == Status.WAITING
    return req


def test_request_page_shows_expected_start_and_why(web, requester, waiting_request):
    page = web(requester).get(reverse("requests:detail", args=[waiting_request.pk]))
    text = page.content.decode()
    assert "Expected start:" in text
    assert "when project Atlas&#x27;s 40 GPUs of east/H100 end" in text
    assert "Assumes no new approvals and no early releases." in text


def test_not_within_the_horizon_says_why(web, requester, make_request, pool, project, research):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=64)
    held = factories.AllocationFactory(pool=pool, project=project, gpus=60, end=in_days(50))
    req = make_request(Status.APPROVED, gpus=32, start=in_days(1), end=in_days(20))
    services.allocation_change_apply(change_id=req.change_id)
    text = web(requester).get(reverse("requests:detail", args=[req.pk])).content.decode()
    # (the instants are read from the rows: a minute may turn between two in_days calls)
    assert (
        f"Not served within the horizon. Only 4 of the 32 GPUs are free on {when(req.start)}, "
        f"28 short. It needs them until {when(req.end)}. It could be served with a start "
        f"from {when(held.end)} (all 32 GPUs for its 19 days), or with 4 GPUs now."
    ) in text
    assert "Expected start: not within the horizon" in text


def test_a_fixed_start_served_late_says_how_much_of_its_period_it_gets(
    web, api, requester, waiting_request
):
    # given 32 GPUs asked over days 1-20, fixed, behind 40 GPUs held until day 5
    # when the requester opens the page, the list and the API
    page = web(requester).get(reverse("requests:detail", args=[waiting_request.pk]))
    text = page.content.decode()
    # then the top of the page, beside the status, says the start and the days it gets
    top = text[: text.index('id="h-what"')]
    assert "Expected start: <time datetime=" in top
    assert "Late start: 15 of its 19 days." in top
    assert "4 days late: 15 of its 19 days." in top
    assert f"Only 24 of the 32 GPUs are free on {when(waiting_request.start)}, 8 short." in top
    listing = web(requester).get(reverse("requests:list")).content.decode()
    assert "15 of 19 days" in listing
    body = api(requester).get(f"/api/v1/requests/{waiting_request.pk}/").json()
    assert (body["forecast_days_served"], body["forecast_days_asked"]) == (15.0, 19.0)
    assert "4 days late: 15 of its 19 days" in body["forecast_reason"]


def test_confidential_projects_are_not_named_in_reasons(web, outsider, waiting_request, project):
    project.confidential = True
    project.save()
    cache.clear()
    # the outsider cannot see the confidential request at all; a visible one in the same pool
    # names the blocker only as "a confidential project"
    other = factories.ProjectFactory(team=outsider.memberships.first().team, name="Open")
    req = factories.ComputeRequestFactory(
        project=other,
        pool=waiting_request.pool,
        requester=outsider,
        status=Status.WAITING,
        change=factories.AllocationChangeFactory(
            pool=waiting_request.pool,
            project=other,
            gpus=8,
            start=in_days(1),
            end=in_days(3),
            status="waiting",
        ),
    )
    text = web(outsider).get(reverse("requests:detail", args=[req.pk])).content.decode()
    assert "Atlas" not in text


def test_allocated_later_shows_its_start(web, requester, make_request):
    req = make_request(Status.ALLOCATED, gpus=8, start=in_days(3), end=in_days(9))
    text = web(requester).get(reverse("requests:detail", args=[req.pk])).content.decode()
    assert "Allocated: its GPUs are held for it from" in text


@pytest.mark.parametrize("status", [Status.DRAFT, Status.PENDING_DIVISION, Status.REJECTED])
def test_nothing_to_forecast_before_approval(api, requester, make_request, status):
    req = make_request(status)
    body = api(requester).get(f"/api/v1/requests/{req.pk}/").json()
    assert body["forecast_start"] is None and body["forecast_reason"] is None


def test_api_carries_forecast_start_and_reason(api, requester, waiting_request):
    body = api(requester).get(f"/api/v1/requests/{waiting_request.pk}/").json()
    assert body["forecast_start"].startswith(str(in_days(5).date()))
    assert "40 GPUs of east/H100 end" in body["forecast_reason"]
    assert "no early releases" in body["forecast_reason"]
    listed = api(requester).get("/api/v1/requests/").json()["results"]
    assert [r["forecast_start"] for r in listed if r["id"] == waiting_request.pk] == [
        body["forecast_start"]
    ]


def test_schema_documents_the_forecast_fields(api, requester):
    schema = api(requester).get("/api/schema/", {"format": "json"}).json()
    props = schema["components"]["schemas"]["RequestOutput"]["properties"]
    assert "no new approvals" in props["forecast_start"]["description"]
    assert props["forecast_reason"]["nullable"] is True


def test_list_is_bounded_and_cached(
    web, requester, make_request, project, research, django_assert_max_num_queries
):
    # given waiting requests in five pools
    for _ in range(5):
        pool = factories.PoolFactory(capacity=16)
        factories.DivisionShareFactory(division=research, pool=pool, gpus=16)
        factories.AllocationFactory(pool=pool, project=project, gpus=16, end=in_days(4))
        for gpus in (8, 4, 16):
            req = make_request(
                Status.APPROVED, pool=pool, gpus=gpus, start=in_days(1), end=in_days(9)
            )
            services.allocation_change_apply(change_id=req.change_id)
    client = web(requester)
    # when the list is shown, cold and then warm
    with django_assert_max_num_queries(20) as cold:
        text = client.get(reverse("requests:list")).content.decode()
    with django_assert_max_num_queries(20) as warm:
        client.get(reverse("requests:list"))
    # then it shows expected starts, and the warm page skips the simulation's queries
    assert "Expected start" in text and "no early releases" in text
    assert len(warm.captured_queries) <= len(cold.captured_queries) - 6
