"""The lab-scale generator: the counts asked for, every request state, the invariant kept, and
the same data for the same seed."""

from datetime import UTC, datetime

import pytest
from django.db.models import Count, Sum

from allocator.models import Allocation, AllocationChange, LedgerEntry, Pool
from allocator.selectors import pool_timeline
from devtools.labgen import Scale, generate_lab
from requests_app.models import ComputeRequest
from requests_app.workflow import Status

SMALL = Scale(pools=6, teams=4, projects=30, requests=600, allocations=200, divisions=2, users=12)


def fingerprint():
    return (
        sorted(ComputeRequest.objects.values_list("status").annotate(n=Count("id"), g=Sum("gpus"))),
        sorted(
            Allocation.objects.values_list("pool__cluster", "pool__gpu_model").annotate(
                g=Sum("gpus")
            )
        ),
    )


@pytest.mark.django_db
def test_generates_the_scale_asked_for_in_every_state():
    result = generate_lab(scale=SMALL, seed=7)
    assert result["pools"] == Pool.objects.count() == 6
    assert ComputeRequest.objects.count() == 600
    assert Allocation.objects.count() == result["allocations"] == 200
    assert set(ComputeRequest.objects.values_list("status", flat=True)) == {s.value for s in Status}
    # every allocation has its applied change and one grant in the ledger
    assert AllocationChange.objects.filter(status="applied").count() == 200
    assert LedgerEntry.objects.filter(kind="grant").count() == 200
    assert (
        ComputeRequest.objects.filter(status="allocated", change__allocation__isnull=False).count()
        == 200
    )


@pytest.mark.django_db
def test_generated_pools_never_exceed_capacity():
    generate_lab(scale=SMALL, seed=3)
    for pool in Pool.objects.all():
        timeline = pool_timeline(pool.pk, origin=datetime(2000, 1, 1, tzinfo=UTC))
        assert all(step.held <= step.capacity for step in timeline.steps), pool


@pytest.mark.django_db
def test_same_seed_same_data():
    generate_lab(scale=SMALL, seed=11, prefix="a")
    first = fingerprint()
    ComputeRequest.objects.all().delete()  # steps cascade
    generate_lab(scale=SMALL, seed=11, prefix="b")
    second = fingerprint()
    assert first[0] == second[0]
