"""What every write of the pool leaves behind or needs to say: the ledger row, the snapshot the
audit trail keeps, the people told, and the words times are written in."""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from org.models import RoleGrant
from org.roles import roles_of

from ..models import Allocation, AllocationChange, LedgerEntry

Status = AllocationChange.Status


def fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def snapshot(allocation: Allocation) -> dict:
    return {
        "gpus": allocation.gpus,
        "start": allocation.start,
        "end": allocation.end,
        "state": allocation.state,
    }


def ledger(
    *, allocation: Allocation, kind: str, actor=None, change=None, note: str = ""
) -> LedgerEntry:
    """One append-only ledger row: the allocation as it stands after the change. (The pool's
    version moves with the allocation's write: a trigger, allocator migration 0008.)"""
    return LedgerEntry.objects.create(
        allocation=allocation,
        change=change,
        kind=kind,
        gpus=allocation.gpus,
        start=allocation.start,
        end=allocation.end,
        actor=actor if actor is not None and actor.is_authenticated else None,
        note=note[:500],
    )


def project_link(project_id: int) -> str:
    return reverse("org:project-detail", args=[project_id])


def team_members(team_id: int) -> list:
    return list(
        get_user_model().objects.filter(memberships__team_id=team_id, is_active=True).distinct()
    )


def compute_ops_users() -> list:
    return list(
        get_user_model()
        .objects.filter(role_grants__role=RoleGrant.Role.COMPUTE_OPS, is_active=True)
        .distinct()
    )


def require_compute_ops(actor) -> None:
    if not roles_of(actor).is_compute_ops:
        raise PermissionDenied("Only compute ops can do this.")
