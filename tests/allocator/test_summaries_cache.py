"""The whole-lab summaries kept per pool in the cache (allocator/shares/cached.py) equal the
uncached computation after every kind of write and as time passes the instants that change
them, and the whole-lab pages read only the pools that changed."""

from datetime import timedelta

import pytest
from django.utils import timezone

from allocator import services
from allocator.models import AllocationChange
from allocator.selectors import horizon
from allocator.shares import cached as cached_module
from allocator.shares import (
    cached_daily_load,
    cached_pool_summaries,
    cached_reclaim_lists,
    daily_load,
    division_share_set,
    pool_summaries,
    reclaim_lists,
)
from allocator.shares.cached import day_start
from org.models import Division
from tests import factories

pytestmark = pytest.mark.django_db

DAYS = 90


def _figures(summary):
    return (
        summary.capacity_now,
        summary.max_capacity,
        dict(summary.division_now),
        dict(summary.division_peaks),
    )


def assert_cache_matches(pools, origin, excess=None):
    """Every cached figure at `origin` equals the uncached one."""
    until = origin + horizon()
    cached = cached_pool_summaries(pools, origin=origin)
    plain = pool_summaries(pools, origin=origin, until=until)
    for pool in pools:
        assert _figures(cached[pool.pk]) == _figures(plain[pool.pk]), pool
    divisions = list(Division.objects.all())
    if excess is None:
        excess = {
            (p.pk, d.pk): plain[p.pk].division_peak(d.pk) - 8 for p in pools for d in divisions
        }
    assert cached_reclaim_lists(excess, cached) == {
        k: reclaim_lists(excess, origin=origin, until=until).get(k, []) for k in excess
    }
    assert cached_daily_load(pools, days=DAYS, now=origin) == daily_load(
        pools, origin=day_start(origin), days=DAYS
    )


@pytest.fixture
def lab(team, other_team, research, applications, executive):
    """Three pools with allocations of both divisions now and later, made before any cache."""
    now = timezone.now()
    pools = [factories.PoolFactory(capacity=128) for _ in range(3)]
    for i, pool in enumerate(pools):
        for division in (research, applications):
            factories.DivisionShareFactory(division=division, pool=pool, gpus=16)
        factories.AllocationFactory(
            pool=pool, project__team=team, gpus=16 + i, start=now - timedelta(days=2)
        )
        factories.AllocationFactory(
            pool=pool,
            project__team=other_team,
            gpus=8,
            start=now + timedelta(days=3),
            end=now + timedelta(days=40),
        )
    return pools


def _approved(pool, project, **kwargs):
    kwargs.setdefault("gpus", 8)
    kwargs.setdefault("start", timezone.now() - timedelta(minutes=5))
    kwargs.setdefault("end", timezone.now() + timedelta(days=10))
    return factories.AllocationChangeFactory(
        pool=pool, project=project, executive_reviewed=True, **kwargs
    )


def test_grant_extend_release_reclaim_each_show_at_once(lab, project, requester, ops):
    pool = lab[0]
    assert_cache_matches(lab, timezone.now())  # warm

    # a grant
    change = _approved(pool, project)
    assert services.allocation_change_apply(change_id=change.pk) == "applied"
    assert_cache_matches(lab, timezone.now())

    # an extension
    change.refresh_from_db()
    allocation = change.allocation
    extension = _approved(
        pool,
        project,
        kind=AllocationChange.Kind.EXTENSION,
        target_allocation=allocation,
        gpus=allocation.gpus,
        start=allocation.end,
        end=allocation.end + timedelta(days=5),
    )
    assert services.allocation_change_apply(change_id=extension.pk) == "applied"
    assert_cache_matches(lab, timezone.now())

    # a partial release
    services.allocation_release(allocation_id=allocation.pk, actor=requester, gpus=4)
    assert_cache_matches(lab, timezone.now())

    # a reclaim taking effect at once
    other = _approved(lab[1], project, gpus=12)
    services.allocation_change_apply(change_id=other.pk)
    other.refresh_from_db()
    services.allocation_reclaim(
        allocation_id=other.allocation_id, actor=ops, new_gpus=0, reason="r", notice_hours=0
    )
    assert_cache_matches(lab, timezone.now())


def test_capacity_change_shows_at_once(lab, ops):
    assert_cache_matches(lab, timezone.now())
    services.capacity_change_create(
        pool_id=lab[2].pk,
        kind="arrival",
        delta=64,
        effective_at=timezone.now() + timedelta(days=7),
        actor=ops,
    )
    assert_cache_matches(lab, timezone.now())


def test_share_change_shows_at_once_in_the_reclaim_lists(lab, research, executive):
    # given the reclaim lists cached at the shares of now
    pool = lab[0]
    now = timezone.now()
    assert_cache_matches(lab, now, excess=None)
    # when an executive lowers a share to nothing
    division_share_set(actor=executive, division_id=research.pk, pool_id=pool.pk, gpus=0)
    # then the excess asked now (peak - 0) gets its own list, equal to the uncached one
    summaries = cached_pool_summaries(lab, origin=timezone.now())
    excess = {(pool.pk, research.pk): summaries[pool.pk].division_peak(research.pk)}
    assert cached_reclaim_lists(excess, summaries) == reclaim_lists(
        excess, origin=summaries[pool.pk].origin, until=summaries[pool.pk].until
    )
    assert cached_reclaim_lists(excess, summaries)[(pool.pk, research.pk)]


