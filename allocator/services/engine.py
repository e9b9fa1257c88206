"""The apply engine: claim a change (on its first attempt, with a batch of its pool's other
pending first attempts), serve the pool's queue under the pool lock by the rule in
allocator/planning.py in one pass for the whole batch, and settle each change it decided
(applied, waiting, needs_review, failed) with its ledger, audit, signal and notice rows in the
same transaction. Per change: its allocation, ledger row (and the connector's outbox intents,
written by their receiver), signal and notice; per pass: the reads, the change rows and the
audit rows (one statement each); per transaction: the after-commit emails.

allocator never imports requests_app: it tells it what became of a change through
allocator.signals.change_settled, sent inside the transaction with the change row locked.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import NamedTuple

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_event, audit_record_many
from notifications.models import Notification
from notifications.services import notify

from .. import locks
from ..faults import fault_point
from ..loaders import load_pool_rows
from ..models import (
    Allocation,
    AllocationChange,
    CapacityChange,
    DivisionShare,
    LedgerEntry,
    Pool,
)
from ..outcomes import Outcome
from ..planning import Demand, demand_for, past_project_end, plan_queue, share_refusal
from ..selectors import ShareCheck, horizon, queue_key, share_check_on
from ..signals import change_settled
from ..timeline import Span, Timeline
from ..waiting import Freeing, freeings_of, waiting_facts, waiting_sentences
from .records import Status, compute_ops_users, fmt, ledger, project_link, team_members

logger = logging.getLogger(__name__)


def allocation_change_apply(*, change_id: int) -> Outcome | None:
    """Apply one approved change — and, on its first attempt, the pool's other pending first
    attempts with it (up to APPLY_BATCH_SIZE, in queue order): allocate each (from its start,
    or a later one when that is acceptable), put it in the waiting queue, or send it back to
    executive review when a review rule now holds. Idempotent: a second run, or a run after a
    worker died midway, finds the change no longer pending (under its lock) and does nothing.
    Returns the change's outcome, or None when there was nothing to do.

    Two transactions: the claim counts the attempt of every change it takes and commits, so a
    change whose apply keeps crashing is marked failed after MAX_APPLY_ATTEMPTS instead of
    looping forever; the apply does the work under the pool lock, one queue-serving pass for
    the whole batch. Only changes nobody has tried yet are batched: a batch that dies (killed,
    or an error) leaves each of its changes at one attempt, and from then on each is applied on
    its own — its own task's redelivery, or at once below — so a change that always crashes
    still ends failed after its attempts, without taking the others with it."""
    claimed = _claim(change_id)
    if claimed is None:
        return None
    pool_id, ids = claimed
    if len(ids) == 1:
        return _apply_claimed(pool_id, change_id, ids)
    try:
        return _apply_claimed(pool_id, change_id, ids)
    except (OperationalError, InterfaceError):
        raise  # retried by the task; the other changes' own tasks apply them one at a time
    except Exception:
        logger.exception("a batch of %d changes failed; applying them one at a time", len(ids))
    for other in ids:
        if other == change_id:
            continue
        try:
            allocation_change_apply(change_id=other)  # counted again, and alone: attempts > 0
        except (OperationalError, InterfaceError):
            pass  # its own task tries again
        except Exception as exc:
            allocation_change_record_error(change_id=other, error=f"{type(exc).__name__}: {exc}")
    return allocation_change_apply(change_id=change_id)  # an error here goes to the task


def _apply_claimed(pool_id: int, change_id: int, ids: list[int]) -> Outcome | None:
    fault_point("before_tx", change_ids=ids)
    with transaction.atomic(durable=True):
        pool = locks.lock_pool(pool_id)
        # Pool first, then the changes (locks.py order). SKIP LOCKED: if another transaction
        # holds a change row, another worker (or a decision about it) is on it.
        locked = locks.lock_claimed_changes(ids)
        busy = change_id not in locked and _still_pending(change_id)
        pending = [c for c in locked.values() if c.status == Status.PENDING]
        outcomes = serve(pool, extra=pending) if pending else {}
        if pending:
            _refresh_forecast_on_commit(pool.pk)
        fault_point("in_tx_before_commit", change_ids=[c.pk for c in pending])
    if busy:
        raise ChangeBusy(f"change {change_id} is locked by another transaction")
    return outcomes.get(change_id)


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


def _still_pending(change_id: int) -> bool:
    return AllocationChange.objects.filter(pk=change_id, status=Status.PENDING).exists()


def _raise_if_busy(change_id: int) -> None:
    if _still_pending(change_id):
        raise ChangeBusy(f"change {change_id} is locked by another transaction")


def _claim(change_id: int) -> tuple[int, list[int]] | None:
    """Count an attempt of the change (and, on its first attempt, of a batch of the pool's
    other first attempts): (pool id, the claimed ids, the change first), or None when there is
    nothing to apply."""
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
        ids = [change.pk]
        if change.attempts == 0:
            ids += locks.claim_first_attempts(
                change.pool_id,
                exclude=change.pk,
                limit=settings.ALLOTMENT.get("APPLY_BATCH_SIZE", 1) - 1,
            )
        AllocationChange.objects.filter(pk__in=ids).update(attempts=F("attempts") + 1)
        return change.pool_id, ids


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


class _Held(NamedTuple):
    """A holding allocation of the pool as the pass reads it: the timeline's span, the id the
    waiting reasons name, and the division the share rule counts it for."""

    pool_id: int
    pk: int
    start: datetime
    end: datetime
    gpus: int
    division_id: int


_HELD_FIELDS = ("pool_id", "pk", "start", "end", "gpus", "project__team__division_id")


class _ReviewRules:
    """The rules that send a change back to executive review at apply time (unless executives
    already reviewed it): the share rule on the division's holdings (read once per pass, with
    the pass's own placements added as it goes), and the project's expected end (it may have
    moved earlier since the approval)."""

    def __init__(self, pool: Pool, rows, now: datetime):
        self.pool = pool
        self.rows = rows
        self.now = now
        self._shares: dict[int, int] | None = None
        self._timelines: dict[int, Timeline] = {}
        self._placed: dict[int, list[Span]] = defaultdict(list)

    def reasons(self, change: AllocationChange, span: Span) -> list[str]:
        if change.executive_reviewed:
            return []
        division = change.project.team.division
        found = []
        refusal = share_refusal(False, span, lambda s: self._share_check(division.pk, s))
        if refusal is not None:
            found.append(refusal.sentence(division.name, self.pool.name))
        past_end = past_project_end(span.end, change.project.name, change.project.expected_end)
        if past_end is not None:
            found.append(past_end)
        return found

    def placed(self, change: AllocationChange, span: Span) -> None:
        division_id = change.project.team.division_id
        if division_id in self._timelines:
            self._timelines[division_id] = self._timelines[division_id].with_span(span)
        else:
            self._placed[division_id].append(span)

    def _share_check(self, division_id: int, span: Span) -> ShareCheck:
        if self._shares is None:
            self._shares = dict(
                DivisionShare.objects.filter(pool_id=self.pool.pk).values_list(
                    "division_id", "gpus"
                )
            )
        timeline = self._timelines.get(division_id)
        if timeline is None:
            held = [h for h in self.rows.held[self.pool.pk] if h.division_id == division_id]
            timeline = self.rows.timeline(
                self.pool.pk, self.now, held=[*held, *self._placed.pop(division_id, [])]
            )
            self._timelines[division_id] = timeline
        return share_check_on(
            timeline,
            division_id=division_id,
            share=self._shares.get(division_id, 0),  # no share row: a share of 0
            gpus=span.gpus,
            start=span.start,
            end=span.end,
        )


def serve(
    pool: Pool, *, extra: Sequence[AllocationChange] = (), now: datetime | None = None
) -> dict[int, Outcome]:
    """Serve the pool's waiting queue (and `extra`, pending changes being applied, each in its
    place in the queue) by the rule in allocator/planning.py. The caller holds the pool lock.
    Returns {change id: outcome} for the changes whose fate was decided or confirmed."""
    now = now or timezone.now()
    changes = [*locks.lock_waiting_changes(pool.pk), *extra]
    if not changes:
        return {}
    changes.sort(key=queue_key)
    return _plan_and_settle(pool, changes, now=now)


def place(pool: Pool, change: AllocationChange, *, now: datetime) -> Outcome:
    """Place one change on its own, ahead of the queue (a transfer names it). The caller holds
    the pool lock and the change row."""
    return _plan_and_settle(pool, [change], now=now)[change.pk]


@dataclass
class _PassWrites:
    """The change rows and audit rows a pass settled, written together when it ends."""

    changes: list[AllocationChange] = field(default_factory=list)
    audits: list[AuditEvent] = field(default_factory=list)

    def flush(self) -> None:
        if self.changes:
            AllocationChange.objects.bulk_update(
                self.changes, ["status", "applied_at", "allocation", "last_error"]
            )
        if self.audits:
            audit_record_many(self.audits)


# Set while a pass runs (one call, one thread): where _settle leaves its row writes.
_pass_writes: ContextVar[_PassWrites | None] = ContextVar("allocator_pass_writes", default=None)


def _plan_and_settle(
    pool: Pool, changes: list[AllocationChange], *, now: datetime
) -> dict[int, Outcome]:
    if _pass_writes.get() is not None:  # a pass inside a pass writes through the outer one
        return _plan_and_settle_now(pool, changes, now=now)
    writes = _PassWrites()
    token = _pass_writes.set(writes)
    try:
        outcomes = _plan_and_settle_now(pool, changes, now=now)
        writes.flush()
    finally:
        _pass_writes.reset(token)
    return outcomes


def _plan_and_settle_now(
    pool: Pool, changes: list[AllocationChange], *, now: datetime
) -> dict[int, Outcome]:
    """Plan `changes` (in queue order) on the pool's timeline and settle each: the one accept
    step both serve and place use. The caller holds the pool lock and the change rows.

    One pass decides any number of changes with the same reads (the pool's rows once, the
    shares once, each division's holdings from those rows) and settles each as if it had been
    applied alone in queue order: a change's waiting reason names only what was on record
    before it (the allocations placed ahead of it in the pass, not those behind)."""
    target_ids = [c.target_allocation_id for c in changes if c.target_allocation_id]
    targets = locks.lock_allocations(target_ids) if target_ids else {}
    rows = load_pool_rows([pool.pk], origin=now, fields=_HELD_FIELDS, row=_Held)
    timeline = rows.timeline(pool.pk, now)
    rules = _ReviewRules(pool, rows, now)
    members = cache(team_members)  # a batch's changes are often of one team

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
    position = {d.key: i for i, d in enumerate(demands)}
    placed: list[tuple[int, int, Span]] = []  # (position, allocation id, its span after)

    def accept(demand: Demand, span: Span) -> bool:
        change = by_key[demand.key]
        reasons = rules.reasons(change, span)
        if reasons:
            _settle_needs_review(change, reasons=reasons)
            outcomes[change.pk] = Outcome.NEEDS_REVIEW
            return False
        allocation = _settle_applied(change, span, targets=targets, now=now, members=members)
        rules.placed(change, span)
        placed.append(
            (
                position[demand.key],
                allocation.pk,
                Span(allocation.start, allocation.end, allocation.gpus),
            )
        )
        outcomes[change.pk] = Outcome.APPLIED
        return True

    plan = plan_queue(
        timeline, demands, accept=accept, horizon_days=settings.ALLOTMENT["HORIZON_DAYS"]
    )
    newly_waiting = [key for key in plan.waiting if by_key[key].status != Status.WAITING]
    arrivals = _arrivals(pool.pk, now=now) if newly_waiting else []
    on_record = {h.pk: Span(h.start, h.end, h.gpus) for h in rows.held[pool.pk]}
    demand_of = {d.key: d for d in demands}
    for key in plan.waiting:
        change = by_key[key]
        if key in newly_waiting:
            ahead = {pk: span for at, pk, span in placed if at < position[key]}
            freeings = freeings_of({**on_record, **ahead}.items(), arrivals)
            _settle_waiting(
                change,
                reason=waiting_reason(
                    change, demand_of[key], plan.waited_on[key], freeings=freeings, now=now
                ),
                members=members,
            )
        outcomes[key] = Outcome.WAITING
    return outcomes


def _arrivals(pool_id: int, *, now: datetime) -> list[tuple[int, datetime, int]]:
    """GPUs recorded to arrive in the pool after `now` (for the waiting reasons). One query,
    made only when a change starts waiting."""
    return list(
        CapacityChange.objects.filter(
            pool_id=pool_id, effective_at__gt=now, delta__gt=0
        ).values_list("pk", "effective_at", "delta")
    )


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
    `fields`) on the change; `notice` holds notify()'s recipients, kind, link and dedupe key.
    Inside a queue-serving pass the change row and its audit row are written with the pass's
    others, in one statement each, before the pass returns (same transaction)."""
    before = {"status": change.status}
    change.status = status
    audit = audit_event(
        actor=None,
        action=action,
        obj=change,
        before=before,
        after={"status": change.status, **(after or {})},
        message=message,
    )
    writes = _pass_writes.get()
    if writes is not None:
        writes.changes.append(change)
        writes.audits.append(audit)
    else:
        change.save(update_fields=["status", *fields])
        audit_record_many([audit])
    change_settled.send(
        sender=AllocationChange, change=change, outcome=outcome, reasons=reasons, actor=None
    )
    if notice is not None:
        notify(message=message, **notice)


def _settle_applied(
    change: AllocationChange,
    span: Span,
    *,
    targets: dict[int, Allocation],
    now: datetime,
    members: Callable[[int], list] = team_members,
) -> Allocation:
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
            "recipients": [*members(change.project.team_id), change.requested_by],
            "kind": Notification.Kind.ALLOCATED,
            "link": project_link(change.project_id),
            "dedupe_key": f"change-{change.pk}-applied",
        },
    )
    return allocation


def _settle_waiting(
    change: AllocationChange, *, reason: str, members: Callable[[int], list] = team_members
) -> None:
    _settle(
        change,
        status=Status.WAITING,
        outcome=Outcome.WAITING,
        action="allocation_change.wait",
        message=f"{change.gpus} GPUs of {change.pool} for {change.project} wait. {reason}",
        reasons=[reason],
        notice={
            "recipients": [*members(change.project.team_id), change.requested_by],
            "kind": Notification.Kind.WAITING,
            "link": project_link(change.project_id),
            "dedupe_key": f"change-{change.pk}-waiting",
        },
    )


def _settle_needs_review(change: AllocationChange, *, reasons: list[str]) -> None:
    _settle(
        change,
        status=Status.NEEDS_REVIEW,
        outcome=Outcome.NEEDS_REVIEW,
        action="allocation_change.needs_review",
        message="Sent to executive review: it " + "; it ".join(reasons) + ".",
        reasons=reasons,
        after={"reasons": reasons},
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
