"""Writes of the GPU pool: applying approved changes, serving waiting queues, releases, reclaims
and transfers, capacity changes, expiry (PRODUCT.md section 4).

Every write that changes what a pool holds or can hold runs under that pool's row lock
(allocator/locks.py gives the order), recomputes the pool's timeline from the database after
taking the lock, and writes its ledger and audit rows in the same transaction. The invariant —
held(t) <= capacity(t) at every instant — therefore holds under any interleaving of web
processes and workers on any number of machines.

allocator never imports requests_app: it tells it what became of a change through
allocator.signals.change_settled, sent inside the transaction with the change row locked.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import OperationalError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from audit.services import audit_record
from notifications.models import Notification
from notifications.services import notify
from notifications.wording import time_until_words
from org.models import Project, RoleGrant
from org.roles import roles_of

from . import locks
from .faults import fault_point
from .models import (
    Allocation,
    AllocationChange,
    CapacityChange,
    LedgerEntry,
    Pool,
    Priority,
    Reclaim,
)
from .planning import Demand, demand_for, plan_queue, share_refusal
from .selectors import holding_allocations, horizon, pool_timeline, queue_key, share_check
from .signals import change_settled
from .timeline import Span

logger = logging.getLogger(__name__)

MAX_GPUS = 1_000_000  # far above any pool; bounds bad input before it reaches the database
MAX_NOTICE_HOURS = 24 * 365
Status = AllocationChange.Status


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _snapshot(allocation: Allocation) -> dict:
    return {
        "gpus": allocation.gpus,
        "start": allocation.start,
        "end": allocation.end,
        "state": allocation.state,
    }


def _ledger(
    *, allocation: Allocation, kind: str, actor=None, change=None, note: str = ""
) -> LedgerEntry:
    """One append-only ledger row: the allocation as it stands after the change."""
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


def _project_link(project_id: int) -> str:
    return reverse("org:project-detail", args=[project_id])


def _team_members(team_id: int) -> list:
    return list(
        get_user_model().objects.filter(memberships__team_id=team_id, is_active=True).distinct()
    )


def _compute_ops_users() -> list:
    return list(
        get_user_model()
        .objects.filter(role_grants__role=RoleGrant.Role.COMPUTE_OPS, is_active=True)
        .distinct()
    )


def _require_compute_ops(actor) -> None:
    if not roles_of(actor).is_compute_ops:
        raise PermissionDenied("Only compute ops can do this.")


# --- Creating and dispatching changes -----------------------------------------------------


def _dispatch(change_id: int) -> None:
    """Send the apply task; runs after commit. If the broker is down, the periodic sweep
    (resend_stuck_changes) sends it later: dispatched_at stays as it was."""
    from .tasks import apply_change

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
    _dispatch(change_id)


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
    if not isinstance(gpus, int) or isinstance(gpus, bool) or not 0 < gpus <= MAX_GPUS:
        errors["gpus"] = [f"Ask for between 1 and {MAX_GPUS} GPUs."]
    if start is None or end is None or end <= start:
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
        flexible_start=bool(flexible_start),
        priority=priority,
        executive_reviewed=bool(executive_reviewed),
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


# --- Applying a change --------------------------------------------------------------------


def allocation_change_apply(*, change_id: int) -> str | None:
    """Apply one approved change: allocate it (from its start, or a later one when that is
    acceptable), put it in the waiting queue, or send it back to executive review when the
    share rule now holds. Idempotent: a second run, or a run after a worker died midway, finds
    the change no longer pending (under its lock) and does nothing. Returns the outcome, or None
    when there was nothing to do.

    Two transactions: the first counts the attempt and commits, so a change whose apply keeps
    crashing is marked failed after MAX_APPLY_ATTEMPTS instead of looping forever; the second
    does the work under the pool lock."""
    change = _claim_attempt(change_id)
    if change is None:
        return None
    fault_point("before_tx", change_id=change_id)
    with transaction.atomic(durable=True):
        pool = locks.lock_pool(change.pool_id)
        # Pool first, then the change (locks.py order). SKIP LOCKED: if another transaction
        # holds the change row, another worker (or a decision about it) is on it.
        change = locks.lock_change(change_id, skip_locked=True)
        if change is None:
            _raise_if_busy(change_id)
            return None
        if change.status != Status.PENDING:
            return None
        outcomes = _serve(pool, extra=change)
        fault_point("in_tx_before_commit", change_id=change_id)
        return outcomes.get(change.pk)


class ChangeBusy(OperationalError):
    """The change is pending but its row is locked by another transaction: a worker applying
    it, or only for a moment (the dispatch marking it sent, an insert referencing it). Not a
    reason to drop the message: the task retries shortly (an OperationalError, like PostgreSQL's
    lock_not_available); the retry finds it applied, or applies it."""


def _raise_if_busy(change_id: int) -> None:
    if AllocationChange.objects.filter(pk=change_id, status=Status.PENDING).exists():
        raise ChangeBusy(f"change {change_id} is locked by another transaction")


def _claim_attempt(change_id: int) -> AllocationChange | None:
    with transaction.atomic(durable=True):
        change = locks.lock_change(change_id, skip_locked=True)
        if change is None:
            _raise_if_busy(change_id)
            return None
        if change.status != Status.PENDING:
            return None
        if change.attempts >= settings.ALLOTMENT["MAX_APPLY_ATTEMPTS"]:
            _settle_failed(
                change,
                reason=f"applying failed {change.attempts} times"
                + (f"; last error: {change.last_error}" if change.last_error else ""),
            )
            return None
        change.attempts += 1
        change.save(update_fields=["attempts"])
        return change


def allocation_change_record_error(*, change_id: int, error: str) -> None:
    """Called by the task when an apply raised (its transaction rolled back): keep the error for
    compute ops, and give up once the attempts are spent."""
    with transaction.atomic():
        change = locks.lock_change(change_id)
        if change is None or change.status != Status.PENDING:
            return
        change.last_error = error[:2000]
        change.save(update_fields=["last_error"])
        if change.attempts >= settings.ALLOTMENT["MAX_APPLY_ATTEMPTS"]:
            _settle_failed(change, reason=f"applying failed {change.attempts} times: {error}")


def _demand_for(change: AllocationChange, now: datetime, targets: dict[int, Allocation]):
    """(Demand, None) for a change the engine can still serve, or (None, why not)."""
    return demand_for(change, now, targets, horizon=horizon())


def _share_accept(pool: Pool, change: AllocationChange, span: Span) -> str | None:
    """The share rule at apply time: the sentence for executive review when the span would put
    the change's division above its share (and it was not reviewed by executives), else None."""
    division = change.project.team.division

    def check(span: Span):
        return share_check(
            pool_id=pool.pk,
            division_id=division.pk,
            gpus=span.gpus,
            start=span.start,
            end=span.end,
        )

    refusal = share_refusal(change.executive_reviewed, span, check)
    return refusal.sentence(division.name, pool.name) if refusal is not None else None


