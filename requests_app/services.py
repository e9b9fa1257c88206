"""Writes on compute requests: file, edit, submit, withdraw, decide (PRODUCT.md section 3).

Every transition follows the same four steps inside one transaction: lock the request row, re-check
its state and the policy on the locked row, write the step and the audit row, save with
`update_fields`. Two leads clicking "approve" at once therefore serialise on the row lock; the
second one sees the new state and gets `Conflict`, and nothing changes twice.

Errors: `ValidationError` (bad input, per field), `NotAllowed` (403: who asks may not do this),
`Conflict` (409: the request's state does not allow it, e.g. somebody decided first).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from allocator import selectors as allocator_selectors
from allocator.models import AllocationChange
from allocator.models import Priority as ChangePriority
from audit.services import audit_record
from notifications.models import Notification
from notifications.services import notify

from . import policies
from .models import JUSTIFICATION_MAX, ApprovalStep, ComputeRequest
from .notices import division_notify, executives_notify, request_link
from .validation import JUSTIFICATION_FIELDS, request_clean
from .workflow import DECISIONS, Action, Stage, Status, can_move, decision_target

EDITABLE_FIELDS = (
    "project",
    "pool",
    "gpus",
    "start",
    "end",
    "kind",
    "target_allocation",
    "priority",
    "flexible_start",
    *JUSTIFICATION_FIELDS,
)


class RequestError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotAllowed(RequestError, PermissionDenied):
    """The user may see the request but not do this (403)."""


class Conflict(RequestError):
    """The request's state does not allow this (409): e.g. it was decided meanwhile."""


def check(verdict: policies.Verdict) -> None:
    if not verdict:
        raise (Conflict if verdict.conflict else NotAllowed)(verdict.reason)


def request_values(req: ComputeRequest) -> dict:
    """The editable fields as request_update merges a partial edit onto them."""
    return _snapshot(req)


def _snapshot(req: ComputeRequest) -> dict:
    return {
        "project": req.project_id,
        "pool": req.pool_id,
        "gpus": req.gpus,
        "start": req.start,
        "end": req.end,
        "kind": req.kind,
        "target_allocation": req.target_allocation_id,
        "priority": req.priority,
        "flexible_start": req.flexible_start,
        **{f: getattr(req, f) for f in JUSTIFICATION_FIELDS},
    }


def _lock(request_id: int) -> ComputeRequest:
    # no_key: the lock must not block inserts of rows referencing this one (steps, audit).
    return (
        ComputeRequest.objects.select_for_update(no_key=True, of=("self",))
        .select_related("project__team__division", "pool", "requester", "change")
        .get(pk=request_id)
    )


def _lock_visible(*, user, request_id: int) -> ComputeRequest:
    from django.http import Http404

    try:
        req = _lock(request_id)
    except ComputeRequest.DoesNotExist:
        raise Http404("No such request.") from None
    if not policies.can_view(user, req):
        raise Http404("No such request.")
    return req


# --- Filing and editing ---


@transaction.atomic
def request_create(*, user, data: dict) -> ComputeRequest:
    """File a draft for one of the user's teams' projects."""
    cleaned = request_clean(user=user, data=data)
    req = ComputeRequest.objects.create(requester=user, status=Status.DRAFT, **cleaned)
    audit_record(
        actor=user,
        action="request.create",
        obj=req,
        after={"status": req.status, **_snapshot(req)},
        message=f"{user} filed a draft request for {req.gpus} GPUs of {req.pool}.",
    )
    return req


@transaction.atomic
def request_update(*, user, request_id: int, data: dict) -> ComputeRequest:
    """Edit a draft, or a request sent back for changes. `data` may be partial."""
    req = _lock_visible(user=user, request_id=request_id)
    check(policies.can_edit(user, req))
    before = _snapshot(req)
    merged = {**before, **{k: v for k, v in data.items() if k in EDITABLE_FIELDS}}
    cleaned = request_clean(user=user, data=merged)
    changed = []
    for field, value in cleaned.items():
        if getattr(req, field) != value:
            setattr(req, field, value)
            changed.append(field)
    if not changed:
        return req
    req.save(update_fields=[*changed, "updated_at"])
    after = _snapshot(req)
    audit_record(
        actor=user,
        action="request.update",
        obj=req,
        before={k: before[k] for k in after if before[k] != after[k]},
        after={k: after[k] for k in after if before[k] != after[k]},
        message=f"{user} edited {', '.join(f.replace('_', ' ') for f in changed)}.",
    )
    return req


