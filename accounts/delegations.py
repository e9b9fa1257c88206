"""Delegation and out-of-office: reads and writes. Who may decide a stage *with* a delegation is
requests_app/policies.py's question; this module only says which delegations are in force."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from audit.services import audit_record
from notifications.models import Notification
from notifications.services import notify
from org.models import Division, RoleGrant
from org.roles import roles_of

from .models import Delegation

# A longer absence is a change of who holds the role, made by an administrator.
MAX_DAYS = 92


@dataclass(frozen=True)
class Acting:
    """One delegation the delegate may act under now: for `delegator`, in `role` (of
    `division_id` for a lead)."""

    delegation_id: int
    delegator_id: int
    delegator_name: str
    role: str
    division_id: int | None

    def covers_division_review(self, division_id: int) -> bool:
        return self.role == Delegation.Role.DIVISION_LEAD and self.division_id == division_id

    @property
    def covers_executive_review(self) -> bool:
        return self.role == Delegation.Role.EXECUTIVE


def _delegator_still_holds_role():
    """A delegation lends a role the delegator holds: once they lose it, so does the delegate.
    (A lead's grant names the division; an executive's names none.)"""
    return Exists(
        RoleGrant.objects.filter(user=OuterRef("delegator"), role=OuterRef("role")).filter(
            Q(division_id=OuterRef("division_id")) | Q(division__isnull=True)
        )
    )


def acting_for(user) -> tuple[Acting, ...]:
    """The delegations `user` may act under now. One query, cached on the user object for the
    request, as org.roles does for roles."""
    if user is None or not user.is_authenticated:
        return ()
    cached = getattr(user, "_allotment_acting", None)
    if cached is not None:
        return cached
    rows = (
        Delegation.objects.active()
        .filter(delegate=user)
        .filter(_delegator_still_holds_role())
        .values_list("pk", "delegator_id", "delegator__username", "role", "division_id")
        .order_by("starts_at", "pk")
    )
    acting = tuple(Acting(*row) for row in rows)
    user._allotment_acting = acting
    return acting


def forget_acting(user) -> None:
    if hasattr(user, "_allotment_acting"):
        del user._allotment_acting


def delegations_of(user):
    """Active delegations `user` gave or received, for GET /api/v1/me/ and their page."""
    return (
        Delegation.objects.active()
        .filter(Q(delegator=user) | Q(delegate=user))
        .select_related("delegator", "delegate", "division")
    )


def delegations_listed_for(user):
    """Every delegation `user` gave or received, current and future first, then past ones."""
    return (
        Delegation.objects.filter(Q(delegator=user) | Q(delegate=user))
        .select_related("delegator", "delegate", "division")
        .order_by("-ends_at", "-id")
    )


def _state(d: Delegation) -> dict:
    return {
        "delegator": d.delegator.username,
        "delegate": d.delegate.username,
        "role": d.role,
        "division": d.division.name if d.division is not None else None,
        "starts_at": d.starts_at,
        "ends_at": d.ends_at,
        "revoked_at": d.revoked_at,
    }


@transaction.atomic
def delegation_create(
    *,
    actor,
    delegate_username: str,
    role: str,
    division: Division | None,
    starts_at: datetime,
    ends_at: datetime,
) -> Delegation:
    """`actor` names a delegate for their own stage over [starts_at, ends_at)."""
    roles = roles_of(actor)
    if role == Delegation.Role.DIVISION_LEAD:
        if division is None:
            raise ValidationError({"division": ["Name the division whose review you delegate."]})
        if not roles.leads(division.pk):
            raise PermissionDenied(f"You are not a lead of {division}; you cannot delegate it.")
    elif role == Delegation.Role.EXECUTIVE:
        if not roles.is_executive:
            raise PermissionDenied("You are not an executive; you cannot delegate that review.")
        division = None
    else:
        raise ValidationError({"role": ["Choose division_lead or executive."]})
    delegate = (
        get_user_model()
        .objects.filter(username__iexact=(delegate_username or "").strip(), is_active=True)
        .first()
    )
    if delegate is None:
        raise ValidationError({"delegate": ["No active user has this username."]})
    if delegate.pk == actor.pk:
        raise ValidationError({"delegate": ["Name someone else: you cannot delegate to yourself."]})
    now = timezone.now()
    if ends_at <= starts_at:
        raise ValidationError({"end": ["The end must be after the start."]})
    if ends_at <= now:
        raise ValidationError({"end": ["The end is in the past."]})
    if ends_at - max(starts_at, now) > timedelta(days=MAX_DAYS):
        raise ValidationError({"end": [f"At most {MAX_DAYS} days."]})
    delegation = Delegation.objects.create(
        delegator=actor,
        delegate=delegate,
        role=role,
        division=division,
        starts_at=starts_at,
        ends_at=ends_at,
    )
    what = f"the division review of {division}" if division else "the executive review"
    audit_record(
        actor=actor,
        action="delegation.create",
        obj=delegation,
        after=_state(delegation),
        message=f"{actor} named {delegate} to decide {what} on their behalf "
        f"from {starts_at:%Y-%m-%d %H:%M} to {ends_at:%Y-%m-%d %H:%M}.",
    )
    notify(
        recipients=[delegate],
        kind=Notification.Kind.INFO,
        message=f"{actor} named you to decide {what} on their behalf from "
        f"{starts_at:%Y-%m-%d %H:%M} to {ends_at:%Y-%m-%d %H:%M}.",
        link=reverse("requests:inbox"),
    )
    return delegation


@transaction.atomic
def delegation_end(*, actor, delegation_id: int) -> Delegation:
    """The delegator ends a delegation now (or cancels one that has not begun)."""
    delegation = (
        Delegation.objects.select_for_update(of=("self",))
        .select_related("delegator", "delegate", "division")
        .filter(pk=delegation_id)
        .filter(Q(delegator=actor) | Q(delegate=actor))
        .first()
    )
    if delegation is None:
        from django.http import Http404

        raise Http404("No such delegation.")
    if delegation.delegator_id != actor.pk:
        raise PermissionDenied("Only the person who gave a delegation may end it.")
    now = timezone.now()
    if delegation.revoked_at is not None or delegation.ends_at <= now:
        return delegation  # over already: ending it again changes nothing
    before = _state(delegation)
    delegation.revoked_at = now
    delegation.save(update_fields=["revoked_at"])
    audit_record(
        actor=actor,
        action="delegation.end",
        obj=delegation,
        before=before,
        after=_state(delegation),
        message=f"{actor} ended the delegation to {delegation.delegate}.",
    )
    return delegation
