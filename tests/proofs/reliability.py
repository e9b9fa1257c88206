"""Fixtures and builders shared by the concurrency and fault proofs (tests/proofs/test_*_proofs.py,
tests/proofs/test_stateful_model.py)."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from org.models import RoleGrant
from requests_app.models import ApprovalStep, ComputeRequest
from requests_app.workflow import Stage, Status
from tests import factories
from tests.factories import in_days
from tests.support.workers import Worker, purge_test_broker, start_all


def make_executives(n: int, prefix: str = "exec") -> list:
    users = []
    for i in range(n):
        user = factories.UserFactory(username=f"{prefix}{i}")
        factories.RoleGrantFactory(user=user, role=RoleGrant.Role.EXECUTIVE)
        users.append(user)
    return users


def token_for(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def pending_executive(*, requester, project, pool, lead, gpus: int, start=None, days: int = 7):
    """A request waiting for executive review, as the workflow leaves it: submitted, division
    approved by `lead`, needs executive review."""
    start = start or in_days(1)
    req = _pending_request(
        requester=requester, project=project, pool=pool, gpus=gpus, start=start, days=days
    )
    ApprovalStep.objects.create(
        request=req,
        round=1,
        stage=Stage.DIVISION,
        decision=ApprovalStep.Decision.APPROVED,
        decider=lead,
    )
    return req


def _pending_request(*, requester, project, pool, gpus, start, days):
    from datetime import timedelta

    return factories.ComputeRequestFactory(
        requester=requester,
        project=project,
        pool=pool,
        gpus=gpus,
        start=start,
        end=start + timedelta(days=days),
        status=Status.PENDING_EXECUTIVE,
        round=1,
        needs_executive=True,
        executive_reasons=["is marked urgent"],
        submitted_at=timezone.now(),
    )


def request_ids_for_changes(change_ids) -> dict[int, int]:
    return dict(
        ComputeRequest.objects.filter(change_id__in=list(change_ids)).values_list("change_id", "pk")
    )


class Crew:
    """Worker processes shared by a module's tests: started once, revived after a test killed
    one, killed by pid at the end."""

    def __init__(self, n: int, *, concurrency: int = 1, extra_env=None):
        self.workers = [
            Worker(concurrency=concurrency, name=f"crew{i}", extra_env=extra_env) for i in range(n)
        ]

    def start(self) -> Crew:
        purge_test_broker()
        start_all(self.workers)
        return self

    def revive(self) -> None:
        dead = [w for w in self.workers if not w.alive]
        if dead:
            start_all(dead)

    def kill(self) -> None:
        for w in self.workers:
            w.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log_tail(1500)}" for w in self.workers)


@pytest.fixture(scope="module")
def crew(django_db_setup, django_db_blocker):
    """Two real worker processes (prefork, one child each) on the test database and Redis."""
    team = Crew(2).start()
    yield team
    team.kill()


def drain(seconds: float = 60) -> None:
    """Before the test database is flushed: wait until the workers have nothing left to do, so
    the flush's TRUNCATE never meets an apply transaction (they would deadlock)."""
    import time

    import redis
    from django.conf import settings

    from allocator.models import AllocationChange
    from tests.support.proofs import wait_for

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    wait_for(
        lambda: (
            not AllocationChange.objects.filter(status="pending").exists()
            and broker.llen("celery") == 0
        ),
        seconds,
    )
    broker.close()
    time.sleep(0.5)  # a task just taken off the queue finishes its transaction


@pytest.fixture
def live_crew(crew, transactional_db):
    crew.revive()
    yield crew
    drain()


@pytest.fixture
def drained(crew, transactional_db):
    """For tests that only send work to the module's crew."""
    yield
    drain()
