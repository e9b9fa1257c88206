"""Idle allocations: held for the idle window and measured far below their GPUs."""

from datetime import timedelta

import pytest
from django.utils import timezone

from allocator.connectors.models import AllocationUsage
from allocator.connectors.usage import idle_allocations
from tests import factories
from tests.factories import in_days

pytestmark = pytest.mark.django_db


def test_allocations_used_far_below_their_gpus_are_flagged_idle(pool, project, settings):
    settings.ALLOTMENT_CONNECTORS = {
        **settings.ALLOTMENT_CONNECTORS,
        "IDLE_HOURS": 24,
        "IDLE_USE_BELOW": 0.1,
    }
    now = timezone.now()
    idle = factories.AllocationFactory(pool=pool, project=project, gpus=8, start=in_days(-5))
    busy = factories.AllocationFactory(pool=pool, project=project, gpus=8, start=in_days(-5))
    unmeasured = factories.AllocationFactory(pool=pool, project=project, gpus=8, start=in_days(-5))
    young = factories.AllocationFactory(pool=pool, project=project, gpus=8, start=in_days(-0.5))
    for day_offset in (0, 1):
        day = (now - timedelta(days=day_offset)).date()
        AllocationUsage.objects.create(allocation=idle, day=day, gpu_hours=1.0, measured_at=now)
        AllocationUsage.objects.create(allocation=busy, day=day, gpu_hours=150.0, measured_at=now)
        AllocationUsage.objects.create(allocation=young, day=day, gpu_hours=0.0, measured_at=now)

    flagged = idle_allocations(now=now)

    assert set(flagged) == {idle.pk}
    assert flagged[idle.pk] < 0.1
    assert unmeasured.pk not in flagged  # never measured: not known to be idle


def test_idle_allocations_are_told_to_their_team_and_ops_once_a_day(pool, project, requester, ops):
    from allocator.connectors.usage import idle_notify
    from notifications.models import Notification

    now = timezone.now()
    idle = factories.AllocationFactory(pool=pool, project=project, gpus=8, start=in_days(-5))
    AllocationUsage.objects.create(allocation=idle, day=now.date(), gpu_hours=0.0, measured_at=now)

    assert idle_notify(pool_ids=[pool.pk], now=now) == 1
    idle_notify(pool_ids=[pool.pk], now=now)

    notes = Notification.objects.filter(message__contains="used 0% of their GPU-hours")
    assert sorted(n.recipient.username for n in notes) == ["ops", "rita"]


def test_usage_report_per_division_team_and_project_with_csv(
    client, executive, requester, pool, project
):
    now = timezone.now()
    allocation = factories.AllocationFactory(
        pool=pool,
        project=project,
        gpus=2,
        start=now - timedelta(hours=10),
        end=now + timedelta(days=1),
    )
    AllocationUsage.objects.create(
        allocation=allocation, day=now.date(), gpu_hours=5.0, measured_at=now
    )
    client.force_login(requester)
    assert client.get("/ops/usage/").status_code == 404
    client.force_login(executive)
    page = client.get("/ops/usage/?level=division").content.decode()
    assert "GPU usage by division" in page
    assert "Research" in page
    assert "5.0 of 20.0 GPU-hours used" in page
    csv_text = client.get("/ops/usage/?level=team&format=csv").content.decode()
    lines = csv_text.strip().splitlines()
    assert lines[0] == "team,month,gpu_hours_allocated,gpu_hours_used"
    assert lines[1] == f"Pretraining,{now:%Y-%m},20.0,5.0"


def test_pool_and_project_pages_show_used_against_allocated(client, requester, pool, project):
    now = timezone.now()
    measured = factories.AllocationFactory(
        pool=pool,
        project=project,
        gpus=2,
        start=now - timedelta(hours=10),
        end=now + timedelta(days=1),
    )
    factories.AllocationFactory(pool=pool, project=project, gpus=3)
    AllocationUsage.objects.create(
        allocation=measured, day=now.date(), gpu_hours=5.0, measured_at=now
    )
    client.force_login(requester)
    for url in (f"/pools/{pool.pk}/", f"/projects/{project.pk}/"):
        page = client.get(url).content.decode()
        assert "GPU-hours used" in page
        assert "5.000 of 20.0" in page
        assert "not measured" in page  # the other allocation
