"""What the throughput and latency runs work on: a few bench pools beside the lab's, with ample
capacity and every division given all of it (so the share rule never sends a change back), and a
researcher of the lab with one of their team's active projects.

The pools are created once per database and reused. Bench allocations are short (they end
minutes after the run), so the runs of the next quarter hour see about the same pool timelines."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

BENCH_CLUSTER = "bench"
CAPACITY = 100_000


@dataclass
class Subjects:
    pool_ids: list[int]
    project_id: int
    requester: object
    lead: object


@transaction.atomic
def bench_pools(count: int) -> list[int]:
    from allocator.models import CapacityChange, DivisionShare, Pool
    from org.models import Division

    ids = []
    for i in range(count):
        pool, created = Pool.objects.get_or_create(
            cluster=BENCH_CLUSTER,
            gpu_model=f"tp{i}",
            defaults={"description": "Bench pool (python3 dev.py bench)."},
        )
        if created:
            CapacityChange.objects.create(
                pool=pool,
                kind="arrival",
                delta=CAPACITY,
                effective_at=timezone.now() - timedelta(days=400),
                note="bench capacity",
            )
        for division in Division.objects.all():
            DivisionShare.objects.update_or_create(
                division=division, pool=pool, defaults={"gpus": CAPACITY}
            )
        ids.append(pool.pk)
    return ids


def subjects(pool_count: int, prefix: str = "lab") -> Subjects:
    from org.models import Project, RoleGrant

    User = get_user_model()
    # A team the page personas are not in, so the notifications and requests these runs make do
    # not pile up in the pages the bench measures as `<prefix>-user0`.
    persona = User.objects.get(username=f"{prefix}-user0")
    project = (
        Project.objects.filter(state="active", team__division__slug__startswith=f"{prefix}-")
        .exclude(team__memberships__user=persona)
        .select_related("team")
        .order_by("pk")
        .first()
    )
    if project is None:  # a tiny lab where user0 is in every team
        project = (
            Project.objects.filter(state="active", team__memberships__user=persona)
            .select_related("team")
            .order_by("pk")
            .first()
        )
    if project is None:
        raise SystemExit("bench: no active project in the data set")
    requester = (
        User.objects.filter(memberships__team_id=project.team_id, username__startswith=prefix)
        .order_by("pk")
        .first()
    )
    grant = (
        RoleGrant.objects.filter(role="division_lead", division_id=project.team.division_id)
        .select_related("user")
        .order_by("pk")
        .first()
    )
    if grant is None:
        raise SystemExit("bench: no division lead for the bench project's division")
    return Subjects(
        pool_ids=bench_pools(pool_count),
        project_id=project.pk,
        requester=requester,
        lead=grant.user,
    )
