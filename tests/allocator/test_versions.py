"""The pool's version counter (PostgreSQL triggers, allocator migration 0008) moves with every
write of the pool's rows that cached figures read, in the writer's transaction, and never goes
back."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from allocator import services
from allocator.models import Pool
from allocator.shares import division_share_set
from tests import factories
from tests.factories import in_days

pytestmark = pytest.mark.django_db


def _version(pool) -> int:
    return Pool.objects.values_list("version", flat=True).get(pk=pool.pk)


@pytest.fixture
def held(make_change):
    """An active allocation of 16 GPUs, made by the engine (one grant ledger row)."""
    change = make_change(gpus=16, start=in_days(-1), end=in_days(20))
    services.allocation_change_apply(change_id=change.pk)
    change.refresh_from_db()
    return change.allocation


def test_apply_bumps_the_version(make_change, pool):
    change = make_change(gpus=8)
    before = _version(pool)
    services.allocation_change_apply(change_id=change.pk)
    # the allocation's insert and the change's settling each move it (one trigger per write)
    assert _version(pool) > before


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda a, ops, req: services.allocation_release(allocation_id=a.pk, actor=req),
            id="release",
        ),
        pytest.param(
            lambda a, ops, req: services.allocation_reclaim(
                allocation_id=a.pk, actor=ops, new_gpus=0, reason="r", notice_hours=0
            ),
            id="reclaim-now",
        ),
        pytest.param(
            lambda a, ops, req: services.allocation_reclaim(
                allocation_id=a.pk, actor=ops, new_gpus=8, reason="r", notice_hours=24
            ),
            id="reclaim-scheduled",
        ),
        pytest.param(
            lambda a, ops, req: services.allocations_expire(now=a.end + timedelta(seconds=1)),
            id="expire",
        ),
    ],
)
def test_allocation_writes_bump_the_version(held, pool, ops, requester, write):
    before = _version(pool)
    write(held, ops, requester)
    assert _version(pool) > before


def test_cancelling_a_scheduled_reclaim_bumps_the_version(held, pool, ops):
    reclaim = services.allocation_reclaim(
        allocation_id=held.pk, actor=ops, new_gpus=0, reason="r", notice_hours=24
    )
    before = _version(pool)
    services.reclaim_cancel(reclaim_id=reclaim.pk, actor=ops)
    assert _version(pool) == before + 1


def test_capacity_change_bumps_the_version(pool, ops):
    before = _version(pool)
    services.capacity_change_create(
        pool_id=pool.pk, kind="arrival", delta=8, effective_at=in_days(3), actor=ops
    )
    assert _version(pool) == before + 1


def test_share_change_bumps_the_version_and_a_no_op_does_not(pool, research, executive):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=10)
    before = _version(pool)
    division_share_set(actor=executive, division_id=research.pk, pool_id=pool.pk, gpus=20)
    assert _version(pool) == before + 1
    division_share_set(actor=executive, division_id=research.pk, pool_id=pool.pk, gpus=20)
    assert _version(pool) == before + 1


def test_a_refused_write_leaves_the_version(pool, ops):
    before = _version(pool)
    with pytest.raises(ValidationError):
        services.capacity_change_create(
            pool_id=pool.pk, kind="decommission", delta=-10_000, effective_at=in_days(1), actor=ops
        )
    assert _version(pool) == before


def test_saving_a_pool_read_earlier_keeps_the_newer_version(pool, ops):
    # given a pool read (say, by the admin) before a write bumped its version
    stale = Pool.objects.get(pk=pool.pk)
    with transaction.atomic():
        services.capacity_change_create(
            pool_id=pool.pk, kind="arrival", delta=8, effective_at=in_days(3), actor=ops
        )
    bumped = _version(pool)
    # when the stale copy is saved whole
    stale.description = "renamed"
    stale.save()
    # then the version is not written back
    assert _version(pool) == bumped
    assert Pool.objects.get(pk=pool.pk).description == "renamed"
