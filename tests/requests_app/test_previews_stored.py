"""The inbox's previews are stored (requests_app/previews.py): keyed by the request as it would
be approved and its pool's token (version and stored forecast's stale_at), in the cache every
process shares. A second load with no write in between simulates nothing; a write to one pool
recomputes that pool's previews only, and what it stores is what a fresh computation says."""

import dataclasses

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from prometheus_client import REGISTRY

from requests_app import previews
from requests_app.workflow import Status
from tests import factories
from tests.factories import in_days

INBOX = reverse("requests:inbox")


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()


def simulations() -> dict[str, float]:
    """The preview simulations counted so far, by kind (telemetry.instruments)."""
    return {
        kind: REGISTRY.get_sample_value("allotment_preview_simulations_total", {"kind": kind})
        or 0.0
        for kind in ("baseline", "impact", "competition")
    }


def simulated_since(before: dict[str, float]) -> dict[str, float]:
    return {kind: n - before[kind] for kind, n in simulations().items() if n != before[kind]}


def _shown(impact) -> dict:
    """What the page shows of a preview (not when it was computed)."""
    return {k: v for k, v in dataclasses.asdict(impact).items() if k != "computed_at"}


def test_stored_preview_equals_a_fresh_computation_after_a_change_to_its_pool(
    make_request, division_lead, research, pool, project
):
    # given: a request that fits from its start, its preview stored
    factories.DivisionShareFactory(division=research, pool=pool, gpus=64)
    req = make_request(Status.PENDING_DIVISION, gpus=32, start=in_days(1), end=in_days(3))
    rival = make_request(Status.PENDING_DIVISION, gpus=40, start=in_days(1), end=in_days(3))
    before = previews.approval_impacts([req, rival], user=division_lead)
    assert before[req.pk].outcome == "later"  # allocated at once, from day 1

    # when: an allocation fills the pool until day 5 (a write the forecast reads)
    factories.AllocationFactory(pool=pool, project=project, gpus=48, end=in_days(5))
    stored = previews.approval_impacts([req, rival], user=division_lead)

    # then: the stored preview moved with the pool and is what a cold computation says
    assert stored[req.pk].outcome == "never"  # its fixed period is now taken
    cache.clear()
    fresh = previews.approval_impacts([req, rival], user=division_lead)
    for r in (req, rival):
        assert _shown(stored[r.pk]) == _shown(fresh[r.pk])


def _second_load(client) -> tuple[int, dict]:
    """The queries and simulations of an inbox load that follows another with no write."""
    client.get(INBOX)
    before = simulations()
    with CaptureQueriesContext(connection) as captured:
        response = client.get(INBOX)
    assert response.status_code == 200
    items = response.context["items"]
    assert items and all(item["impact"] is not None for item in items)  # every row has one
    return len(captured), simulated_since(before)


def test_a_second_inbox_load_simulates_nothing_in_the_same_queries_for_3_and_30_requests(
    web, make_request, division_lead, research, pool
):
    # given: 3 pending requests on two pools, competing for them
    other = factories.PoolFactory(capacity=32)
    for p in (pool, other):
        factories.DivisionShareFactory(division=research, pool=p, gpus=32)
    for i in range(3):
        make_request(
            Status.PENDING_DIVISION,
            pool=(pool, other)[i % 2],
            gpus=24,
            start=in_days(1),
            end=in_days(3),
        )
    client = web(division_lead)

    # when / then: the second load runs no simulation
    small, simulated = _second_load(client)
    assert simulated == {}

    # ... and with 30 pending requests, the same number of queries and still none
    for i in range(27):
        make_request(
            Status.PENDING_DIVISION,
            pool=(pool, other)[i % 2],
            gpus=24,
            start=in_days(1),
            end=in_days(3),
        )
    large, simulated = _second_load(client)
    assert simulated == {}
    assert large == small


def test_a_change_to_one_pool_recomputes_that_pools_previews_only(
    make_request, division_lead, research, pool, project
):
    # given: two pending requests on each of two pools, their previews stored
    other = factories.PoolFactory(capacity=64)
    on_pool = [make_request(Status.PENDING_DIVISION, pool=pool, gpus=8) for _ in range(2)]
    on_other = [make_request(Status.PENDING_DIVISION, pool=other, gpus=8) for _ in range(2)]
    everything = [*on_pool, *on_other]
    first = previews.approval_impacts(everything, user=division_lead)

    # when: a capacity change on one pool only
    factories.CapacityChangeFactory(pool=pool, delta=16, effective_at=in_days(2))
    counted = simulations()
    second = previews.approval_impacts(everything, user=division_lead)

    # then: that pool's previews were simulated again (one baseline, one per request, and one
    # per competitor of each), the other pool's were read as stored
    assert simulated_since(counted) == {"baseline": 1, "impact": 2, "competition": 2}
    for r in on_pool:
        assert second[r.pk].computed_at > first[r.pk].computed_at
    for r in on_other:
        assert second[r.pk].computed_at == first[r.pk].computed_at
        assert _shown(second[r.pk]) == _shown(first[r.pk])


def test_competitors_are_the_oldest_few_pending_on_the_pool_whatever_their_number(
    make_request, executive, research
):
    # given: six requests pending on one pool, each too big to fit beside another, the oldest
    # first (their stage entered a minute apart), and one pending on another pool
    from datetime import timedelta

    from django.utils import timezone

    from requests_app.models import ComputeRequest

    big = factories.PoolFactory(capacity=512)
    factories.DivisionShareFactory(division=research, pool=big, gpus=512)
    pending = [
        make_request(
            Status.PENDING_EXECUTIVE,
            pool=big,
            gpus=300,
            start=in_days(1),
            end=in_days(11),
            flexible_start=True,
        )
        for _ in range(6)
    ]
    for i, r in enumerate(pending):
        ComputeRequest.objects.filter(pk=r.pk).update(
            stage_entered_at=timezone.now() - timedelta(minutes=60 - i)
        )
    make_request(Status.PENDING_EXECUTIVE, gpus=300, start=in_days(1), end=in_days(11))
    newest, oldest = pending[-1], pending[0]

    # when
    impacts = previews.approval_impacts([newest, oldest], user=executive)

    # then: each names the three oldest others on its pool (not itself, not another pool's)
    assert [c.request_id for c in impacts[newest.pk].competitors] == [r.pk for r in pending[:3]]
    assert [c.request_id for c in impacts[oldest.pk].competitors] == [r.pk for r in pending[1:4]]