# --- Routing (PRODUCT.md section 3) ---


def executive_reasons(req: ComputeRequest) -> list[str]:
    """The reasons this request needs executive review, as sentences; empty if it doesn't."""
    reasons = []
    division = req.project.team.division
    start, end = req.start, req.end
    check = allocator_selectors.share_check(
        pool_id=req.pool_id, division_id=division.pk, gpus=req.gpus, start=start, end=end
    )
    if check.exceeds:
        reasons.append(check.sentence(division.name, req.pool.name))
    large = settings.ALLOTMENT["LARGE_REQUEST_GPUS"]
    if req.gpus >= large:
        reasons.append(f"asks for {req.gpus} GPUs, at or above the {large}-GPU large-request mark")
    if req.priority == ComputeRequest.Priority.URGENT:
        reasons.append("is marked urgent")
    # Executive review, not a division-review warning: GPUs held past the date the project was
    # planned to end are taken from everyone else's future, a cross-division question, and a
    # lead approving their own division's overrun is the case the second stage exists for.
    expected_end = req.project.expected_end
    if expected_end is not None and end is not None:
        project_ends = datetime.combine(expected_end + timedelta(days=1), time.min, tzinfo=UTC)
        if end > project_ends:
            reasons.append(
                f"runs until {end.astimezone(UTC):%Y-%m-%d}, after project {req.project.name}'s "
                f"expected end ({expected_end:%Y-%m-%d})"
            )
    return reasons


PENDING_STAGES = (Status.PENDING_DIVISION, Status.PENDING_EXECUTIVE)


def _move(req: ComputeRequest, target: str, *, actor, action: str, message: str, extra=None):
    """Set the status of a locked request and write its one audit row."""
    if not can_move(req.status, target):  # the workflow table is the last word
        raise Conflict(f"A request cannot go from {req.status} to {target}.")
    before = {"status": req.status}
    req.status = target
    if target in PENDING_STAGES:  # the inbox lists the oldest first (callers save the field)
        req.stage_entered_at = (
            req.submitted_at if target == Status.PENDING_DIVISION else timezone.now()
        )
    audit_record(
        actor=actor,
        action=action,
        obj=req,
        before=before,
        after={"status": target, **(extra or {})},
        message=message,
    )


@transaction.atomic
def request_submit(*, user, request_id: int) -> ComputeRequest:
    req = _lock_visible(user=user, request_id=request_id)
    check(policies.can_submit(user, req))
    # The draft may have gone stale (its start passed, the pool shrank): check it again.
    cleaned = request_clean(user=user, data=_snapshot(req))
    # An extension starts where its allocation ends now, which may have moved since the draft.
    req.start, req.gpus = cleaned["start"], cleaned["gpus"]
    reasons = executive_reasons(req)
    req.round += 1
    req.needs_executive = bool(reasons)
    req.executive_reasons = reasons
    req.submitted_at = timezone.now()
    _move(
        req,
        Status.PENDING_DIVISION,
        actor=user,
        action="request.submit",
        message=f"{user} submitted the request (round {req.round})"
        + (f"; it also needs executive review: it {'; it '.join(reasons)}." if reasons else "."),
        extra={"round": req.round, "executive_reasons": reasons},
    )
    req.save(
        update_fields=[
            "status",
            "round",
            "needs_executive",
            "executive_reasons",
            "submitted_at",
            "stage_entered_at",
            "start",
            "gpus",
            "updated_at",
        ]
    )
    division_notify(req)
    return req


def _cancel_returned_change(req: ComputeRequest, *, actor) -> None:
    """A change the engine sent back to executive review is cancelled when the request is not
    approved after all."""
    if req.change is not None and req.change.status == AllocationChange.Status.NEEDS_REVIEW:
        from allocator.services import allocation_change_cancel

        allocation_change_cancel(change_id=req.change.pk, actor=actor)


@transaction.atomic
def request_withdraw(*, user, request_id: int, comment: str = "") -> ComputeRequest:
    req = _lock_visible(user=user, request_id=request_id)
    check(policies.can_withdraw(user, req))
    _cancel_returned_change(req, actor=user)
    _move(
        req,
        Status.WITHDRAWN,
        actor=user,
        action="request.withdraw",
        message=f"{user} withdrew the request." + (f" {comment}" if comment else ""),
    )
    req.save(update_fields=["status", "updated_at"])
    return req


# --- Deciding ---


