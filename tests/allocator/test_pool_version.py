"""Pool.version (migration 0006): PostgreSQL bumps it in the same transaction as every write a
pool's forecast or summaries read — and only the pool written, and not for bookkeeping."""

import pytest
from django.utils import timezone

from allocator import services
from allocator.models import AllocationChange, Pool
from tests import factories
from tests.factories import in_days


def version(pool) -> int:
    return Pool.objects.values_list("version", flat=True).get(pk=pool.pk)


@pytest.fixture
def other_pool(db):
    return factories.PoolFactory(capacity=64)


def test_each_kind_of_write_bumps_its_pool_only(
    pool, other_pool, project, requester, research, ops
):
    before_other = version(other_pool)
    writes = [
        lambda: factories.DivisionShareFactory(division=research, pool=pool, gpus=32),
        lambda: factories.CapacityChangeFactory(pool=pool, delta=8, effective_at=in_days(3)),
        lambda: factories.AllocationFactory(pool=pool, project=project, gpus=4, end=in_days(9)),
        lambda: factories.AllocationChangeFactory(
            pool=pool, project=project, requested_by=requester, gpus=4
        ),
    ]
    for write in writes:
        # when a row the forecast reads is written
        v = version(pool)
        write()
        # then the pool's version moved, and no other pool's
        assert version(pool) > v
    assert version(other_pool) == before_other


def test_engine_writes_bump_and_bookkeeping_does_not(pool, project, requester, research, ops):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=64)
    change = factories.AllocationChangeFactory(
        pool=pool, project=project, requested_by=requester, gpus=8, start=in_days(1)
    )
    # given bookkeeping on the change: dispatch time, attempts, the last error
    v = version(pool)
    AllocationChange.objects.filter(pk=change.pk).update(
        dispatched_at=timezone.now(), attempts=1, last_error="x"
    )
    # then nothing a forecast shows changed, and the version stays
    assert version(pool) == v
    # when the engine applies it, releases it, reclaims another
    services.allocation_change_apply(change_id=change.pk)
    v1 = version(pool)
    assert v1 > v
    allocation = AllocationChange.objects.get(pk=change.pk).allocation
    services.allocation_reclaim(
        allocation_id=allocation.pk, actor=ops, new_gpus=4, reason="needed", notice_hours=72
    )
    v2 = version(pool)
    assert v2 > v1
    services.allocation_release(allocation_id=allocation.pk, actor=requester)
    assert version(pool) > v2


def test_a_stale_pool_object_saved_does_not_move_the_version_back(pool, project):
    stale = Pool.objects.get(pk=pool.pk)
    factories.AllocationFactory(pool=pool, project=project, gpus=4, end=in_days(2))
    bumped = version(pool)
    # when an object read before the write is saved (the admin editing the description)
    stale.description = "edited"
    stale.save()
    # then the version stays where the write put it; a new name bumps it
    assert version(pool) == bumped
    stale.cluster = "renamed"
    stale.save()
    assert version(pool) == bumped + 1


def test_renaming_or_hiding_a_project_bumps_the_pools_it_holds_in(pool, other_pool, project):
    factories.AllocationFactory(pool=pool, project=project, gpus=4, end=in_days(2))
    v, v_other = version(pool), version(other_pool)
    # when the project becomes confidential (its name must leave the stored reasons)
    project.confidential = True
    project.save(update_fields=["confidential"])
    assert version(pool) > v
    assert version(other_pool) == v_other
    # and a change of its description does not
    v = version(pool)
    project.description = "new words"
    project.save(update_fields=["description"])
    assert version(pool) == v