def _serve(
    pool: Pool, *, extra: AllocationChange | None = None, now: datetime | None = None
) -> dict[int, str]:
    """Serve the pool's waiting queue (and `extra`, a pending change being applied, in its place
    in the queue) by the rule in allocator/planning.py. The caller holds the pool lock.
    Returns {change id: outcome} for the changes whose fate was decided or confirmed."""
    now = now or timezone.now()
    changes = locks.lock_waiting_changes(pool.pk)
    if extra is not None:
        changes.append(extra)
    if not changes:
        return {}
    changes.sort(key=queue_key)
    target_ids = [c.target_allocation_id for c in changes if c.target_allocation_id]
    targets = locks.lock_allocations(target_ids) if target_ids else {}
    timeline = pool_timeline(pool.pk, origin=now)

    outcomes: dict[int, str] = {}
    by_key: dict[int, AllocationChange] = {}
    demands = []
    for change in changes:
        demand, problem = _demand_for(change, now, targets)
        if problem:
            _settle_failed(change, reason=problem)
            outcomes[change.pk] = "failed"
            continue
        by_key[change.pk] = change
        demands.append(demand)

    def accept(demand: Demand, span: Span) -> bool:
        change = by_key[demand.key]
        refused = _share_accept(pool, change, span)
        if refused:
            _settle_needs_review(change, reason=refused)
            outcomes[change.pk] = "needs_review"
            return False
        _settle_applied(change, span, targets=targets, now=now)
        outcomes[change.pk] = "applied"
        return True

    plan = plan_queue(
        timeline, demands, accept=accept, horizon_days=settings.ALLOTMENT["HORIZON_DAYS"]
    )
    for key, why in plan.waiting.items():
        change = by_key[key]
        if change.status != Status.WAITING:
            _settle_waiting(change, reason=why)
        outcomes[key] = "waiting"
    return outcomes


