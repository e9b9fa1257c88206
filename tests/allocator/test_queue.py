"""The waiting queue: priority then approval order, conservative backfilling (allocator/planning.py),
served when capacity frees; positions for the requests pages."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator import selectors, services
from allocator.models import Allocation, AllocationChange
from allocator.planning import Demand, plan_queue, reservation
from allocator.timeline import Span, Timeline
from tests import factories
from tests.factories import in_days
from tests.support.invariants import violations

BASE = datetime(2030, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def at(hour):
    return BASE + hour * H


# --- the pure rule ---


def test_fixed_demand_that_cannot_be_placed_on_record_holds_nothing():
    # given 10 GPUs, 6 held over [0, 100) (this test once reserved the 8's window: the old
    # rule blocked the 2 behind it, keeping 4 GPUs idle for a request that could not use them)
    timeline = Timeline(at(0), [(at(-1), 10)], [Span(at(0), at(100), 6)])
    earlier = Demand(1, 8, at(10), 40 * H)  # does not fit on record: only 4 free
    overlapping = Demand(2, 2, at(20), 10 * H)
    elsewhere = Demand(3, 4, at(110), 10 * H)
    # when planned in queue order
    plan = plan_queue(timeline, [earlier, overlapping, elsewhere])
    # then the 8 waits holding nothing, and both behind it are served
    assert set(plan.waiting) == {1}
    assert plan.reserved == {}
    assert plan.placed == {2: Span(at(20), at(30), 2), 3: Span(at(110), at(120), 4)}


def test_demo_pool_serves_small_requests_beside_an_unservable_big_one():
    # given central/A100 as on the demo: 256 GPUs, 64 held all month
    month = 30 * 24
    timeline = Timeline(at(0), [(at(-1), 256)], [Span(at(0), at(month), 64)])
    big = Demand(4, 200, at(24), 20 * 24 * H)  # fixed: 192 free, it cannot be placed on record
    small = Demand(12, 8, at(48), 10 * 24 * H)
    # when planned, the big one first (higher priority, approved earlier)
    plan = plan_queue(timeline, [big, small])
    # then the 8 is allocated at once and the 200 waits, holding nothing
    assert plan.placed == {12: Span(at(48), at(48 + 240), 8)}
    assert list(plan.waiting) == [4]
    assert plan.reserved == {}


def test_six_requests_for_16_are_all_allocated_from_the_192_idle():
    timeline = Timeline(at(0), [(at(-1), 256)], [Span(at(0), at(24 * 30), 64)])
    big = Demand(4, 200, at(0), 24 * 20 * H)
    sixteens = [Demand(20 + i, 16, at(24), 24 * 14 * H) for i in range(6)]
    plan = plan_queue(timeline, [big, *sixteens])
    assert sorted(plan.placed) == [20, 21, 22, 23, 24, 25]
    assert all(span == Span(at(24), at(24 + 24 * 14), 16) for span in plan.placed.values())
    assert plan.timeline.min_free(at(24), at(24 + 24 * 14)) == 192 - 6 * 16


def test_small_requests_fill_up_to_the_free_gpus_and_no_further():
    # given 192 free: twelve requests for 16 fit (192), the thirteenth does not
    timeline = Timeline(at(0), [(at(-1), 256)], [Span(at(0), at(1000), 64)])
    big = Demand(1, 200, at(0), 500 * H)
    sixteens = [Demand(10 + i, 16, at(0), 100 * H) for i in range(13)]
    plan = plan_queue(timeline, [big, *sixteens])
    assert len(plan.placed) == 12
    assert set(plan.waiting) == {1, 22}


def test_flexible_big_request_holds_its_earliest_placement_on_record():
    # given 256 GPUs, 64 held over [0, 100): a flexible request for all 256 fits from hour 100
    timeline = Timeline(at(0), [(at(-1), 256)], [Span(at(0), at(100), 64)])
    big = Demand(1, 256, at(0), 50 * H, latest_start=at(200))
    before = Demand(2, 16, at(0), 100 * H)  # within the 192 idle until the big one starts
    across = Demand(3, 16, at(90), 20 * H)  # needs GPUs the big one holds from hour 100
    after = Demand(4, 16, at(150), 10 * H)  # once the big one ends
    # when planned, the big one first
    plan = plan_queue(timeline, [big, before, across, after])
    # then the big one holds [100, 150) x 256 from its earliest placement; nothing behind it
    # takes GPUs there, and what fits around it is served
    assert plan.placed[1] == Span(at(100), at(150), 256)
    assert plan.placed[2] == Span(at(0), at(100), 16)
    assert plan.placed[4] == Span(at(150), at(160), 16)
    assert set(plan.waiting) == {3}


def test_waiting_flexible_request_holds_nothing_past_its_window():
    # given 10 GPUs all held over [0, 100) (this test once reserved [100, 110) for the head,
    # a start it may not take: its window closes at hour 50)
    timeline = Timeline(at(0), [(at(-1), 10)], [Span(at(0), at(100), 10)])
    head = Demand(1, 10, at(0), 10 * H, latest_start=at(50))
    later = Demand(2, 5, at(100), 5 * H)
    plan = plan_queue(timeline, [head, later])
    assert plan.reserved == {}
    assert set(plan.waiting) == {1}
    assert plan.placed == {2: Span(at(100), at(105), 5)}


def test_reservation_is_the_placement_on_record_or_nothing():
    # given 10 GPUs, 6 held over [0, 100)
    record = Timeline(at(0), [(at(-1), 10)], [Span(at(0), at(100), 6)])
    # a fixed demand holds its period only where it fits on record
    assert reservation(record, Demand(1, 8, at(10), 40 * H)) is None
    assert reservation(record, Demand(2, 4, at(10), 40 * H)) == Span(at(10), at(50), 4)
    # a flexible one holds its earliest placement within its window, or nothing
    flexible = Demand(3, 8, at(10), 40 * H, latest_start=at(120))
    assert reservation(record, flexible) == Span(at(100), at(140), 8)
    closed = Demand(4, 8, at(10), 40 * H, latest_start=at(90))
    assert reservation(record, closed) is None


def test_queue_order_decides_who_gets_the_last_free_gpus():
    # given 12 free: two requests for 8 over the same hours; the first in queue order wins
    timeline = Timeline(at(0), [(at(-1), 12)], [])
    urgent_later = Demand(7, 8, at(0), 10 * H)
    normal_earlier = Demand(3, 8, at(0), 10 * H)
    plan = plan_queue(timeline, [urgent_later, normal_earlier])  # queue order: urgent first
    assert plan.placed == {7: Span(at(0), at(10), 8)}
    assert set(plan.waiting) == {3}
    plan = plan_queue(timeline, [normal_earlier, urgent_later])
    assert plan.placed == {3: Span(at(0), at(10), 8)}


def test_impossible_demand_blocks_no_one():
    timeline = Timeline(at(0), [(at(-1), 10)], [])
    plan = plan_queue(timeline, [Demand(1, 50, at(0), 10 * H), Demand(2, 10, at(0), 10 * H)])
    assert 1 in plan.waiting and 1 not in plan.reserved
    assert 2 in plan.placed


demands = st.lists(
    st.tuples(st.integers(0, 40), st.integers(1, 20), st.integers(1, 12), st.booleans()),
    min_size=1,
    max_size=7,
)


@settings(max_examples=300, deadline=None)
@given(
    holdings=st.lists(
        st.tuples(st.integers(0, 40), st.integers(1, 30), st.integers(1, 8)), max_size=5
    ),
    queue=demands,
)
def test_placements_fit_around_every_earlier_demand(holdings, queue):
    """Each placed demand fits together with the real holdings and every earlier demand's
    placement or reservation; dropping the demands behind an earlier one changes nothing it
    gets (later ones never make an earlier one start later)."""
    spans = [Span(at(s), at(s + n), g) for s, n, g in holdings]
    timeline = Timeline(at(0), [(at(-1), 12)], spans)
    ds = [
        Demand(i, g, at(s), n * H, latest_start=at(s + 30) if flex else None)
        for i, (s, n, g, flex) in enumerate(queue)
    ]
    plan = plan_queue(timeline, ds)
    ahead: list[Span] = []
    for d in ds:
        if d.key in plan.placed:
            span = plan.placed[d.key]
            with_ahead = Timeline(at(0), [(at(-1), 12)], [*spans, *ahead])
            assert with_ahead.fits(span.gpus, span.start, span.end)
            ahead.append(span)
        elif d.key in plan.reserved:
            ahead.append(plan.reserved[d.key])
    for cut in range(1, len(ds)):
        prefix = plan_queue(timeline, ds[:cut])
        for d in ds[:cut]:
            assert plan.placed.get(d.key) == prefix.placed.get(d.key)
            assert plan.reserved.get(d.key) == prefix.reserved.get(d.key)


# --- in the database ---


def _waiting(make_change, **kwargs):
    change = make_change(**kwargs)
    services.allocation_change_apply(change_id=change.pk)
    change.refresh_from_db()
    assert change.status == "waiting", change.status
    return change


def test_release_serves_the_queue_in_priority_then_approval_order(
    make_change, pool, project, requester
):
    # given a full pool and three waiting requests for the same 40 GPUs
    blocker = factories.AllocationFactory(
        pool=pool, project=project, gpus=64, start=in_days(-1), end=in_days(60)
    )
    low_old = _waiting(make_change, gpus=40, priority=0, approved_at=in_days(-3))
    high_new = _waiting(make_change, gpus=40, priority=2, approved_at=in_days(-1))
    high_old = _waiting(make_change, gpus=40, priority=2, approved_at=in_days(-2))
    assert selectors.queue_positions([low_old.pk, high_new.pk, high_old.pk]) == {
        high_old.pk: 1,
        high_new.pk: 2,
        low_old.pk: 3,
    }
    # when the blocker is released
    services.allocation_release(allocation_id=blocker.pk, actor=requester)
    # then the high-priority, earlier-approved one is served; the others keep waiting
    statuses = dict(AllocationChange.objects.values_list("pk", "status"))
    assert statuses[high_old.pk] == "applied"
    assert statuses[high_new.pk] == "waiting" and statuses[low_old.pk] == "waiting"
    assert selectors.queue_positions([high_new.pk, low_old.pk]) == {high_new.pk: 1, low_old.pk: 2}
    assert violations() == []


def test_new_apply_is_served_beside_a_waiting_request_that_cannot_be_placed(
    make_change, pool, project
):
    # given 60 of 64 held, and a request for 8 waiting over days 1-30 (this test once kept the
    # later 4 waiting behind it, with 4 GPUs idle that the 8 could never use on record)
    factories.AllocationFactory(
        pool=pool, project=project, gpus=60, start=in_days(-1), end=in_days(60)
    )
    head = _waiting(make_change, gpus=8, approved_at=in_days(-2))
    # when a later approval asks for 4 over an overlapping range (4 are free)
    later = make_change(gpus=4, start=in_days(5), end=in_days(10))
    outcome = services.allocation_change_apply(change_id=later.pk)
    # then it is allocated at once; the 8 keeps waiting, first in the queue
    assert outcome == "applied"
    assert selectors.queue_positions([head.pk, later.pk]) == {head.pk: 1}
    assert violations() == []


def test_new_apply_does_not_take_the_last_gpus_from_an_earlier_request_in_the_same_serve(
    make_change, pool, project, requester
):
    # given a full pool and a request for 40 waiting; a later one for 40 waits too
    blocker = factories.AllocationFactory(
        pool=pool, project=project, gpus=64, start=in_days(-1), end=in_days(60)
    )
    head = _waiting(make_change, gpus=40, approved_at=in_days(-2))
    later = _waiting(make_change, gpus=40, approved_at=in_days(-1))
    # when the blocker is released, 64 free: room for one of them
    services.allocation_release(allocation_id=blocker.pk, actor=requester)
    # then the earlier one gets them
    head.refresh_from_db()
    later.refresh_from_db()
    assert (head.status, later.status) == ("applied", "waiting")


def test_backfill_outside_the_heads_window_is_allocated(make_change, pool, project):
    factories.AllocationFactory(
        pool=pool, project=project, gpus=60, start=in_days(-1), end=in_days(60)
    )
    _waiting(make_change, gpus=8, start=in_days(1), end=in_days(30))
    later = make_change(gpus=4, start=in_days(31), end=in_days(40))
    assert services.allocation_change_apply(change_id=later.pk) == "applied"


def test_higher_priority_approval_goes_ahead(make_change, pool, project):
    factories.AllocationFactory(
        pool=pool, project=project, gpus=60, start=in_days(-1), end=in_days(60)
    )
    head = _waiting(make_change, gpus=8, priority=0)
    urgent = make_change(gpus=4, priority=3)
    assert services.allocation_change_apply(change_id=urgent.pk) == "applied"
    assert selectors.queue_positions([head.pk, urgent.pk]) == {head.pk: 1}


def test_waiting_request_whose_period_passed_fails(make_change, pool, project, ops):
    factories.AllocationFactory(
        pool=pool, project=project, gpus=64, start=in_days(-10), end=in_days(60)
    )
    change = _waiting(make_change, gpus=8, start=in_days(-5), end=in_days(1))
    AllocationChange.objects.filter(pk=change.pk).update(end=in_days(-1))
    services.queues_serve_all()
    change.refresh_from_db()
    assert change.status == "failed" and "ended" in change.last_error


def test_queue_positions_ignore_non_waiting_and_unknown(make_change):
    change = make_change()
    assert selectors.queue_positions([change.pk, 987654]) == {}
    assert selectors.queue_positions([]) == {}


def test_queue_positions_is_one_query(make_change, pool, project, django_assert_num_queries):
    factories.AllocationFactory(
        pool=pool, project=project, gpus=64, start=in_days(-1), end=in_days(60)
    )
    ids = [_waiting(make_change, gpus=8).pk for _ in range(5)]
    with django_assert_num_queries(1):
        positions = selectors.queue_positions(ids)
    assert sorted(positions.values()) == [1, 2, 3, 4, 5]


def test_future_arrival_recorded_serves_the_queue(make_change, pool, project, ops):
    # given a full pool and a flexible request waiting
    factories.AllocationFactory(
        pool=pool, project=project, gpus=64, start=in_days(-1), end=in_days(200)
    )
    change = _waiting(
        make_change,
        gpus=16,
        start=in_days(1),
        end=in_days(11),
        flexible_start=True,
        executive_reviewed=True,
    )
    # when compute ops record 32 GPUs arriving in 20 days
    arrival = services.capacity_change_create(
        pool_id=pool.pk, kind="arrival", delta=32, effective_at=in_days(20), actor=ops
    )
    # then the request is allocated from the arrival, and the arrival waits to be "served" when it takes effect
    change.refresh_from_db()
    assert change.status == "applied"
    assert change.allocation.start == arrival.effective_at
    assert arrival.served_at is None


def test_serve_all_marks_capacity_changes_that_took_effect(pool):
    change = factories.CapacityChangeFactory(pool=pool, delta=8, effective_at=in_days(-0.01))
    assert services.queues_serve_all() >= 1
    change.refresh_from_db()
    assert change.served_at is not None


@pytest.mark.parametrize("kind", ["release", "expire", "reclaim"])
def test_every_freeing_event_serves_the_queue(kind, make_change, pool, project, requester, ops):
    # given 64 held by one allocation ending in 1 hour, and a request waiting for its GPUs
    start = in_days(-1)
    blocker = factories.AllocationFactory(
        pool=pool, project=project, gpus=64, start=start, end=in_days(30)
    )
    waiting = _waiting(make_change, gpus=8, start=in_days(0.5), end=in_days(20))
    # when capacity frees
    if kind == "release":
        services.allocation_release(allocation_id=blocker.pk, actor=requester)
    elif kind == "expire":
        Allocation.objects.filter(pk=blocker.pk).update(end=in_days(-0.001))
        assert services.allocations_expire() == 1
    else:
        services.allocation_reclaim(
            allocation_id=blocker.pk, actor=ops, new_gpus=32, reason="Rebalancing", notice_hours=0
        )
    # then the waiting request is served
    waiting.refresh_from_db()
    assert waiting.status == "applied"
    assert violations() == []
