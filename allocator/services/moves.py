"""Moving GPUs in one action: compute ops pick GPUs from several allocations for one approved
change or the pool, or wind a project down; each is a set of reclaims (reclaims.py), all or
nothing, and each team is told once."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from notifications.models import Notification
from notifications.services import notify

from .. import locks
from ..models import Allocation, Reclaim
from .reclaims import allocation_reclaim, reclaim_effect_words
from .records import project_link, require_compute_ops, team_members
from .release import allocation_words, cancel_scheduled_reclaims


@transaction.atomic
def gpus_move(
    *,
    actor,
    takes: dict[int, int],
    to_change_id: int | None,
    reason: str,
    notice_hours: int | None = None,
) -> list[Reclaim]:
    """Compute ops move GPUs in one action: `takes` maps each source allocation to the GPUs
    taken from it; they go to one approved change (pending or waiting, same pool) or back to
    the pool, all at the end of the same notice. All or nothing; each team is told once.
    Pools are locked in pk order, then each pool's allocations (allocator/locks.py)."""
    require_compute_ops(actor)
    if not takes or any(gpus <= 0 for gpus in takes.values()):
        raise ValidationError({"takes": ["Choose at least one allocation and how many GPUs."]})
    pools = dict(Allocation.objects.filter(pk__in=takes).values_list("pk", "pool_id"))
    if len(pools) != len(takes):
        raise ValidationError({"takes": ["An allocation you chose no longer exists."]})
    locks.lock_pools(pools.values())
    held = locks.lock_allocations(takes)
    reclaims = []
    for allocation_id in sorted(takes, key=lambda a: (pools[a], a)):
        allocation = held[allocation_id]
        take = takes[allocation_id]
        if take > allocation.gpus:
            raise ValidationError(
                {"takes": [f"{allocation_words(allocation)} holds only {allocation.gpus} GPUs."]}
            )
        try:
            reclaims.append(
                allocation_reclaim(
                    allocation_id=allocation_id,
                    actor=actor,
                    new_gpus=allocation.gpus - take,
                    reason=reason,
                    notice_hours=notice_hours,
                    transfer_to_id=to_change_id,
                    notify_owners=False,
                )
            )
        except ValidationError as error:
            raise ValidationError(_prefixed(error, allocation_words(allocation))) from error
    _tell_owners_once(reclaims, held, reason=reason)
    return reclaims


@transaction.atomic
def project_wind_down(
    *,
    project_id: int,
    actor,
    reason: str,
    notice_hours: int | None = None,
    at_expected_end: bool = False,
) -> list[Reclaim]:
    """Compute ops reclaim every allocation the project holds or will hold, after the notice
    or on its expected end date (allocations ending before then are left to end); the team is
    told once. All or nothing."""
    from org.models import Project

    require_compute_ops(actor)
    project = Project.objects.get(pk=project_id)
    now = timezone.now()
    effective_at = None
    if at_expected_end:
        if project.expected_end is None:
            raise ValidationError({"at_expected_end": [f"{project} has no expected end date."]})
        effective_at = max(
            now, datetime.combine(project.expected_end, datetime.min.time(), tzinfo=UTC)
        )
    rows = dict(
        Allocation.objects.filter(
            project=project, state=Allocation.State.ACTIVE, end__gt=effective_at or now
        ).values_list("pk", "pool_id")
    )
    if not rows:
        raise ValidationError({"project": [f"{project} holds no GPUs to reclaim."]})
    locks.lock_pools(rows.values())
    held = locks.lock_allocations(rows)
    reclaims = []
    for allocation_id in sorted(rows, key=lambda a: (rows[a], a)):
        allocation = held[allocation_id]
        if allocation.reclaims.filter(status=Reclaim.Status.SCHEDULED).exists():
            # an earlier scheduled reclaim gives way to the wind-down (audited)
            cancel_scheduled_reclaims(allocation, actor=actor, why="The project winds down.")
        try:
            reclaims.append(
                allocation_reclaim(
                    allocation_id=allocation_id,
                    actor=actor,
                    new_gpus=0,
                    reason=reason,
                    notice_hours=notice_hours,
                    effective_at=effective_at,
                    notify_owners=False,
                )
            )
        except ValidationError as error:
            raise ValidationError(_prefixed(error, allocation_words(allocation))) from error
    _tell_owners_once(reclaims, held, reason=reason)
    return reclaims


def _prefixed(error: ValidationError, label: str) -> dict[str, list[str]]:
    if hasattr(error, "error_dict"):
        return {k: [f"{label}: {m}" for m in v] for k, v in error.message_dict.items()}
    return {"takes": [f"{label}: {m}" for m in error.messages]}


def _tell_owners_once(reclaims: list[Reclaim], held: dict[int, Allocation], *, reason: str):
    by_project: dict[int, list[Reclaim]] = defaultdict(list)
    for reclaim in reclaims:
        by_project[reclaim.allocation.project_id].append(reclaim)
    for project_id, items in by_project.items():
        project = items[0].allocation.project
        lines = "; ".join(reclaim_effect_words(r, held[r.allocation_id]) for r in items)
        notify(
            recipients=team_members(project.team_id),
            kind=Notification.Kind.RECLAIM,
            message=f"Reclaim notice for {project}: {lines}. Reason: {reason.strip()}",
            link=project_link(project_id),
            dedupe_key=f"reclaim-{items[0].pk}-notice",
        )