def _settle_applied(
    change: AllocationChange, span: Span, *, targets: dict[int, Allocation], now: datetime
) -> None:
    reasons = []
    if change.kind == AllocationChange.Kind.EXTENSION:
        allocation = targets[change.target_allocation_id]
        allocation.end = span.end
        allocation.save(update_fields=["end"])
        _ledger(allocation=allocation, kind=LedgerEntry.Kind.EXTEND, change=change)
        message = f"Allocation #{allocation.pk} of {change.project} now ends {_fmt(span.end)}."
    else:
        allocation = Allocation.objects.create(
            pool_id=change.pool_id,
            project_id=change.project_id,
            gpus=span.gpus,
            start=span.start,
            end=span.end,
            change=change,
        )
        _ledger(allocation=allocation, kind=LedgerEntry.Kind.GRANT, change=change)
        if span.start > max(change.start, now):
            reasons.append(
                f"It starts {_fmt(span.start)}, later than asked: that was the earliest start "
                "with the GPUs free for the whole period."
            )
        message = (
            f"{span.gpus} GPUs of {change.pool} allocated to {change.project}, "
            f"{_fmt(span.start)} → {_fmt(span.end)}."
        )
    before = {"status": change.status}
    change.status = Status.APPLIED
    change.applied_at = now
    change.allocation = allocation
    change.save(update_fields=["status", "applied_at", "allocation"])
    audit_record(
        actor=None,
        action="allocation_change.apply",
        obj=change,
        before=before,
        after={
            "status": change.status,
            "allocation": allocation.pk,
            "gpus": allocation.gpus,
            "start": allocation.start,
            "end": allocation.end,
        },
        message=" ".join([message, *reasons]),
    )
    change_settled.send(
        sender=AllocationChange, change=change, outcome="applied", reasons=reasons, actor=None
    )
    notify(
        recipients=[*_team_members(change.project.team_id), change.requested_by],
        kind=Notification.Kind.ALLOCATED,
        message=" ".join([message, *reasons]),
        link=_project_link(change.project_id),
        dedupe_key=f"change-{change.pk}-applied",
    )


def _settle_waiting(change: AllocationChange, *, reason: str) -> None:
    before = {"status": change.status}
    change.status = Status.WAITING
    change.save(update_fields=["status"])
    message = f"{change.gpus} GPUs of {change.pool} for {change.project} wait: {reason}."
    audit_record(
        actor=None,
        action="allocation_change.wait",
        obj=change,
        before=before,
        after={"status": change.status},
        message=message,
    )
    change_settled.send(
        sender=AllocationChange, change=change, outcome="waiting", reasons=[reason], actor=None
    )
    notify(
        recipients=[*_team_members(change.project.team_id), change.requested_by],
        kind=Notification.Kind.WAITING,
        message=message,
        link=_project_link(change.project_id),
        dedupe_key=f"change-{change.pk}-waiting",
    )


def _settle_needs_review(change: AllocationChange, *, reason: str) -> None:
    before = {"status": change.status}
    change.status = Status.NEEDS_REVIEW
    change.save(update_fields=["status"])
    audit_record(
        actor=None,
        action="allocation_change.needs_review",
        obj=change,
        before=before,
        after={"status": change.status, "reasons": [reason]},
        message=f"Sent to executive review: it {reason}.",
    )
    change_settled.send(
        sender=AllocationChange,
        change=change,
        outcome="needs_review",
        reasons=[reason],
        actor=None,
    )


def _settle_failed(change: AllocationChange, *, reason: str) -> None:
    before = {"status": change.status}
    change.status = Status.FAILED
    change.last_error = reason[:2000]
    change.save(update_fields=["status", "last_error"])
    message = f"Applying change #{change.pk} ({change.gpus} GPUs of {change.pool} for {change.project}) failed: {reason}."
    audit_record(
        actor=None,
        action="allocation_change.fail",
        obj=change,
        before=before,
        after={"status": change.status, "error": reason},
        message=message,
    )
    change_settled.send(
        sender=AllocationChange, change=change, outcome="failed", reasons=[reason], actor=None
    )
    notify(
        recipients=_compute_ops_users(),
        kind=Notification.Kind.FAILED,
        message=message,
        link=reverse("allocator:ops"),
    )


# --- Decisions about a change made elsewhere -----------------------------------------------


def _locked_change(change_id) -> AllocationChange:
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
    change.executive_reviewed = bool(executive_reviewed)
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
    _require_compute_ops(actor)
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
        sender=AllocationChange, change=change, outcome="retried", reasons=[], actor=actor
    )
    _dispatch_on_commit(change.pk)
    return change


# --- Giving GPUs back ---------------------------------------------------------------------


def _pool_id_of_allocation(allocation_id) -> int:
    pool_id = Allocation.objects.filter(pk=allocation_id).values_list("pool_id", flat=True).first()
    if pool_id is None:
        raise Allocation.DoesNotExist(f"allocation {allocation_id} does not exist")
    return pool_id


def _give_back(allocation: Allocation, *, at: datetime, state: str) -> None:
    """The allocation stops holding GPUs at `at`: its end is cut there when it had started (its
    past holding stays true), and it leaves every holding (selectors.HOLDING_STATES)."""
    if allocation.start < at < allocation.end:
        allocation.end = at
    allocation.state = state
    allocation.save(update_fields=["end", "state"])


