"""Creating a change and deciding about one made elsewhere: the approved request's change is
created and dispatched; executives resume or cancel one the engine sent back; compute ops retry
a failed apply."""

from __future__ import annotations

import logging
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from org.models import Project

from .. import locks
from ..faults import fault_point
from ..models import MAX_GPUS, Allocation, AllocationChange, Pool, Priority
from ..outcomes import Outcome
from ..signals import change_settled
from .records import Status, require_compute_ops

logger = logging.getLogger(__name__)


def dispatch(change_id: int) -> None:
    """Send the apply task; runs after commit. If the broker is down, the periodic sweep
    (changes_resend_stuck) sends it later: dispatched_at stays as it was."""
    from ..tasks import apply_change

    try:
        # With the broker down this gives up after Celery's short publish retries (the task
        # ignores its result, so the result backend's long reconnect loop is not involved).
        apply_change.delay(change_id)
    except Exception:
        logger.exception("could not send the apply task for change %s", change_id)
        return
    AllocationChange.objects.filter(pk=change_id, status=Status.PENDING).update(
        dispatched_at=timezone.now()
    )


def _dispatch_after_commit(change_id: int) -> None:
    fault_point("view_after_commit_before_publish", change_id=change_id)
    dispatch(change_id)


def _dispatch_on_commit(change_id: int) -> None:
    # robust: whatever happens to the publish, the decision that committed stands and its
    # response is not a 500 (the sweep covers a change that was never sent).
    def dispatch_after_commit():  # a named function: robust on_commit logs its __qualname__
        _dispatch_after_commit(change_id)

    transaction.on_commit(dispatch_after_commit, robust=True)


@transaction.atomic
def allocation_change_create(
    *,
    pool_id: int,
    project_id: int,
    kind: str,
    target_allocation_id: int | None,
    gpus: int,
    start: datetime,
    end: datetime,
    flexible_start: bool,
    priority: int,
    executive_reviewed: bool,
    requested_by,
    approved_at: datetime,
) -> AllocationChange:
    """The change an approved request asks for, created inside the caller's transaction; the
    apply task is sent once that transaction commits."""
    errors: dict[str, list[str]] = {}
    if kind not in AllocationChange.Kind.values:
        errors["kind"] = ["Unknown kind."]
    if not 0 < gpus <= MAX_GPUS:
        errors["gpus"] = [f"Ask for between 1 and {MAX_GPUS} GPUs."]
    if end <= start:
        errors["end"] = ["The end must be after the start."]
    if priority not in Priority.values:
        errors["priority"] = ["Unknown priority."]
    if not Pool.objects.filter(pk=pool_id).exists():
        errors["pool"] = ["Unknown pool."]
    if not Project.objects.filter(pk=project_id).exists():
        errors["project"] = ["Unknown project."]
    if kind == AllocationChange.Kind.EXTENSION and not target_allocation_id:
        errors["target_allocation"] = ["An extension names the allocation it extends."]
    if (
        target_allocation_id
        and not Allocation.objects.filter(
            pk=target_allocation_id, project_id=project_id, pool_id=pool_id
        ).exists()
    ):
        errors["target_allocation"] = ["Not an allocation of this project in this pool."]
    if errors:
        raise ValidationError(errors)
    change = AllocationChange.objects.create(
        pool_id=pool_id,
        project_id=project_id,
        kind=kind,
        target_allocation_id=target_allocation_id,
        gpus=gpus,
        start=start,
        end=end,
        flexible_start=flexible_start,
        priority=priority,
        executive_reviewed=executive_reviewed,
        requested_by=requested_by,
        approved_at=approved_at,
    )
    audit_record(
        actor=None,
        action="allocation_change.create",
        obj=change,
        after={"status": change.status, "gpus": gpus, "start": start, "end": end, "kind": kind},
        message="Approved: queued for the apply engine.",
    )
    _dispatch_on_commit(change.pk)
    return change


def _locked_change(change_id: int) -> AllocationChange:
    change = locks.lock_change(change_id)
    if change is None:
        raise AllocationChange.DoesNotExist(f"change {change_id} does not exist")
    return change


@transaction.atomic
def allocation_change_resume(
    *, change_id: int, executive_reviewed: bool, actor
) -> AllocationChange:
    """Executives approved a change the engine had sent back: apply it again."""
    change = _locked_change(change_id)
    if change.status == Status.PENDING:  # told twice
        return change
    if change.status != Status.NEEDS_REVIEW:
        raise ValidationError(f"Change #{change.pk} is {change.get_status_display().lower()}.")
    before = {"status": change.status, "executive_reviewed": change.executive_reviewed}
    change.status = Status.PENDING
    change.executive_reviewed = executive_reviewed
    change.attempts = 0
    change.save(update_fields=["status", "executive_reviewed", "attempts"])
    audit_record(
        actor=actor,
        action="allocation_change.resume",
        obj=change,
        before=before,
        after={"status": change.status, "executive_reviewed": change.executive_reviewed},
        message="Executive review done: queued for the apply engine again.",
    )
    _dispatch_on_commit(change.pk)
    return change


@transaction.atomic
def allocation_change_cancel(*, change_id: int, actor) -> AllocationChange:
    """The request of a change sent back to executive review was not approved after all."""
    change = _locked_change(change_id)
    if change.status == Status.CANCELLED:
        return change
    if change.status != Status.NEEDS_REVIEW:
        raise ValidationError(f"Change #{change.pk} is {change.get_status_display().lower()}.")
    before = {"status": change.status}
    change.status = Status.CANCELLED
    change.save(update_fields=["status"])
    audit_record(
        actor=actor,
        action="allocation_change.cancel",
        obj=change,
        before=before,
        after={"status": change.status},
        message="Cancelled: the request was not approved at executive review.",
    )
    return change


@transaction.atomic
def allocation_change_retry(*, change_id: int, actor) -> AllocationChange:
    """Compute ops: try a failed apply again."""
    require_compute_ops(actor)
    change = _locked_change(change_id)
    if change.status != Status.FAILED:
        raise ValidationError(
            f"Only a failed apply can be retried; change #{change.pk} is "
            f"{change.get_status_display().lower()}."
        )
    before = {"status": change.status, "attempts": change.attempts, "error": change.last_error}
    change.status = Status.PENDING
    change.attempts = 0
    change.last_error = ""
    change.save(update_fields=["status", "attempts", "last_error"])
    audit_record(
        actor=actor,
        action="allocation_change.retry",
        obj=change,
        before=before,
        after={"status": change.status},
        message=f"{actor} retried applying change #{change.pk}.",
    )
    change_settled.send(
        sender=AllocationChange, change=change, outcome=Outcome.RETRIED, reasons=[], actor=actor
    )
    _dispatch_on_commit(change.pk)
    return change
