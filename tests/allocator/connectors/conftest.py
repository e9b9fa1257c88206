"""A pool connected to the session's private Slurm cluster (the `slurm` fixture of
tests/support/slurm.py), and allocations made through the engine."""

import pytest
from django.db import transaction
from django.utils import timezone

from allocator import services as engine
from allocator.connectors.services import pool_connect
from tests import factories


@pytest.fixture
def connected_pool(slurm, research):
    pool = factories.PoolFactory(cluster="east", gpu_model="H100", capacity=16)
    factories.DivisionShareFactory(division=research, pool=pool, gpus=16)
    pool_connect(
        pool=pool,
        kind="slurm",
        cluster=slurm.cluster_name,
        partition=slurm.partition,
        gres="gpu",
        slurm_conf=str(slurm.conf),
    )
    return pool


@pytest.fixture
def grant(requester):
    """Allocate through the engine (approved change -> apply), as a worker would."""

    def make(pool, project, gpus, *, start=None, end=None):
        now = timezone.now()
        with transaction.atomic():
            change = factories.AllocationChangeFactory(
                pool=pool,
                project=project,
                gpus=gpus,
                start=start or now - timezone.timedelta(minutes=1),
                end=end or now + timezone.timedelta(days=7),
                requested_by=requester,
            )
        assert engine.allocation_change_apply(change_id=change.pk) == "applied"
        change.refresh_from_db()
        return change.allocation

    return make