def _cancel_scheduled_reclaims(allocation: Allocation, *, actor, why: str) -> None:
    for reclaim in allocation.reclaims.select_for_update().filter(status=Reclaim.Status.SCHEDULED):
        reclaim.status = Reclaim.Status.CANCELLED
        reclaim.save(update_fields=["status"])
        audit_record(
            actor=actor,
            action="reclaim.cancel",
            obj=reclaim,
            before={"status": Reclaim.Status.SCHEDULED},
            after={"status": reclaim.status},
            message=why,
        )


@transaction.atomic
def allocation_release(*, allocation_id: int, actor) -> Allocation:
    """The owning team gives its GPUs back early, without approval."""
    pool = locks.lock_pool(_pool_id_of_allocation(allocation_id))
    allocation = locks.lock_allocations([allocation_id])[allocation_id]
    if not roles_of(actor).member_of(allocation.project.team_id):
        raise PermissionDenied("Only members of the project's team can release its GPUs.")
    now = timezone.now()
    if allocation.state != Allocation.State.ACTIVE or allocation.end <= now:
        raise ValidationError(
            f"Allocation #{allocation.pk} is already {allocation.get_state_display().lower()}."
            if allocation.state != Allocation.State.ACTIVE
            else f"Allocation #{allocation.pk} has already ended."
        )
    before = _snapshot(allocation)
    _give_back(allocation, at=now, state=Allocation.State.RELEASED)
    _ledger(
        allocation=allocation,
        kind=LedgerEntry.Kind.RELEASE,
        actor=actor,
        note="Released early by the team.",
    )
    audit_record(
        actor=actor,
        action="allocation.release",
        obj=allocation,
        before=before,
        after=_snapshot(allocation),
        message=f"{actor} released {allocation.gpus} GPUs of {pool} held by {allocation.project}.",
    )
    _cancel_scheduled_reclaims(allocation, actor=actor, why="The allocation was released.")
    _serve(pool, now=now)
    return allocation


def _parse_int(value, *, field: str, low: int, high: int, errors: dict) -> int | None:
    if value is None or value == "":
        errors.setdefault(field, []).append("This field is required.")
        return None
    if isinstance(value, bool):
        errors.setdefault(field, []).append("Enter a whole number.")
        return None
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        errors.setdefault(field, []).append("Enter a whole number.")
        return None
    if not low <= number <= high:
        errors.setdefault(field, []).append(f"Enter a number from {low} to {high}.")
        return None
    return number


def _clean_text(value, *, field: str, max_length: int, errors: dict, required: bool) -> str:
    text = (value or "").strip() if isinstance(value, str) or value is None else None
    if text is None:
        errors.setdefault(field, []).append("Enter text.")
        return ""
    if "\x00" in text:
        errors.setdefault(field, []).append("Remove the null character from the text.")
    elif required and not text:
        errors.setdefault(field, []).append("This field is required.")
    elif len(text) > max_length:
        errors.setdefault(field, []).append(f"At most {max_length} characters.")
    return text


