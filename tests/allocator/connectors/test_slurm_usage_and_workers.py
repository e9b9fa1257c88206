"""On a real Slurm: jobs that ran show as GPU-hours used; and with real Celery workers, an
approval reaches the cluster through the outbox with nobody calling a service by hand."""

import time

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from allocator import services as engine
from allocator.connectors.models import AllocationUsage, EnforcementIntent, PoolAccount
from allocator.connectors.usage import usage_collect
from tests.support.workers import Worker, purge_test_broker

from .test_slurm_enforcement import _apply_due, _limit

pytestmark = [pytest.mark.slurm, pytest.mark.django_db(transaction=True)]


def test_jobs_that_ran_show_as_gpu_hours_used(
    slurm, connected_pool, project, grant, requester, client
):
    # given an enforced allocation of 2 and a 2-GPU job that ran for a few seconds
    allocation = grant(connected_pool, project, 2)
    _apply_due(allocation)
    slurm.sacctmgr("add", "user", "root", "account=atlas")
    job = slurm.submit(account="atlas", gpus=2, seconds=4)
    slurm.wait_job_state(job, {"RUNNING"})
    slurm.wait_job_state(job, {"COMPLETED", "GONE"}, timeout=30)

    # when usage is collected from the scheduler's accounting
    assert usage_collect(connector_id=connected_pool.connector.pk) >= 1
    assert usage_collect(connector_id=connected_pool.connector.pk) >= 1  # a repeat: same rows

    # then its GPU-hours (2 GPUs x ~4 s) are stored once per day, and shown
    used = sum(
        AllocationUsage.objects.filter(allocation=allocation).values_list("gpu_hours", flat=True)
    )
    assert 2 * 3 / 3600 <= used <= 2 * 8 / 3600
    assert AllocationUsage.objects.filter(allocation=allocation).count() == 1
    api = APIClient()
    api.force_authenticate(requester)
    body = api.get(f"/api/v1/allocations/{allocation.pk}/").json()
    assert body["gpu_hours_used"] == pytest.approx(used, abs=0.001)
    assert body["enforcement"] == "enforced"
    client.force_login(requester)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert f"{used:.3f} of" in page


@pytest.mark.worker
def test_an_approval_reaches_the_cluster_through_workers(slurm, connected_pool, project, requester):
    purge_test_broker()
    worker = Worker(concurrency=2).start()
    try:
        # when an approved change commits (as the final approval does)
        now = timezone.now()
        with transaction.atomic():
            change = engine.allocation_change_create(
                pool_id=connected_pool.pk,
                project_id=project.pk,
                kind="new",
                target_allocation_id=None,
                gpus=4,
                start=now - timezone.timedelta(minutes=1),
                end=now + timezone.timedelta(days=3),
                flexible_start=False,
                priority=1,
                executive_reviewed=False,
                requested_by=requester,
                approved_at=now,
            )
        # then a worker applies it, and another task sets the account's limit
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and _limit(slurm, "atlas") != "gres/gpu=4":
            time.sleep(0.5)
        assert _limit(slurm, "atlas") == "gres/gpu=4", worker.log_tail()
        change.refresh_from_db()
        assert change.status == "applied"
        pending = EnforcementIntent.objects.filter(
            allocation=change.allocation, status="pending", effective_at__lte=timezone.now()
        )
        assert not pending.exists()
        assert PoolAccount.objects.get(project=project).applied_gpus == 4
    finally:
        worker.stop()
