"""The engine's hand-back (allocator.signals.change_settled): the request follows its change.

Runs inside the engine's transaction with the change row locked, so the request's status and its
change's status commit together or not at all. The engine notifies owners about allocated,
waiting and failed; this receiver notifies executives when a change comes back for their review.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from allocator.outcomes import Outcome
from audit.services import audit_record

from .models import ApprovalStep, ComputeRequest
from .workflow import OUTCOME_STATUS, Stage, Status, can_move

logger = logging.getLogger(__name__)

OUTCOME_MESSAGE = {
    Outcome.APPLIED: "The GPUs were allocated.",
    Outcome.WAITING: "The GPUs are not free yet; the request waits in the pool's queue.",
    Outcome.NEEDS_REVIEW: "At apply time the request needs executive review",
    Outcome.FAILED: "Applying the request failed",
    Outcome.RETRIED: "Compute ops retried applying the request.",
}


def on_change_settled(sender, *, change, outcome, reasons=None, actor=None, **kwargs) -> None:
    target = OUTCOME_STATUS.get(outcome)
    if target is None:
        logger.warning("change_settled with unknown outcome %r for change %s", outcome, change.pk)
        return
    req = (
        ComputeRequest.objects.select_for_update(no_key=True, of=("self",))
        .select_related("project__team", "pool", "requester")
        .filter(change_id=change.pk)
        .first()
    )
    if req is None:  # a change not made for a request
        return
    if req.status == target:  # told twice (a redelivered task): nothing moves
        return
    if not can_move(req.status, target):
        # Never raise into the engine's transaction: that would undo an apply that happened.
        logger.error(
            "request #%s is %s; ignoring change %s outcome %s",
            req.pk,
            req.status,
            change.pk,
            outcome,
        )
        return
    reasons = list(reasons or [])
    just_approved = req.status == Status.APPROVED
    before = {"status": req.status}
    req.status = target
    fields = ["status", "updated_at"]
    message = OUTCOME_MESSAGE[outcome]
    if outcome == Outcome.NEEDS_REVIEW:
        req.needs_executive = True
        req.executive_reasons = reasons
        # Back in a review stage: the inbox counts its age from now.
        req.stage_entered_at = timezone.now()
        fields += ["needs_executive", "executive_reasons", "stage_entered_at"]
        message += (": it " + "; it ".join(reasons) + ".") if reasons else "."
    elif outcome == Outcome.FAILED:
        message += (": " + "; ".join(reasons)) if reasons else "."
    elif reasons:
        message += " " + "; ".join(reasons)
    req.save(update_fields=fields)
    audit_record(
        actor=actor,
        action=f"request.{outcome}",
        obj=req,
        before=before,
        after={"status": target, "change": change.pk, "reasons": reasons},
        message=message,
    )
    if just_approved:
        _approval_notice(req, change=change, outcome=outcome, reasons=reasons)
    if target == Status.PENDING_EXECUTIVE:
        from .notices import executives_notify

        division_deciders = ApprovalStep.objects.filter(
            request=req, round=req.round, stage=Stage.DIVISION
        ).select_related("decider")
        executives_notify(req, exclude=[s.decider for s in division_deciders])


def _approval_notice(req: ComputeRequest, *, change, outcome: str, reasons: list[str]) -> None:
    """The requester's notice of the approval, sent once the engine has settled it, so that it
    says what happens: allocated (from when), waiting (until when and why), back to executive
    review (why), or failed."""
    from allocator.waiting import when
    from notifications.models import Notification
    from notifications.services import notify

    from .notices import request_link

    step = (
        ApprovalStep.objects.filter(
            request=req, round=req.round, decision=ApprovalStep.Decision.APPROVED
        )
        .select_related("decider")
        .order_by("-decided_at", "-pk")
        .first()
    )
    who = (
        f"{step.decider} approved the {Stage(step.stage).label.lower()}"
        if step is not None
        else "The request was approved"
    )
    if outcome == Outcome.APPLIED and change.allocation is not None:
        allocation = change.allocation
        then = (
            "They are allocated at once"
            if allocation.start <= timezone.now()
            else f"They are allocated from {when(allocation.start)}"
        )
        what = (
            f"{then}: {allocation.gpus} GPUs of {req.pool.name} until {when(allocation.end)}."
            + (" " + " ".join(reasons) if reasons else "")
        )
    elif outcome == Outcome.WAITING:
        what = f"It waits in the {req.pool.name} queue. " + " ".join(reasons)
    elif outcome == Outcome.NEEDS_REVIEW:
        what = "It goes back to executive review: it " + "; it ".join(reasons) + "."
    else:
        what = "Applying it failed: " + "; ".join(reasons) + "."
    notify(
        recipients=[req.requester],
        kind=Notification.Kind.DECIDED,
        message=f"{who} of your request #{req.pk}. {what}".strip(),
        link=request_link(req),
        dedupe_key=f"request-{req.pk}-approved-{step.pk if step is not None else change.pk}",
    )
