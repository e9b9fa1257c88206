"""What approving would do, shown to deciders before they click (issue 8): the division's share
before and after (the engine's share rule, holding allocations only), whether it would be
allocated at once, later or wait, and which waiting requests it would delay and by how much."""

import pytest
from django.core.cache import cache
from django.urls import reverse

from allocator import services
from requests_app import previews
from requests_app.workflow import Status
from tests import factories
from tests.factories import in_days


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()


@pytest.fixture
def full_until_day_5(pool, project, research):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=64)
    return factories.AllocationFactory(pool=pool, project=project, gpus=40, end=in_days(5))


@pytest.fixture
def waiting_32(make_request, full_until_day_5):
    req = make_request(Status.APPROVED, gpus=32, start=in_days(1), end=in_days(20))
    services.allocation_change_apply(change_id=req.change_id)
    req.refresh_from_db()
    assert req.status == Status.WAITING
    return req


def test_fitting_request_would_be_allocated_at_once(make_request, division_lead, full_until_day_5):
    req = make_request(Status.PENDING_DIVISION, gpus=8, start=in_days(1), end=in_days(3))
    impact = previews.approval_impacts([req], user=division_lead)[req.pk]
    assert impact.outcome == "later"  # at once, for its start tomorrow
    assert "allocated at once" in impact.sentence
    assert impact.delays == []
    assert impact.effect.peak_now == 40 and impact.effect.peak_after == 48


def test_urgent_request_delays_the_waiting_one(make_request, division_lead, waiting_32):
    # given 32 GPUs wait for day 5; an urgent 40-GPU request for days 1-10 is being decided
    req = make_request(
        Status.PENDING_DIVISION, gpus=40, start=in_days(1), end=in_days(10), priority="urgent"
    )
    impact = previews.approval_impacts([req], user=division_lead)[req.pk]
    # then it would wait for day 5 itself, and push the 32 GPUs to day 10: 5 days later
    assert impact.outcome == "waits"
    assert abs(impact.start - in_days(5)).total_seconds() < 60
    [delay] = impact.delays
    assert delay.request_id == waiting_32.pk
    assert abs(delay.by.total_seconds() - 5 * 86400) < 60
    assert delay.by_words == "by 5 days"


def test_low_priority_request_delays_no_one(make_request, division_lead, waiting_32):
    req = make_request(
        Status.PENDING_DIVISION, gpus=40, start=in_days(1), end=in_days(10), priority="low"
    )
    impact = previews.approval_impacts([req], user=division_lead)[req.pk]
    assert impact.delays == []


def test_share_effects_ignore_released_allocations(make_request, division_lead, pool, project):
    # given a released allocation over the range: it holds nothing any more
    factories.AllocationFactory(pool=pool, project=project, gpus=30, state="released")
    req = make_request(Status.PENDING_DIVISION, gpus=8, start=in_days(1), end=in_days(3))
    effect = previews.share_effects([req])[req.pk]
    assert effect.peak_now == 0 and effect.peak_after == 8


def test_request_page_shows_impact_to_the_decider_only(
    web, make_request, division_lead, requester, waiting_32
):
    req = make_request(
        Status.PENDING_DIVISION, gpus=40, start=in_days(1), end=in_days(10), priority="urgent"
    )
    page = web(division_lead).get(reverse("requests:detail", args=[req.pk])).content.decode()
    assert "If you approve it now" in page
    assert f"#{waiting_32.pk}</a>" in page and "by 5 days" in page
    page = web(requester).get(reverse("requests:detail", args=[req.pk])).content.decode()
    assert "If you approve it now" not in page


def test_inbox_shows_impact_in_bounded_queries(
    web, make_request, division_lead, research, project, django_assert_max_num_queries
):
    for _ in range(4):
        pool = factories.PoolFactory(capacity=32)
        factories.DivisionShareFactory(division=research, pool=pool, gpus=32)
        make_request(Status.PENDING_DIVISION, pool=pool, gpus=8, start=in_days(1), end=in_days(3))
    client = web(division_lead)
    # (cold: the pools' stored forecasts are computed first — allocator/forecast/stored.py —
    # then the what-ifs; warm, both are read)
    with django_assert_max_num_queries(34):
        page = client.get(reverse("requests:inbox")).content.decode()
    with django_assert_max_num_queries(20):
        client.get(reverse("requests:inbox"))
    assert page.count("It would be allocated at once") == 4
    assert "no early releases" in page


def test_two_pending_requests_that_cannot_both_fit_name_each_other(
    make_request, executive, research, web
):
    from allocator.waiting import when

    # given a 512-GPU pool, and two requests for 300 of it over the same days, both pending
    # executive review (the old preview told each "would be allocated at once")
    big = factories.PoolFactory(cluster="west", gpu_model="H200", capacity=512)
    factories.DivisionShareFactory(division=research, pool=big, gpus=512)
    first = make_request(
        Status.PENDING_EXECUTIVE,
        pool=big,
        gpus=300,
        start=in_days(1),
        end=in_days(11),
        flexible_start=True,
    )
    second = make_request(
        Status.PENDING_EXECUTIVE,
        pool=big,
        gpus=300,
        start=in_days(1),
        end=in_days(11),
        flexible_start=True,
    )
    # when the executive previews both
    impacts = previews.approval_impacts([first, second], user=executive)
    # then each names the other, and when it would start if the other went first
    [c1] = impacts[first.pk].competitors
    [c2] = impacts[second.pk].competitors
    assert c1.sentence == (
        f"If #{second.pk} (300 GPUs) is approved first, this one waits until {when(second.end)}."
    )
    assert c2.sentence == (
        f"If #{first.pk} (300 GPUs) is approved first, this one waits until {when(first.end)}."
    )
    page = web(executive).get(reverse("requests:detail", args=[first.pk])).content.decode()
    assert c1.sentence in page


def test_pending_requests_that_both_fit_do_not_compete(make_request, division_lead, research):
    big = factories.PoolFactory(cluster="west", gpu_model="H200", capacity=512)
    factories.DivisionShareFactory(division=research, pool=big, gpus=512)
    a = make_request(Status.PENDING_DIVISION, pool=big, gpus=100, start=in_days(1), end=in_days(3))
    make_request(Status.PENDING_DIVISION, pool=big, gpus=100, start=in_days(1), end=in_days(3))
    assert previews.approval_impacts([a], user=division_lead)[a.pk].competitors == []
