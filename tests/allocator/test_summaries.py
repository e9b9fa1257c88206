"""The whole-lab pages' sums made in PostgreSQL (allocator.shares.pool_summaries, reclaim_lists,
daily_load) give the same numbers as the Timeline the engine uses (pool_forecasts,
common.charts.daily_points) and as the reclaim rule written out plainly here, on generated pools: past and future capacity
changes, allocations in every state starting before, at and after the origin, instants shared
by several events and events exactly on day boundaries."""

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from allocator.loaders import HOLDING_STATES
from allocator.models import Allocation, CapacityChange, Reclaim
from allocator.shares import (
    balance,
    daily_load,
    pool_forecasts,
    pool_summaries,
    reclaim_lists,
    summed_timeline,
)
from allocator.shares.reclaim import as_held
from allocator.shares.summaries import pool_steps
from allocator.timeline import Span, Step, Timeline
from common.charts import daily_points
from tests import factories

pytestmark = pytest.mark.django_db

DAYS = 90


def expected_reclaim(held, *, division_id, excess):
    """The reclaim rule (allocator/shares/reclaim.py) spelled out in Python, as the oracle: the
    division's active allocations, largest first, then latest end, then highest id, taken while
    the GPUs taken so far do not cover the excess."""
    if excess <= 0:
        return []
    mine = sorted(
        (r for r in held if r.division_id == division_id and r.state == Allocation.State.ACTIVE),
        key=lambda r: (-r.gpus, -r.end.timestamp(), -r.id),
    )
    chosen, covered = [], 0
    for row in mine:
        if covered >= excess:
            break
        chosen.append(row)
        covered += row.gpus
    return chosen


def _lab(seed: int, origin):
    rng = random.Random(seed)
    divisions = [factories.DivisionFactory() for _ in range(3)]
    teams = [factories.TeamFactory(division=d) for d in divisions for _ in range(2)]
    projects = [factories.ProjectFactory(team=t) for t in teams for _ in range(2)]
    pools = [factories.PoolFactory(capacity=rng.choice([64, 128, 256])) for _ in range(3)]
    # Instants reused on purpose: the origin, whole days from it, and a few shared ones.
    shared = [
        origin + timedelta(days=rng.randint(-20, 120), hours=rng.randint(0, 23)) for _ in range(6)
    ]

    def instant():
        kind = rng.random()
        if kind < 0.15:
            return origin
        if kind < 0.35:
            return origin + timedelta(days=rng.randint(-10, 100))
        if kind < 0.55:
            return rng.choice(shared)
        return origin + timedelta(minutes=rng.randint(-40 * 1440, 110 * 1440))

    for pool in pools:
        for _ in range(rng.randint(0, 5)):
            delta = rng.choice([-32, -8, 8, 16, 64])
            factories.CapacityChangeFactory(
                pool=pool,
                kind=CapacityChange.Kind.ARRIVAL if delta > 0 else CapacityChange.Kind.REPAIR,
                delta=delta,
                effective_at=instant(),
            )
        for _ in range(rng.randint(5, 40)):
            start = instant()
            end = instant()
            if end <= start:
                end = start + timedelta(hours=rng.randint(1, 24 * 60))
            factories.AllocationFactory(
                pool=pool,
                project=rng.choice(projects),
                gpus=rng.choice([1, 4, 8, 16, 32]),
                start=start,
                end=end,
                state=rng.choice(
                    [Allocation.State.ACTIVE] * 4
                    + [
                        Allocation.State.ENDED,
                        Allocation.State.RELEASED,
                        Allocation.State.RECLAIMED,
                    ]
                ),
            )
    return pools, divisions, rng


@pytest.mark.parametrize("seed", range(8))
def test_summaries_match_the_timeline(seed):
    # given
    origin = timezone.now().replace(microsecond=0)
    until = origin + timedelta(days=DAYS)
    pools, divisions, rng = _lab(seed, origin)

    # when
    summaries = pool_summaries(pools, origin=origin, until=until)
    forecasts = pool_forecasts(pools, origin=origin, until=until)

    # then
    for pool in pools:
        s, f = summaries[pool.pk], forecasts[pool.pk]
        assert (s.capacity_now, s.max_capacity, s.held_now) == (
            f.capacity_now,
            f.max_capacity,
            f.held_now,
        )
        for d in divisions:
            assert s.division_held_now(d.pk) == f.division_held_now(d.pk)
            assert s.division_peak(d.pk) == f.division_peak(d.pk)

    # and the allocations to reclaim, for excesses from nothing to more than the division holds
    wanted = {(p.pk, d.pk): rng.choice([0, 1, 8, 20, 60, 10_000]) for p in pools for d in divisions}
    lists = reclaim_lists(wanted, origin=origin, until=until)
    for (pool_id, division_id), excess in wanted.items():
        expected = expected_reclaim(forecasts[pool_id].held, division_id=division_id, excess=excess)
        assert as_held(lists.get((pool_id, division_id), [])) == expected


@pytest.mark.parametrize("seed", range(8))
def test_daily_load_matches_the_chart_of_the_timeline(seed):
    # given
    origin = timezone.now().replace(microsecond=0)
    pools, _, _ = _lab(seed, origin)
    forecasts = pool_forecasts(pools, origin=origin, until=origin + timedelta(days=DAYS))

    # when / then: all pools summed, and each pool alone
    expected = daily_points(summed_timeline(forecasts, origin), origin, DAYS)
    assert daily_load(pools, origin=origin, days=DAYS) == [
        (p.at, p.capacity, p.held) for p in expected
    ]
    for pool in pools:
        expected = daily_points(forecasts[pool.pk].timeline, origin, DAYS)
        assert daily_load([pool], origin=origin, days=DAYS) == [
            (p.at, p.capacity, p.held) for p in expected
        ]


