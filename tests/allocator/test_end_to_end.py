"""End to end through the real broker and a real worker process: an approval committed in the
web process is applied by the worker within seconds."""

import time

import pytest
from django.db import transaction

from allocator import services
from allocator.models import Allocation, AllocationChange, Priority
from tests import factories
from tests.factories import in_days
from tests.support.invariants import violations

pytestmark = pytest.mark.worker


def _wait_for(predicate, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_committed_change_is_applied_by_a_worker(
    celery_worker_process, pool, project, requester, research
):
    # given a share that allows it
    factories.DivisionShareFactory(division=research, pool=pool, gpus=64)
    # when an approval creates a change inside a transaction, and commits
    with transaction.atomic():
        change = services.allocation_change_create(
            pool_id=pool.pk,
            project_id=project.pk,
            kind="new",
            target_allocation_id=None,
            gpus=8,
            start=in_days(1),
            end=in_days(10),
            flexible_start=False,
            priority=Priority.NORMAL,
            executive_reviewed=False,
            requested_by=requester,
            approved_at=in_days(0),
        )
    # then within a few seconds the worker applied it
    assert _wait_for(lambda: Allocation.objects.filter(change_id=change.pk).exists()), (
        celery_worker_process.log_path.read_text()[-3000:]
    )
    change.refresh_from_db()
    assert change.status == AllocationChange.Status.APPLIED
    assert change.dispatched_at is not None
    assert violations() == []


def test_lost_message_is_resent_by_the_sweep(celery_worker_process, pool, project, research):
    # given an approved change whose task message never reached the broker
    factories.DivisionShareFactory(division=research, pool=pool, gpus=64)
    change = factories.AllocationChangeFactory(
        pool=pool, project=project, gpus=8, approved_at=in_days(-1)
    )
    # when the periodic sweep runs
    assert services.changes_resend_stuck() == 1
    # then a worker applies it
    assert _wait_for(lambda: Allocation.objects.filter(change_id=change.pk).exists())
