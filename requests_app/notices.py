"""Notices a request's routing sends: its division's leads, then the executives, are told it
waits for them (services.py and receivers.py send them)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.urls import reverse

from notifications.models import Notification
from notifications.services import notify
from org.models import RoleGrant

from .models import ComputeRequest


def request_link(req: ComputeRequest) -> str:
    return reverse("requests:detail", args=[req.pk])


def _users_with_role(role: str, *, division_id: int | None = None, exclude=()):
    users = get_user_model().objects.filter(role_grants__role=role, is_active=True)
    if division_id is not None:
        users = users.filter(role_grants__division_id=division_id)
    return users.exclude(pk__in=[u.pk for u in exclude if u is not None]).distinct()


def division_notify(req: ComputeRequest) -> None:
    leads = _users_with_role(
        RoleGrant.Role.DIVISION_LEAD,
        division_id=req.project.team.division_id,
        exclude=[req.requester],
    )
    notify(
        recipients=leads,
        kind=Notification.Kind.SUBMITTED,
        message=f"{req.requester} asks for {req.gpus} GPUs of {req.pool} for {req.project}: "
        f"request #{req.pk} waits for your division review.",
        link=request_link(req),
        dedupe_key=f"request-{req.pk}-round-{req.round}-division",
    )


def executives_notify(req: ComputeRequest, *, exclude=()) -> None:
    """Tell the executives (all but the requester and `exclude`) a request waits for them."""
    execs = _users_with_role(RoleGrant.Role.EXECUTIVE, exclude=[req.requester, *exclude])
    notify(
        recipients=execs,
        kind=Notification.Kind.SUBMITTED,
        message=f"Request #{req.pk} ({req.gpus} GPUs of {req.pool} for {req.project}) waits for "
        "your executive review.",
        link=request_link(req),
        dedupe_key=f"request-{req.pk}-round-{req.round}-executive",
    )