def _apply_approval(req: ComputeRequest, *, actor, executive_reviewed: bool) -> None:
    from allocator import services as allocator_services

    if req.change is not None and req.change.status == AllocationChange.Status.NEEDS_REVIEW:
        # The engine sent it back because the share rule came to hold at apply time.
        allocator_services.allocation_change_resume(
            change_id=req.change.pk, executive_reviewed=executive_reviewed, actor=actor
        )
        return
    assert req.approved_at is not None, "request_decide sets approved_at before approving"
    req.change = allocator_services.allocation_change_create(
        pool_id=req.pool_id,
        project_id=req.project_id,
        kind=req.kind,
        target_allocation_id=req.target_allocation_id,
        gpus=req.gpus,
        start=req.start,
        end=req.end,
        flexible_start=req.flexible_start,
        priority=ChangePriority[req.priority.upper()],
        executive_reviewed=executive_reviewed,
        requested_by=req.requester,
        approved_at=req.approved_at,
    )


@transaction.atomic
def request_decide(*, user, request_id: int, action: str, comment: str = "") -> ComputeRequest:
    """Approve, reject or request changes on the stage the request waits for."""
    if action not in DECISIONS:
        raise ValidationError({"action": ["Unknown decision."]})
    req = _lock_visible(user=user, request_id=request_id)
    steps = list(req.steps.filter(round=req.round))
    capacity = policies.decide_capacity(user, req, steps=steps)
    check(capacity.verdict)
    comment = (comment or "").strip()
    if action != Action.APPROVE and not comment:
        raise ValidationError({"comment": ["Say why: a comment is required for this decision."]})
    if len(comment) > JUSTIFICATION_MAX:
        raise ValidationError({"comment": [f"At most {JUSTIFICATION_MAX} characters."]})
    if "\x00" in comment:
        raise ValidationError({"comment": ["Remove the null character from the text."]})
    stage = policies.current_stage(req)
    assert stage is not None, "can_decide passed: the request waits at a review stage"
    decision = DECISIONS[action]
    try:
        with transaction.atomic():
            step = ApprovalStep.objects.create(
                request=req,
                round=req.round,
                stage=stage,
                decision=decision,
                decider=user,
                on_behalf_of_id=capacity.on_behalf_of_id,
                comment=comment,
            )
    except IntegrityError:  # backstop: the row lock should make this unreachable
        raise Conflict("This stage was decided already.") from None

    stage_label = Stage(stage).label.lower()
    update_fields = ["status", "updated_at"]
    target = decision_target(decision, stage=stage, needs_executive=req.needs_executive)
    if target == Status.PENDING_EXECUTIVE:
        update_fields.append("stage_entered_at")
    elif target == Status.APPROVED:
        req.approved_at = timezone.now()
        update_fields += ["approved_at", "change"]

    verb = {
        ApprovalStep.Decision.APPROVED: "approved",
        ApprovalStep.Decision.REJECTED: "rejected",
        ApprovalStep.Decision.CHANGES_REQUESTED: "asked for changes in",
    }[decision]
    who = str(user) + (f" on behalf of {capacity.acting.delegator_name}" if capacity.acting else "")
    _move(
        req,
        target,
        actor=user,
        action=f"request.{action}",
        message=f"{who} {verb} the {stage_label}" + (f": {comment}" if comment else "."),
        extra={
            "stage": stage,
            "decision": decision,
            "round": req.round,
            "step": step.pk,
            "on_behalf_of": capacity.acting.delegator_name if capacity.acting else None,
        },
    )
    if target == Status.APPROVED:
        _apply_approval(req, actor=user, executive_reviewed=stage == Stage.EXECUTIVE)
    elif stage == Stage.EXECUTIVE:
        _cancel_returned_change(req, actor=user)
    req.save(update_fields=update_fields)

    if target == Status.APPROVED:
        # What approval leads to (allocated from when, waiting until when and why, back to
        # executive review) is known only once the engine has applied it: the requester is
        # told then, by receivers.on_change_settled.
        return req
    outcome = {
        Status.PENDING_EXECUTIVE: "it now goes to executive review",
        Status.REJECTED: "it is rejected",
        Status.CHANGES_REQUESTED: "please edit and resubmit it",
    }[target]
    notify(
        recipients=[req.requester],
        kind=Notification.Kind.DECIDED,
        message=f"{who} {verb} the {stage_label} of your request #{req.pk}; {outcome}."
        + (f" Comment: {comment}" if comment else ""),
        link=request_link(req),
    )
    if target == Status.PENDING_EXECUTIVE:
        executives_notify(req, exclude=[user])
    return req
