"""The apply engine: claim a change, serve the pool's queue under the pool lock by the rule in
allocator/planning.py, and settle each change it decided (applied, waiting, needs_review,
failed) with its ledger, audit, signal and notice rows in the same transaction.

allocator never imports requests_app: it tells it what became of a change through
allocator.signals.change_settled, sent inside the transaction with the change row locked.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.db import OperationalError, transaction
from django.urls import reverse
from django.utils import timezone

from audit.services import audit_record
from notifications.models import Notification
from notifications.services import notify

from .. import locks
from ..faults import fault_point
from ..models import Allocation, AllocationChange, CapacityChange, LedgerEntry, Pool
from ..outcomes import Outcome
from ..planning import Demand, demand_for, plan_queue, share_refusal
from ..selectors import holding_allocations, horizon, pool_timeline, queue_key, share_check
from ..signals import change_settled
from ..timeline import Span
from ..waiting import Freeing, freeings_of, waiting_facts, waiting_sentences
from .records import Status, compute_ops_users, fmt, ledger, project_link, team_members

logger = logging.getLogger(__name__)


def allocation_change_apply(*, change_id: int) -> Outcome | None:
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
        outcomes = serve(pool, extra=change)
        _refresh_forecast_on_commit(pool.pk)
        fault_point("in_tx_before_commit", change_id=change_id)
        return outcomes.get(change.pk)


def _refresh_forecast_on_commit(pool_id: int) -> None:
    """After the apply commits, a worker stores the pool's new forecast (forecast/stored.py), so
    the next reader does not compute it. Best effort: if the broker is down, the first reader or
    the periodic sweep computes it instead."""

    def refresh_forecast_after_commit():  # named: robust on_commit logs its __qualname__
        from ..tasks import refresh_forecast

        try:
            refresh_forecast.delay(pool_id)
        except Exception:
            logger.warning("could not send the forecast refresh of pool %s", pool_id)

    transaction.on_commit(refresh_forecast_after_commit, robust=True)


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
            settle_failed(
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
            settle_failed(change, reason=f"applying failed {change.attempts} times: {error}")


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


def serve(
    pool: Pool, *, extra: AllocationChange | None = None, now: datetime | None = None
) -> dict[int, Outcome]:
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
    return _plan_and_settle(pool, changes, now=now)


def place(pool: Pool, change: AllocationChange, *, now: datetime) -> Outcome:
    """Place one change on its own, ahead of the queue (a transfer names it). The caller holds
    the pool lock and the change row."""
    return _plan_and_settle(pool, [change], now=now)[change.pk]


def _plan_and_settle(
    pool: Pool, changes: list[AllocationChange], *, now: datetime
) -> dict[int, Outcome]:
    """Plan `changes` (in queue order) on the pool's timeline and settle each: the one accept
    step both serve and place use. The caller holds the pool lock and the change rows."""
    target_ids = [c.target_allocation_id for c in changes if c.target_allocation_id]
    targets = locks.lock_allocations(target_ids) if target_ids else {}
    timeline = pool_timeline(pool.pk, origin=now)

    outcomes: dict[int, Outcome] = {}
    by_key: dict[int, AllocationChange] = {}
    demands = []
    for change in changes:
        demand, problem = demand_for(change, now, targets, horizon=horizon())
        if problem:
            settle_failed(change, reason=problem)
            outcomes[change.pk] = Outcome.FAILED
            continue
        by_key[change.pk] = change
        demands.append(demand)

    def accept(demand: Demand, span: Span) -> bool:
        change = by_key[demand.key]
        refused = _share_accept(pool, change, span)
        if refused:
            _settle_needs_review(change, reason=refused)
            outcomes[change.pk] = Outcome.NEEDS_REVIEW
            return False
        _settle_applied(change, span, targets=targets, now=now)
        outcomes[change.pk] = Outcome.APPLIED
        return True

    plan = plan_queue(
        timeline, demands, accept=accept, horizon_days=settings.ALLOTMENT["HORIZON_DAYS"]
    )
    newly_waiting = [key for key in plan.waiting if by_key[key].status != Status.WAITING]
    freeings = _freeings(pool.pk, now=now) if newly_waiting else []
    demand_of = {d.key: d for d in demands}
    for key in plan.waiting:
        change = by_key[key]
        if key in newly_waiting:
            _settle_waiting(
                change,
                reason=waiting_reason(
                    change, demand_of[key], plan.waited_on[key], freeings=freeings, now=now
                ),
            )
        outcomes[key] = Outcome.WAITING
    return outcomes


def _freeings(pool_id: int, *, now: datetime) -> list[Freeing]:
    """What is on record to free GPUs of the pool after `now`: allocation ends, arrivals. Two
    queries, made only when a change starts waiting."""
    allocations = [
        (pk, Span(start, end, gpus))
        for pk, start, end, gpus in holding_allocations()
        .filter(pool_id=pool_id, end__gt=now)
        .values_list("pk", "start", "end", "gpus")
    ]
    arrivals = CapacityChange.objects.filter(
        pool_id=pool_id, effective_at__gt=now, delta__gt=0
    ).values_list("pk", "effective_at", "delta")
    return freeings_of(allocations, arrivals)


def waiting_reason(
    change: AllocationChange,
    demand: Demand,
    timeline,
    *,
    freeings: list[Freeing],
    now: datetime,
) -> str:
    """Why the change waits, in whole sentences and numbers (allocator/waiting.py): the short
    instant of its own period (its start, or now when that passed; never the approval time),
    what frees the GPUs, what would serve it sooner, and for a fixed start served late, how much
    of its period it would get."""
    is_extension = change.kind == AllocationChange.Kind.EXTENSION
    facts = waiting_facts(
        timeline,
        demand,
        horizon_end=now + horizon(),
        freeings=freeings,
        asked_start=None if is_extension or change.start >= demand.start else change.start,
        can_start_late=not is_extension,
    )
    return waiting_sentences(facts)


# --- Settling: every outcome writes the change row, an audit row, the signal requests_app
# listens to, and (except needs_review, which requests_app announces) a notice.


def _settle(
    change: AllocationChange,
    *,
    status: str,
    outcome: Outcome,
    action: str,
    message: str,
    reasons: list[str],
    after: dict | None = None,
    fields: tuple[str, ...] = (),
    notice: dict | None = None,
) -> None:
    """The shape every settle shares. The caller has set any field besides status (listed in
    `fields`) on the change; `notice` holds notify()'s recipients, kind, link and dedupe key."""
    before = {"status": change.status}
    change.status = status
    change.save(update_fields=["status", *fields])
    audit_record(
        actor=None,
        action=action,
        obj=change,
        before=before,
        after={"status": change.status, **(after or {})},
        message=message,
    )
    change_settled.send(
        sender=AllocationChange, change=change, outcome=outcome, reasons=reasons, actor=None
    )
    if notice is not None:
        notify(message=message, **notice)