@transaction.atomic
def allocation_reclaim(
    *,
    allocation_id: int,
    actor,
    new_gpus,
    new_end: datetime | None = None,
    reason: str,
    notice_hours=None,
    transfer_to_id: int | None = None,
) -> Reclaim:
    """Compute ops shrink (to `new_gpus`, 0 for all) and/or shorten (to `new_end`) an allocation,
    effective after a notice period; the owners are told at once. With `transfer_to_id`, the
    GPUs go to that approved change (pending or waiting, same pool) when the reclaim takes
    effect, in the same transaction. A notice of 0 takes effect at once."""
    _require_compute_ops(actor)
    pool = locks.lock_pool(_pool_id_of_allocation(allocation_id))
    allocation = locks.lock_allocations([allocation_id])[allocation_id]
    now = timezone.now()
    errors: dict[str, list[str]] = {}
    if allocation.state != Allocation.State.ACTIVE or allocation.end <= now:
        raise ValidationError(
            {"allocation": [f"Allocation #{allocation.pk} no longer holds GPUs."]}
        )
    if notice_hours is None or notice_hours == "":
        notice_hours = settings.ALLOTMENT["RECLAIM_NOTICE_HOURS"]
    notice = _parse_int(
        notice_hours, field="notice_hours", low=0, high=MAX_NOTICE_HOURS, errors=errors
    )
    gpus = _parse_int(new_gpus, field="new_gpus", low=0, high=allocation.gpus, errors=errors)
    reason = _clean_text(reason, field="reason", max_length=2000, errors=errors, required=True)
    if new_end is not None and not isinstance(new_end, datetime):
        errors.setdefault("new_end", []).append("Enter a date and time.")
        new_end = None
    effective_at = now + timedelta(hours=notice or 0)
    if notice is not None:
        if allocation.end <= effective_at:
            errors.setdefault("notice_hours", []).append(
                f"The allocation ends {_fmt(allocation.end)}, before the notice period is over."
            )
        if new_end is not None and not (effective_at <= new_end < allocation.end):
            errors.setdefault("new_end", []).append(
                f"Shorten to a time between the end of the notice period ({_fmt(effective_at)})"
                f" and the current end ({_fmt(allocation.end)})."
            )
    if gpus is not None and gpus == allocation.gpus and new_end is None:
        errors.setdefault("new_gpus", []).append(
            "Nothing to reclaim: keep fewer GPUs or set an earlier end."
        )
    target = None
    if transfer_to_id not in (None, ""):
        target_id = _parse_int(transfer_to_id, field="transfer_to", low=1, high=2**62, errors={})
        target = (
            AllocationChange.objects.filter(pk=target_id).select_related("project").first()
            if target_id
            else None
        )
        if target is None:
            errors.setdefault("transfer_to", []).append("Unknown approved request.")
        elif target.pool_id != pool.pk:
            errors.setdefault("transfer_to", []).append(f"Not a request for {pool}.")
        elif target.status not in (Status.PENDING, Status.WAITING):
            errors.setdefault("transfer_to", []).append(
                "Transfer only to an approved request that is pending or waiting."
            )
        elif target.pk == allocation.change_id:
            errors.setdefault("transfer_to", []).append("That request made this allocation.")
    if allocation.reclaims.filter(status=Reclaim.Status.SCHEDULED).exists():
        errors.setdefault("allocation", []).append(
            f"A reclaim of allocation #{allocation.pk} is already scheduled."
        )
    if errors:
        raise ValidationError(errors)

    reclaim = Reclaim.objects.create(
        allocation=allocation,
        new_gpus=gpus,
        new_end=new_end,
        effective_at=effective_at,
        reason=reason,
        transfer_to=target,
        created_by=actor,
    )
    what = _reclaim_words(reclaim, allocation)
    audit_record(
        actor=actor,
        action="reclaim.schedule",
        obj=reclaim,
        after={
            "allocation": allocation.pk,
            "new_gpus": gpus,
            "new_end": new_end,
            "effective_at": effective_at,
            "transfer_to": target.pk if target else None,
        },
        message=f"{what} Reason: {reason}",
    )
    notify(
        recipients=_team_members(allocation.project.team_id),
        kind=Notification.Kind.RECLAIM,
        message=f"Reclaim notice: {what} Reason: {reason}",
        link=_project_link(allocation.project_id),
        dedupe_key=f"reclaim-{reclaim.pk}-notice",
    )
    if effective_at <= now:
        _apply_reclaim(pool, reclaim, allocation, actor=actor, now=now)
        _serve(pool, now=now)
    return reclaim


def _reclaim_words(reclaim: Reclaim, allocation: Allocation) -> str:
    parts = []
    if reclaim.new_gpus == 0:
        parts.append(f"all {allocation.gpus} GPUs go back")
    elif reclaim.new_gpus < allocation.gpus:
        parts.append(f"{allocation.gpus - reclaim.new_gpus} of its {allocation.gpus} GPUs go back")
    if reclaim.new_end is not None and reclaim.new_gpus:
        parts.append(f"it ends {_fmt(reclaim.new_end)} instead of {_fmt(allocation.end)}")
    where = (
        f"to request change #{reclaim.transfer_to_id}" if reclaim.transfer_to_id else "to the pool"
    )
    return (
        f"Allocation #{allocation.pk} of {allocation.project} ({allocation.pool}): "
        f"{' and '.join(parts)} ({where}) from {_fmt(reclaim.effective_at)}."
    )


