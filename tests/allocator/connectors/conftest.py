"""One private Slurm cluster per test session (tests/support/slurm.py), emptied between tests:
jobs cancelled, every account but root deleted."""

import shutil
import signal

import pytest
from django.db import transaction
from django.utils import timezone

from allocator import services as engine
from allocator.connectors.services import pool_connect
from tests import factories
from tests.support.slurm import SlurmCluster


@pytest.fixture(scope="session")
def slurm_cluster():
    why = SlurmCluster.unavailable()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base, ignore_errors=True)


@pytest.fixture
def slurm(slurm_cluster):
    yield slurm_cluster
    # A fault test may have stopped or paused a daemon.
    for proc in slurm_cluster.procs.values():
        proc.send_signal(signal.SIGCONT)
    if "munged" not in slurm_cluster.procs:
        slurm_cluster.start_munge()
    if "slurmdbd" not in slurm_cluster.procs:
        slurm_cluster.start_accounting()
    if "slurmctld" not in slurm_cluster.procs:
        slurm_cluster.start_controller()
    slurm_cluster.cancel_all()
    out = slurm_cluster.run("sacctmgr", "-n", "-P", "show", "account", "format=Account").stdout
    names = [n for n in out.split() if n and n != "root"]
    if names:
        slurm_cluster.run("sacctmgr", "-i", "delete", "account", "name=" + ",".join(names))


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
