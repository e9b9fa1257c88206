"""The stored forecast (allocator/forecast/stored.py): after every kind of change it equals a
fresh full computation, only the changed pool is computed again, time passing an event makes it
stale exactly then, reading it costs one query whatever the number of pools, and concurrent
readers and writers (real PostgreSQL, threads with their own connections) neither compute twice
nor leave a wrong result behind."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from allocator import forecast, services, tasks
from allocator.forecast import stored
from allocator.models import Allocation, AllocationChange, StoredForecast
from allocator.shares.decision import division_share_set
from tests import factories
from tests.factories import in_days

TICK = timedelta(microseconds=1)


def fresh(pool, now):
    """The forecast computed from scratch, as before stored forecasts."""
    return forecast.forecast_pools([pool.pk], now=now)[pool.pk].outcomes


def row(pool) -> StoredForecast:
    return StoredForecast.objects.get(pool_id=pool.pk)


def busy_pool(research, project, requester):
    """16 GPUs, 12 held for 4 days, a queue of three and an arrival on day 6."""
    pool = factories.PoolFactory(capacity=16)
    factories.DivisionShareFactory(division=research, pool=pool, gpus=16)
    factories.AllocationFactory(pool=pool, project=project, gpus=12, end=in_days(4))
    factories.CapacityChangeFactory(pool=pool, delta=8, effective_at=in_days(6))
    for gpus, start, days, flexible in ((8, 1, 5, False), (12, 2, 9, True), (6, 1, 3, False)):
        change = factories.AllocationChangeFactory(
            pool=pool,
            project=project,
            requested_by=requester,
            gpus=gpus,
            start=in_days(start),
            end=in_days(start + days),
            flexible_start=flexible,
        )
        services.allocation_change_apply(change_id=change.pk)
    assert AllocationChange.objects.filter(pool=pool, status="waiting").exists()
    return pool


@pytest.fixture
def pools(research, project, requester):
    return busy_pool(research, project, requester), busy_pool(research, project, requester)


def _apply(pool, ctx):
    change = factories.AllocationChangeFactory(
        pool=pool, project=ctx["project"], requested_by=ctx["requester"], gpus=2, start=in_days(0.5)
    )
    services.allocation_change_apply(change_id=change.pk)


def _new_waiting(pool, ctx):
    change = factories.AllocationChangeFactory(
        pool=pool, project=ctx["project"], requested_by=ctx["requester"], gpus=10, start=in_days(1)
    )
    services.allocation_change_apply(change_id=change.pk)
    assert AllocationChange.objects.get(pk=change.pk).status == "waiting"


def _release(pool, ctx):
    held = Allocation.objects.filter(pool=pool, state="active").order_by("pk").first()
    services.allocation_release(allocation_id=held.pk, actor=ctx["requester"])


def _capacity(pool, ctx):
    services.capacity_change_create(
        pool_id=pool.pk, kind="arrival", delta=4, effective_at=in_days(2), actor=ctx["ops"]
    )


def _share(pool, ctx):
    division_share_set(
        actor=ctx["executive"], division_id=ctx["research"].pk, pool_id=pool.pk, gpus=8
    )


def _withdrawal(pool, ctx):
    # A change leaves the queue (whatever the path: a cancellation, the admin).
    change = AllocationChange.objects.filter(pool=pool, status="waiting").order_by("pk").first()
    AllocationChange.objects.filter(pk=change.pk).update(status="cancelled")


def _priority(pool, ctx):
    change = AllocationChange.objects.filter(pool=pool, status="waiting").order_by("-pk").first()
    AllocationChange.objects.filter(pk=change.pk).update(priority=3)


def _reclaim(pool, ctx):
    held = Allocation.objects.filter(pool=pool, state="active").order_by("pk").first()
    services.allocation_reclaim(
        allocation_id=held.pk, actor=ctx["ops"], new_gpus=2, reason="for the queue", notice_hours=24
    )


@pytest.mark.parametrize(
    "change",
    [_apply, _new_waiting, _release, _capacity, _share, _withdrawal, _priority, _reclaim],
    ids=lambda f: f.__name__.strip("_"),
)
def test_after_each_kind_of_change_the_stored_forecast_is_a_fresh_one(
    change, pools, project, requester, research, ops, executive
):
    changed, other = pools
    # given both pools' forecasts stored
    first = timezone.now()
    stored.outcomes_for_pools([changed.pk, other.pk], now=first)
    # when one pool changes
    ctx = dict(
        project=project, requester=requester, research=research, ops=ops, executive=executive
    )
    change(changed, ctx)
    later = first + timedelta(seconds=1)
    got = stored.outcomes_for_pools([changed.pk, other.pk], now=later)
    # then the changed pool was computed again and equals a fresh computation; the other pool
    # was not computed again (and still equals its fresh computation at its instant)
    assert row(changed).computed_at == later
    assert got[changed.pk] == fresh(changed, later)
    assert row(other).computed_at == first
    assert got[other.pk] == fresh(other, first)


def test_time_passing_an_event_makes_it_stale_exactly_then(pools):
    pool, _ = pools
    first = timezone.now()
    stored.outcomes_for_pools([pool.pk], now=first)
    event = row(pool).stale_at
    # the first event is the held allocation's end... or a start of the queue: in any case ahead
    assert event is not None and first < event <= in_days(4) + timedelta(seconds=5)
    # between now and the event the same rows forecast the same (nothing here starts "now")
    middle = first + (event - first) / 2
    assert all(o.decided_at != first for o in fresh(pool, first).values())
    assert fresh(pool, middle) == fresh(pool, first)
    stored.outcomes_for_pools([pool.pk], now=event - TICK)
    assert row(pool).computed_at == first
    # once the clock reaches it, the next reader computes it again, as a fresh one would
    got = stored.outcomes_for_pools([pool.pk], now=event)
    assert row(pool).computed_at == event
    assert got[pool.pk] == fresh(pool, event)


def test_reading_stored_forecasts_is_one_query_whatever_the_number_of_pools(
    research, project, requester, django_assert_num_queries
):
    few = [busy_pool(research, project, requester)]
    many = [*few, *(busy_pool(research, project, requester) for _ in range(4))]
    now = timezone.now()
    stored.outcomes_for_pools([p.pk for p in many], now=now)
    for group in (few, many):
        # the pools and their stored rows, joined (allocator/forecast/stored.py, _READ)
        with django_assert_num_queries(1):
            got = stored.outcomes_for_pools([p.pk for p in group], now=now)
        assert set(got) == {p.pk for p in group}
    # and a stale pool costs the same whatever the number of pools beside it: the read, the
    # row lock, the simulation's rows (6), the write
    factories.CapacityChangeFactory(pool=many[0], delta=1, effective_at=in_days(1))
    with django_assert_num_queries(9):
        stored.outcomes_for_pools([p.pk for p in many], now=now)


def test_the_worker_task_and_the_sweep_store_it(pools):
    pool, other = pools
    # when the worker's task runs for one pool (it is sent after an apply commits)
    tasks.refresh_forecast(pool.pk)
    assert row(pool).version == type(pool).objects.get(pk=pool.pk).version
    assert stored.stale_pools() == [other.pk]
    # then the sweep stores the rest, and a second sweep has nothing to do
    assert stored.refresh_stale() == 1
    assert stored.refresh_stale() == 0


def test_a_confidential_project_is_not_named_in_a_stored_forecast(research, project, requester):
    # given a request that starts when the project's GPUs end: its reason names the project
    pool = factories.PoolFactory(capacity=16)
    factories.DivisionShareFactory(division=research, pool=pool, gpus=16)
    factories.AllocationFactory(pool=pool, project=project, gpus=12, end=in_days(2))
    change = factories.AllocationChangeFactory(
        pool=pool,
        project=project,
        requested_by=requester,
        gpus=8,
        start=in_days(1),
        end=in_days(10),
    )
    services.allocation_change_apply(change_id=change.pk)
    reason = stored.outcomes_for_pools([pool.pk])[pool.pk][change.pk].reason
    assert f"project {project.name}" in reason
    # when the project becomes confidential, the stored reason no longer names it
    project.confidential = True
    project.save(update_fields=["confidential"])
    reason = stored.outcomes_for_pools([pool.pk])[pool.pk][change.pk].reason
    assert f"project {project.name}" not in reason
    assert "a confidential project" in reason


# --- concurrency, real PostgreSQL ------------------------------------------------------------


@pytest.fixture
def concurrent_pool(transactional_db):
    research = factories.DivisionFactory(name="Research", slug="research")
    team = factories.TeamFactory(division=research)
    project = factories.ProjectFactory(team=team)
    requester = factories.UserFactory()
    return busy_pool(research, project, requester), project, requester


def _in_thread(fn, errors):
    def run():
        try:
            fn()
        except Exception as error:  # reported by the test
            errors.append(error)
        finally:
            connections.close_all()

    return threading.Thread(target=run)


def test_two_readers_of_a_stale_pool_compute_it_once(concurrent_pool, monkeypatch):
    pool, _, _ = concurrent_pool
    computed = []
    simulate = stored.simulate

    def counting(state, *, now):
        computed.append(state.pool_id)
        return simulate(state, now=now)

    monkeypatch.setattr(stored, "simulate", counting)
    barrier = threading.Barrier(4)
    now = timezone.now()
    errors: list[Exception] = []

    def read():
        barrier.wait()
        stored.outcomes_for_pools([pool.pk], now=now)

    threads = [_in_thread(read, errors) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    # then one of them computed; the others waited on the row lock and read its result
    assert computed == [pool.pk]
    assert stored.outcomes_for_pools([pool.pk], now=now)[pool.pk] == fresh(pool, now)


def test_readers_racing_writers_leave_a_true_forecast(concurrent_pool):
    pool, project, requester = concurrent_pool
    errors: list[Exception] = []
    done = threading.Event()

    def write():
        for i in range(8):
            change = factories.AllocationChangeFactory(
                pool=pool, project=project, requested_by=requester, gpus=1 + i % 3
            )
            services.allocation_change_apply(change_id=change.pk)
        done.set()

    def read():
        while not done.is_set():
            stored.outcomes_for_pools([pool.pk])

    threads = [_in_thread(write, errors), _in_thread(read, errors), _in_thread(read, errors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    # then whatever the interleaving, the next read is the truth of the pool as it now is
    now = timezone.now()
    assert stored.outcomes_for_pools([pool.pk], now=now)[pool.pk] == fresh(pool, now)
    with connection.cursor() as cursor:
        cursor.execute("SELECT version FROM allocator_pool WHERE id = %s", [pool.pk])
        assert row(pool).version == cursor.fetchone()[0]
