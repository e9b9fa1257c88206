"""Many workers at once never over-allocate (PRODUCT.md section 4): threads with their own
database connections, and real worker processes, apply competing changes; the invariant checker
then finds nothing."""

import random
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections

from allocator import services
from allocator.models import Allocation, AllocationChange
from allocator.tasks import apply_change
from tests import factories
from tests.factories import in_days
from tests.support.invariants import violations
from tests.support.workers import Worker, purge_test_broker

pytestmark = pytest.mark.slow


@pytest.fixture
def contested(transactional_db):
    """One pool of 64 GPUs and 40 approved changes asking for far more than it has over
    overlapping ranges (some flexible, some fixed); share rule out of the way."""
    pool = factories.PoolFactory(cluster="east", gpu_model="H100", capacity=64)
    factories.CapacityChangeFactory(pool=pool, delta=16, effective_at=in_days(6))
    rng = random.Random(7)
    changes = []
    for i in range(40):
        start = in_days(rng.randint(0, 10)) + timedelta(hours=rng.randint(0, 23))
        changes.append(
            factories.AllocationChangeFactory(
                pool=pool,
                gpus=rng.choice([4, 8, 12, 16, 24]),
                start=start,
                end=start + timedelta(days=rng.randint(1, 8)),
                flexible_start=bool(i % 3 == 0),
                priority=rng.randint(0, 3),
                executive_reviewed=True,
            )
        )
    return pool, changes


def _run_in_threads(jobs):
    errors = []
    barrier = threading.Barrier(len(jobs))

    def run(job):
        try:
            barrier.wait()
            job()
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def _apply_like_the_task(change_id: int, attempts: int = 50) -> None:
    """What the apply task does: a change whose row another transaction holds (ChangeBusy) is
    tried again shortly, until it is settled."""
    for _ in range(attempts):
        try:
            services.allocation_change_apply(change_id=change_id)
            return
        except services.ChangeBusy:
            time.sleep(0.05)
    raise AssertionError(f"change {change_id} stayed busy")


def test_threads_applying_competing_changes_never_over_allocate(contested):
    # given 40 competing changes, each delivered twice (a redelivered task)
    _, changes = contested
    jobs = [(lambda cid=c.pk: _apply_like_the_task(cid)) for c in changes for _ in range(2)]
    random.Random(3).shuffle(jobs)
    # when 80 threads apply them at once
    errors = _run_in_threads(jobs)
    # then no thread failed, every change was settled once, and the invariant holds
    assert errors == []
    statuses = set(AllocationChange.objects.values_list("status", flat=True))
    assert statuses <= {"applied", "waiting"}, statuses
    assert "applied" in statuses and "waiting" in statuses  # the pool really was contested
    assert violations() == []


def test_threads_releasing_and_applying_at_once(contested, requester):
    # given half the changes applied
    _, changes = contested
    for c in changes[:20]:
        services.allocation_change_apply(change_id=c.pk)
    team_allocations = list(Allocation.objects.all()[:6])
    for a in team_allocations:
        factories.MembershipFactory(team=a.project.team, user=requester)
    # when releases, the remaining applies and queue serving run at once
    jobs = [
        (lambda cid=c.pk: services.allocation_change_apply(change_id=cid)) for c in changes[20:]
    ]
    jobs += [
        (lambda aid=a.pk: services.allocation_release(allocation_id=aid, actor=_fresh(requester)))
        for a in team_allocations
    ]
    jobs += [services.queues_serve_all for _ in range(4)]
    errors = _run_in_threads(jobs)
    # then the invariant holds
    assert errors == []
    assert violations() == []


def _fresh(user):
    # roles are cached per user object; each thread gets its own
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(pk=user.pk)


@pytest.mark.worker
def test_worker_processes_applying_competing_changes_never_over_allocate(contested):
    # given two worker processes, three children each, on the test database
    _, changes = contested
    purge_test_broker()
    workers = [Worker(concurrency=3).start(), Worker(concurrency=3).start()]
    try:
        # when every change is sent twice
        for c in changes:
            apply_change.delay(c.pk)
            apply_change.delay(c.pk)
        deadline = time.time() + 60
        while time.time() < deadline:
            if not AllocationChange.objects.filter(status="pending").exists():
                break
            time.sleep(0.3)
    finally:
        for w in workers:
            w.kill()
    # then every change was settled and the invariant holds
    assert not AllocationChange.objects.filter(status="pending").exists()
    assert violations() == []
    assert connection.settings_dict["NAME"].startswith("test_")