def test_origin_with_microseconds_and_empty_pools():
    # given a pool with nothing and a pool with one allocation, at an origin with microseconds
    origin = timezone.now()
    empty = factories.PoolFactory()
    pool = factories.PoolFactory(capacity=16)
    factories.AllocationFactory(pool=pool, gpus=4, start=origin, end=origin + timedelta(days=1))

    # when
    summaries = pool_summaries([empty, pool], origin=origin)
    load = daily_load([empty, pool], origin=origin, days=3)

    # then
    assert (summaries[empty.pk].capacity_now, summaries[empty.pk].held_now) == (0, 0)
    assert (summaries[pool.pk].capacity_now, summaries[pool.pk].held_now) == (16, 4)
    assert [(c, h) for _, c, h in load] == [(16, 4), (16, 0), (16, 0)]


def test_balance_queries_do_not_grow_with_the_lab(django_assert_num_queries, team):
    # given a lab, then one twice its size (every division above its share: reclaim lists)
    def grow():
        for _ in range(3):
            pool = factories.PoolFactory(capacity=64)
            for _ in range(4):
                factories.AllocationFactory(pool=pool, project__team=team, gpus=8)

    # pools, divisions, shares, the cache marks; on a miss the summaries (2) and the reclaims
    grow()
    with django_assert_num_queries(7):
        small = balance()
    grow()

    # when / then: the new pools miss, the old ones hit
    with django_assert_num_queries(7):
        large = balance()
    assert len(large) == 2 * len(small)
    assert all(row.reclaim for pb in large for row in pb.rows if row.division == team.division)


def test_balance_query_count_does_not_depend_on_who_is_over(django_assert_num_queries, team):
    # given a pool where the division stays within its share
    pool = factories.PoolFactory(capacity=64)
    factories.AllocationFactory(pool=pool, project__team=team, gpus=8)
    factories.DivisionShareFactory(division=team.division, pool=pool, gpus=64)

    # when / then: the same seven queries as when divisions stand above their shares
    with django_assert_num_queries(7):
        (pb,) = balance()
    assert all(row.reclaim == [] for row in pb.rows)


# --- the pool page's step series (allocator.shares.summaries.pool_steps) ---------------------


def _with_scheduled_reclaims(pools, origin, rng):
    """Scheduled reclaims on about a third of the holding allocations: all back or some kept,
    with and without a new end, effective before the start, inside and after the end; a few
    allocations with two (the latest counts); and applied or cancelled ones, which do not."""
    ops = factories.UserFactory()
    for allocation in Allocation.objects.filter(pool__in=pools).order_by("id"):
        if rng.random() > 0.35:
            continue
        for _ in range(rng.choice([1, 1, 1, 2])):
            span = allocation.end - allocation.start
            effective = allocation.start + span * rng.choice([-0.2, 0.0, 0.3, 0.5, 1.0, 1.3])
            new_end = rng.choice(
                [None, None, allocation.end - span * 0.1, effective + span * 0.1, effective]
            )
            Reclaim.objects.create(
                allocation=allocation,
                new_gpus=rng.choice([0, 0, max(allocation.gpus // 2, 1), allocation.gpus]),
                new_end=new_end,
                effective_at=effective,
                reason="generated",
                status=rng.choice([Reclaim.Status.SCHEDULED] * 4 + [Reclaim.Status.CANCELLED]),
                created_by=ops,
            )


def expected_pool_steps(pool, *, origin, until):
    """The pool chart as it was built in Python: a Timeline of every holding allocation
    overlapping the window, a scheduled reclaim cutting its span at the effective time (the
    latest scheduled one per allocation), the steps before `until`."""
    held = list(
        Allocation.objects.filter(
            pool=pool, state__in=HOLDING_STATES, end__gt=origin, start__lt=until
        )
    )
    pending = {
        r.allocation_id: r
        for r in Reclaim.objects.filter(
            status=Reclaim.Status.SCHEDULED, allocation__in=held
        ).order_by("effective_at", "id")
    }
    spans = []
    for a in held:
        r = pending.get(a.pk)
        if r is None or not a.start < r.effective_at < a.end:
            spans.append(Span(a.start, a.end, a.gpus))
            continue
        spans.append(Span(a.start, r.effective_at, a.gpus))
        if r.new_gpus:
            spans.append(Span(r.effective_at, min(r.new_end or a.end, a.end), r.new_gpus))
    changes = CapacityChange.objects.filter(pool=pool).values_list("effective_at", "delta")
    timeline = Timeline(origin, list(changes), spans)
    return [s for s in timeline.steps if s.at < until]


@pytest.mark.parametrize("seed", range(8))
def test_pool_steps_match_the_timeline(seed):
    # given generated pools with scheduled reclaims, and the pool page's window
    now = timezone.now().replace(microsecond=0)
    pools, _, rng = _lab(seed, now)
    _with_scheduled_reclaims(pools, now, rng)
    origin, until = now - timedelta(days=7), now + timedelta(days=DAYS)

    for pool in pools:
        # when
        steps = pool_steps(pool.pk, origin=origin, until=until)

        # then every step (instant, capacity, held) is the Timeline's
        assert steps == expected_pool_steps(pool, origin=origin, until=until)
        assert steps[0].at == origin


def test_pool_steps_of_an_empty_pool_and_an_origin_with_microseconds():
    pool = factories.PoolFactory(capacity=0)
    CapacityChange.objects.filter(pool=pool).delete()
    origin = timezone.now()
    assert pool_steps(pool.pk, origin=origin, until=origin + timedelta(days=1)) == [
        Step(origin, 0, 0)
    ]