def _settle_applied(
    change: AllocationChange, span: Span, *, targets: dict[int, Allocation], now: datetime
) -> None:
    reasons = []
    if change.kind == AllocationChange.Kind.EXTENSION:
        assert change.target_allocation_id is not None  # an extension names its allocation
        allocation = targets[change.target_allocation_id]
        allocation.end = span.end
        allocation.save(update_fields=["end"])
        ledger(allocation=allocation, kind=LedgerEntry.Kind.EXTEND, change=change)
        message = f"Allocation #{allocation.pk} of {change.project} now ends {fmt(span.end)}."
    else:
        allocation = Allocation.objects.create(
            pool_id=change.pool_id,
            project_id=change.project_id,
            gpus=span.gpus,
            start=span.start,
            end=span.end,
            change=change,
        )
        ledger(allocation=allocation, kind=LedgerEntry.Kind.GRANT, change=change)
        if span.start > max(change.start, now):
            reasons.append(
                f"It starts {fmt(span.start)}, later than asked: that was the earliest start "
                "with the GPUs free for the whole period."
            )
        message = (
            f"{span.gpus} GPUs of {change.pool} allocated to {change.project}, "
            f"{fmt(span.start)} → {fmt(span.end)}."
        )
    change.applied_at = now
    change.allocation = allocation
    _settle(
        change,
        status=Status.APPLIED,
        outcome=Outcome.APPLIED,
        action="allocation_change.apply",
        message=" ".join([message, *reasons]),
        reasons=reasons,
        after={
            "allocation": allocation.pk,
            "gpus": allocation.gpus,
            "start": allocation.start,
            "end": allocation.end,
        },
        fields=("applied_at", "allocation"),
        notice={
            "recipients": [*team_members(change.project.team_id), change.requested_by],
            "kind": Notification.Kind.ALLOCATED,
            "link": project_link(change.project_id),
            "dedupe_key": f"change-{change.pk}-applied",
        },
    )


def _settle_waiting(change: AllocationChange, *, reason: str) -> None:
    _settle(
        change,
        status=Status.WAITING,
        outcome=Outcome.WAITING,
        action="allocation_change.wait",
        message=f"{change.gpus} GPUs of {change.pool} for {change.project} wait. {reason}",
        reasons=[reason],
        notice={
            "recipients": [*team_members(change.project.team_id), change.requested_by],
            "kind": Notification.Kind.WAITING,
            "link": project_link(change.project_id),
            "dedupe_key": f"change-{change.pk}-waiting",
        },
    )


def _settle_needs_review(change: AllocationChange, *, reason: str) -> None:
    _settle(
        change,
        status=Status.NEEDS_REVIEW,
        outcome=Outcome.NEEDS_REVIEW,
        action="allocation_change.needs_review",
        message=f"Sent to executive review: it {reason}.",
        reasons=[reason],
        after={"reasons": [reason]},
    )


def settle_failed(change: AllocationChange, *, reason: str) -> None:
    change.last_error = reason[:2000]
    _settle(
        change,
        status=Status.FAILED,
        outcome=Outcome.FAILED,
        action="allocation_change.fail",
        message=f"Applying change #{change.pk} ({change.gpus} GPUs of {change.pool} for "
        f"{change.project}) failed: {reason}.",
        reasons=[reason],
        after={"error": reason},
        fields=("last_error",),
        notice={
            "recipients": compute_ops_users(),
            "kind": Notification.Kind.FAILED,
            "link": reverse("allocator:ops"),
        },
    )