def _apply_reclaim(
    pool: Pool, reclaim: Reclaim, allocation: Allocation, *, actor, now: datetime
) -> None:
    """Under the pool lock: the reclaim takes effect; for a transfer, the named change is placed
    in the same transaction, ahead of the queue (compute ops chose it)."""
    if allocation.state != Allocation.State.ACTIVE or allocation.end <= reclaim.effective_at:
        reclaim.status = Reclaim.Status.CANCELLED
        reclaim.save(update_fields=["status"])
        audit_record(
            actor=actor,
            action="reclaim.cancel",
            obj=reclaim,
            before={"status": Reclaim.Status.SCHEDULED},
            after={"status": reclaim.status},
            message="The allocation no longer held GPUs when the reclaim came due.",
        )
        return
    before = _snapshot(allocation)
    if reclaim.new_gpus == 0:
        _give_back(allocation, at=reclaim.effective_at, state=Allocation.State.RECLAIMED)
    else:
        # Kept GPUs count over the whole allocation; its past holding is in the ledger.
        allocation.gpus = min(allocation.gpus, reclaim.new_gpus)
        if reclaim.new_end is not None and reclaim.new_end < allocation.end:
            allocation.end = reclaim.new_end
        allocation.save(update_fields=["gpus", "end"])
    kind = LedgerEntry.Kind.TRANSFER if reclaim.transfer_to_id else LedgerEntry.Kind.RECLAIM
    _ledger(
        allocation=allocation,
        kind=kind,
        actor=reclaim.created_by,
        change=reclaim.transfer_to,
        note=reclaim.reason,
    )
    reclaim.status = Reclaim.Status.APPLIED
    reclaim.applied_at = now
    reclaim.save(update_fields=["status", "applied_at"])
    audit_record(
        actor=actor,
        action="allocation.transfer" if reclaim.transfer_to_id else "allocation.reclaim",
        obj=allocation,
        before=before,
        after={**_snapshot(allocation), "reclaim": reclaim.pk},
        message=f"Reclaim #{reclaim.pk} took effect. Reason: {reclaim.reason}",
    )
    notify(
        recipients=_team_members(allocation.project.team_id),
        kind=Notification.Kind.RECLAIM,
        message=f"Reclaim took effect on allocation #{allocation.pk} of {allocation.project}: "
        f"it now holds {allocation.gpus if allocation.state == Allocation.State.ACTIVE else 0}"
        f" GPUs of {pool}.",
        link=_project_link(allocation.project_id),
        dedupe_key=f"reclaim-{reclaim.pk}-applied",
    )
    if reclaim.transfer_to_id:
        # SKIP LOCKED: if its apply worker holds the change, that worker places it next (it
        # waits for the pool lock we hold, then sees the GPUs this reclaim freed).
        target = locks.lock_change(reclaim.transfer_to_id, skip_locked=True)
        if target is not None and target.status in (Status.PENDING, Status.WAITING):
            _place(pool, target, now=now)


def _place(pool: Pool, change: AllocationChange, *, now: datetime) -> str:
    """Place one change on its own, ahead of the queue (a transfer names it). The caller holds
    the pool lock and the change row."""
    target_ids = [change.target_allocation_id] if change.target_allocation_id else []
    targets = locks.lock_allocations(target_ids) if target_ids else {}
    demand, problem = _demand_for(change, now, targets)
    if problem:
        _settle_failed(change, reason=problem)
        return "failed"
    outcome = {}

    def accept(demand: Demand, span: Span) -> bool:
        refused = _share_accept(pool, change, span)
        if refused:
            _settle_needs_review(change, reason=refused)
            outcome["x"] = "needs_review"
            return False
        _settle_applied(change, span, targets=targets, now=now)
        outcome["x"] = "applied"
        return True

    plan = plan_queue(
        pool_timeline(pool.pk, origin=now),
        [demand],
        accept=accept,
        horizon_days=settings.ALLOTMENT["HORIZON_DAYS"],
    )
    if change.pk in plan.waiting:
        if change.status != Status.WAITING:
            _settle_waiting(change, reason=plan.waiting[change.pk])
        return "waiting"
    return outcome["x"]


@transaction.atomic
def allocation_transfer(
    *,
    allocation_id: int,
    to_change_id: int,
    actor,
    new_gpus,
    new_end: datetime | None = None,
    reason: str,
    notice_hours=None,
) -> Reclaim:
    """A reclaim whose GPUs go to a named approved change when it takes effect."""
    if to_change_id in (None, ""):
        raise ValidationError({"transfer_to": ["Name the approved request that gets the GPUs."]})
    return allocation_reclaim(
        allocation_id=allocation_id,
        actor=actor,
        new_gpus=new_gpus,
        new_end=new_end,
        reason=reason,
        notice_hours=notice_hours,
        transfer_to_id=to_change_id,
    )


def reclaims_apply_due(*, now: datetime | None = None, limit: int = 500) -> int:
    """Reclaims whose notice is over take effect; each pool's queue is then served. One
    transaction per pool."""
    now = now or timezone.now()
    due = list(
        Reclaim.objects.filter(status=Reclaim.Status.SCHEDULED, effective_at__lte=now)
        .order_by("effective_at", "pk")
        .values_list("pk", "allocation_id", "allocation__pool_id")[:limit]
    )
    per_pool: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for reclaim_id, allocation_id, pool_id in due:
        per_pool[pool_id].append((reclaim_id, allocation_id))
    applied = 0
    for pool_id, items in sorted(per_pool.items()):
        with transaction.atomic():
            pool = locks.lock_pool(pool_id)
            allocations = locks.lock_allocations([a for _, a in items])
            reclaims = locks.lock_reclaims([r for r, _ in items])
            for reclaim_id, allocation_id in items:
                reclaim = reclaims.get(reclaim_id)
                if reclaim is None or reclaim.status != Reclaim.Status.SCHEDULED:
                    continue  # another run took it
                _apply_reclaim(pool, reclaim, allocations[allocation_id], actor=None, now=now)
                applied += 1
            _serve(pool, now=now)
    return applied