def test_time_passing_an_event_instant_shows(team, other_team, research):
    # given a pool whose figures change at known instants after t0
    t0 = timezone.now().replace(microsecond=0)
    h = horizon()
    pool = factories.PoolFactory(capacity=64)
    factories.AllocationFactory(
        pool=pool, project__team=team, gpus=8, start=t0 + timedelta(hours=2), end=t0 + h
    )
    factories.AllocationFactory(
        pool=pool,
        project__team=team,
        gpus=4,
        start=t0 - timedelta(days=1),
        end=t0 + timedelta(hours=5),
    )
    factories.CapacityChangeFactory(
        pool=pool, kind="repair", delta=-16, effective_at=t0 + timedelta(hours=3)
    )
    # one that enters the horizon an hour after t0, bigger than anything held in it
    factories.AllocationFactory(
        pool=pool,
        project__team=other_team,
        gpus=40,
        start=t0 + h + timedelta(hours=1),
        end=t0 + h + timedelta(days=3),
    )
    assert_cache_matches([pool], t0)  # cached at t0
    assert cached_pool_summaries([pool], origin=t0)[pool.pk].valid_until == t0 + timedelta(hours=1)

    # when time passes each instant (and just before it), then the cache says what is true
    for offset in [
        timedelta(minutes=59),
        timedelta(hours=1, seconds=1),
        timedelta(hours=2) - timedelta(seconds=1),
        timedelta(hours=2),
        timedelta(hours=3),
        timedelta(hours=5),
        timedelta(days=1, hours=6),  # the next UTC day for the chart
    ]:
        assert_cache_matches([pool], t0 + offset)


def test_an_unchanged_pool_is_not_recomputed(lab, project, monkeypatch):
    # given every pool cached
    now = timezone.now()
    cached_pool_summaries(lab, origin=now)
    recomputed = []
    real = cached_module.pool_summaries

    def spy(pools, **kwargs):
        recomputed.append(sorted(p.pk for p in pools))
        return real(pools, **kwargs)

    monkeypatch.setattr(cached_module, "pool_summaries", spy)
    # when nothing changed, then nothing is recomputed
    cached_pool_summaries(lab, origin=now + timedelta(seconds=1))
    assert recomputed == []
    # when one pool changes, then only that pool is
    change = _approved(lab[1], project)
    services.allocation_change_apply(change_id=change.pk)
    cached_pool_summaries(lab, origin=timezone.now())
    assert recomputed == [[lab[1].pk]]


def test_a_lost_cache_is_recomputed(lab):
    from django.core.cache import cache

    now = timezone.now()
    cached_pool_summaries(lab, origin=now)
    cache.delete_many(
        [
            f"{cached_module.PREFIX}:pool:{m}"
            for m in cached_module.pool_marks(p.pk for p in lab).values()
        ]
    )
    assert_cache_matches(lab, now)


def test_moving_a_team_to_another_division_shows(lab, team, applications):
    now = timezone.now()
    assert_cache_matches(lab, now)
    team.division = applications
    team.save()
    assert_cache_matches(lab, now + timedelta(seconds=1))


# --- the pages: the same queries with 3 pools and with 30 when nothing changed --------------


def _pages_lab(n, team, other_team, research, applications):
    for _ in range(n):
        pool = factories.PoolFactory(capacity=64)
        factories.DivisionShareFactory(division=research, pool=pool, gpus=30)
        factories.DivisionShareFactory(division=applications, pool=pool, gpus=50)
        factories.AllocationFactory(pool=pool, project__team=team, gpus=40)
        factories.AllocationFactory(pool=pool, project__team=other_team, gpus=8)


# (url, persona, warm queries)
PAGES = [
    # session, user, role grants, memberships, pools, the pools' cache marks, waiting demand,
    # divisions, shares, arrivals, expiries, my requests, approvals count (2), unread count
    ("/", "executive", 15),
    # session, user, role grants, memberships, pools, divisions, shares, cache marks, unread
    ("/balance/?cluster=all", "executive", 9),
    # session, user, count, page, pools, shares, cache marks
    ("/api/v1/divisions/", "executive", 7),
]


@pytest.mark.parametrize("n_pools", [3, 30])
@pytest.mark.parametrize(("url", "persona", "queries"), PAGES)
def test_pages_read_no_pool_when_nothing_changed(
    client,
    request,
    url,
    persona,
    queries,
    n_pools,
    team,
    other_team,
    research,
    applications,
    django_assert_num_queries,
):
    _pages_lab(n_pools, team, other_team, research, applications)
    client.force_login(request.getfixturevalue(persona))
    assert client.get(url).status_code == 200  # fills the cache
    with django_assert_num_queries(queries):
        response = client.get(url)
    assert response.status_code == 200


@pytest.mark.parametrize("changed", [1, 5])
@pytest.mark.parametrize(
    ("url", "persona", "queries"),
    # the warm count, and for the pools that changed: their summaries (2), and on the overview
    # the chart (1), on the balance and the API their reclaim lists (1)
    [(u, p, q + 3) for u, p, q in PAGES],
)
def test_pages_after_some_pools_changed(
    client,
    request,
    url,
    persona,
    queries,
    changed,
    team,
    other_team,
    research,
    applications,
    ops,
    django_assert_num_queries,
):
    from allocator.models import Pool

    _pages_lab(30, team, other_team, research, applications)
    client.force_login(request.getfixturevalue(persona))
    assert client.get(url).status_code == 200
    for pool in list(Pool.objects.all())[:changed]:
        services.capacity_change_create(
            pool_id=pool.pk,
            kind="arrival",
            delta=8,
            effective_at=timezone.now() + timedelta(days=1),
            actor=ops,
        )
    with django_assert_num_queries(queries):
        response = client.get(url)
    assert response.status_code == 200