# --- Capacity -----------------------------------------------------------------------------


@transaction.atomic
def capacity_change_create(
    *, pool_id, kind: str, delta, effective_at: datetime, note: str = "", actor
) -> CapacityChange:
    """Compute ops record an arrival, a decommission or a repair. A decrease that would leave
    any instant from `effective_at` on with fewer GPUs than are allocated is refused, naming the
    allocations in the way."""
    _require_compute_ops(actor)
    errors: dict[str, list[str]] = {}
    if kind not in CapacityChange.Kind.values:
        errors["kind"] = ["Choose arrival, decommission or repair."]
    number = _parse_int(delta, field="delta", low=-MAX_GPUS, high=MAX_GPUS, errors=errors)
    if number == 0:
        errors.setdefault("delta", []).append("A change of 0 GPUs changes nothing.")
    elif number is not None and kind == CapacityChange.Kind.ARRIVAL and number < 0:
        errors.setdefault("delta", []).append("An arrival adds GPUs: enter a positive number.")
    elif number is not None and kind == CapacityChange.Kind.DECOMMISSION and number > 0:
        errors.setdefault("delta", []).append(
            "A decommission removes GPUs: enter a negative number."
        )
    if not isinstance(effective_at, datetime) or timezone.is_naive(effective_at):
        errors["effective_at"] = ["Enter a date and time."]
    note = _clean_text(note, field="note", max_length=500, errors=errors, required=False)
    pool_pk = _parse_int(pool_id, field="pool", low=1, high=2**62, errors={})
    pool = locks.lock_pools([pool_pk]).get(pool_pk) if pool_pk else None
    if pool is None:
        errors["pool"] = ["Unknown pool."]
    if errors:
        raise ValidationError(errors)

    if number < 0:
        blockers = _decrease_blockers(pool, -number, effective_at)
        if blockers:
            raise ValidationError({"delta": [blockers]})
    change = CapacityChange.objects.create(
        pool=pool,
        kind=kind,
        delta=number,
        effective_at=effective_at,
        note=note,
        created_by=actor,
    )
    audit_record(
        actor=actor,
        action="capacity_change.create",
        obj=change,
        after={"pool": pool.pk, "kind": kind, "delta": number, "effective_at": effective_at},
        message=f"{actor} recorded {change}.",
    )
    now = timezone.now()
    if number > 0:
        # More GPUs, now or later: waiting requests may fit (a future arrival can serve a
        # flexible request, or a fixed one that starts after it).
        _serve(pool, now=now)
    if effective_at <= now:
        change.served_at = now
        change.save(update_fields=["served_at"])
    return change


def _decrease_blockers(pool: Pool, gpus: int, effective_at: datetime) -> str:
    """Why removing `gpus` from `effective_at` on breaks the invariant, naming the allocations
    held at the instants that would be short; "" when it does not."""
    now = timezone.now()
    timeline = pool_timeline(pool.pk, origin=min(effective_at, now))
    steps = timeline.steps
    first = timeline._index_at(effective_at)
    short: list[tuple[datetime, datetime | None, int, int]] = []
    for i in range(first, len(steps)):
        step = steps[i]
        if step.free - gpus < 0:
            start = max(step.at, effective_at)
            end = steps[i + 1].at if i + 1 < len(steps) else None
            short.append((start, end, step.held, step.capacity - gpus))
    if not short:
        return ""
    held = holding_allocations().filter(pool=pool, end__gt=short[0][0]).select_related("project")
    in_way = [
        a
        for a in held.order_by("start", "pk")
        if any(a.end > s and (e is None or a.start < e) for s, e, _, _ in short)
    ]
    at, _, held_gpus, left = short[0]
    names = ", ".join(
        f"#{a.pk} ({a.project}, {a.gpus} GPUs, {_fmt(a.start)} → {_fmt(a.end)})"
        for a in in_way[:20]
    )
    more = f" and {len(in_way) - 20} more" if len(in_way) > 20 else ""
    return (
        f"Refused: removing {gpus} GPUs from {pool} from {_fmt(effective_at)} would leave "
        f"{max(left, 0)} GPUs while {held_gpus} are allocated at {_fmt(at)}. "
        f"Allocations in the way: {names}{more}."
    )


# --- Periodic work ------------------------------------------------------------------------


def allocations_expire(*, now: datetime | None = None, limit: int = 2000) -> int:
    """Allocations end at their end time (state ended, ledger expire); each pool's queue is
    then served. One transaction per pool."""
    now = now or timezone.now()
    due = list(
        Allocation.objects.filter(state=Allocation.State.ACTIVE, end__lte=now)
        .order_by("end", "pk")
        .values_list("pk", "pool_id")[:limit]
    )
    per_pool: dict[int, list[int]] = defaultdict(list)
    for allocation_id, pool_id in due:
        per_pool[pool_id].append(allocation_id)
    ended = 0
    for pool_id, ids in sorted(per_pool.items()):
        with transaction.atomic():
            pool = locks.lock_pool(pool_id)
            for allocation in locks.lock_allocations(ids).values():
                if allocation.state != Allocation.State.ACTIVE or allocation.end > now:
                    continue
                allocation.state = Allocation.State.ENDED
                allocation.save(update_fields=["state"])
                _ledger(allocation=allocation, kind=LedgerEntry.Kind.EXPIRE)
                audit_record(
                    actor=None,
                    action="allocation.expire",
                    obj=allocation,
                    before={"state": Allocation.State.ACTIVE},
                    after={"state": allocation.state},
                    message=f"Allocation #{allocation.pk} reached its end.",
                )
                ended += 1
            _serve(pool, now=now)
    return ended


def queues_serve_all(*, now: datetime | None = None) -> int:
    """Serve every pool that has waiting requests or a capacity change that just took effect
    (then marked served). The safety net behind the event-driven serving."""
    now = now or timezone.now()
    due_pools = set(
        CapacityChange.objects.filter(served_at__isnull=True, effective_at__lte=now).values_list(
            "pool_id", flat=True
        )
    )
    waiting_pools = set(
        AllocationChange.objects.filter(status=Status.WAITING).values_list("pool_id", flat=True)
    )
    pool_ids = sorted(due_pools | waiting_pools)
    for pool_id in pool_ids:
        with transaction.atomic():
            pool = locks.lock_pool(pool_id)
            _serve(pool, now=now)
            CapacityChange.objects.filter(
                pool_id=pool_id, served_at__isnull=True, effective_at__lte=now
            ).update(served_at=now)
    return len(pool_ids)


def changes_resend_stuck(*, now: datetime | None = None, limit: int = 500) -> int:
    """Send again every pending change that no worker took within RESEND_AFTER_SECONDS (the
    broker lost the message, the worker died before acking and the message expired, the
    dispatch itself failed). Harmless when it was merely slow: the apply is idempotent."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.ALLOTMENT["RESEND_AFTER_SECONDS"])
    stuck = list(
        AllocationChange.objects.filter(status=Status.PENDING)
        .filter(Q(dispatched_at__lt=cutoff) | Q(dispatched_at__isnull=True, approved_at__lt=cutoff))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    for change_id in stuck:
        _dispatch(change_id)
    return len(stuck)


def allocations_remind_ending(*, now: datetime | None = None) -> int:
    """Tell owners 7 days and 1 day before an allocation ends (once each: reminded_*_at and the
    notification's dedupe key)."""
    now = now or timezone.now()
    sent = 0
    for days, field in ((1, "reminded_1d_at"), (7, "reminded_7d_at")):
        due = (
            Allocation.objects.filter(
                state=Allocation.State.ACTIVE,
                end__gt=now,
                end__lte=now + timedelta(days=days),
                **{f"{field}__isnull": True},
            )
            .select_related("project", "pool")
            .order_by("end", "pk")[:2000]
        )
        for allocation in due:
            with transaction.atomic():
                marked = Allocation.objects.filter(
                    pk=allocation.pk, **{f"{field}__isnull": True}
                ).update(**{field: now})
                if not marked:
                    continue
                if days == 1:  # one message, not two, when the week's notice comes this late
                    Allocation.objects.filter(pk=allocation.pk, reminded_7d_at__isnull=True).update(
                        reminded_7d_at=now
                    )
                when = time_until_words(allocation.end - now)
                notify(
                    recipients=_team_members(allocation.project.team_id),
                    kind=Notification.Kind.ENDING_SOON,
                    message=f"{allocation.gpus} GPUs of {allocation.pool} held by "
                    f"{allocation.project} end {when}, {_fmt(allocation.end)}.",
                    link=_project_link(allocation.project_id),
                    dedupe_key=f"allocation-{allocation.pk}-ending-{days}d",
                )
                sent += 1
    return sent
