"""Row locks for the engine, and the one order every transaction takes them in (the README
points here). The order, as the code takes it:

    1. the Pool row (lock_pool / lock_pools, by pk; a transaction locks at most one pool);
    2. under it, that pool's AllocationChange, Allocation and Reclaim rows, each batch by pk;
    3. ComputeRequest rows last (requests_app's change_settled receiver, inside the engine's
       transaction, locks the request of a change the engine settled).

Step 2 is not a fixed order between the three kinds: serving the queue locks the waiting
changes, then the allocations they extend (apply, serve-all, capacity); a release or a reclaim
locks the allocation and its reclaims, then serves the queue (changes, then allocations). That
is deadlock-free because the pool row is the mutex of the invariant: every write that changes
what a pool holds or can hold (apply, serve, release, reclaim, transfer, capacity change,
expiry) locks the pool row first, so such writers of one pool are serialized and never wait for
each other's step-2 rows; and every step-2 row belongs to the locked pool (a change, its target
allocation, a transfer's target change and a reclaim are all of one pool), so writers of two
pools touch disjoint rows. PostgreSQL holds the locks, not process memory. Reads of the pool's
timeline made after taking the lock see every committed allocation (READ COMMITTED: each
statement takes a fresh snapshot).

The transactions that take no pool lock never close a cycle with one that does:
- the apply worker's claim takes its change row with SKIP LOCKED (it never waits for it), then
  possibly the request row (a change that used up its attempts is settled failed); a first
  attempt also takes up to a batch of the pool's other pending first attempts, in queue order,
  with SKIP LOCKED (claim_first_attempts: never waits either). The apply transaction then takes
  the pool row and the claimed change rows, again with SKIP LOCKED (lock_claimed_changes);
  allocation_change_record_error takes the change row, then the request row: change → request,
  the order above;
- requests_app locks a request row first, then, for resume or cancel, its change row (blocking)
  — only a change in needs_review, which the engine never waits on while holding it (it locks
  waiting changes, and pending ones with SKIP LOCKED); inserting the change of a final approval
  takes a key-share lock on the pool row after the request row, for a request that has no
  change yet, so no engine transaction waits for that request row.
"""

from __future__ import annotations

from collections.abc import Iterable

from .models import Allocation, AllocationChange, Pool, Reclaim
from .selectors import QUEUE_ORDER


def lock_pools(pool_ids: Iterable[int]) -> dict[int, Pool]:
    ids = sorted(set(pool_ids))
    return {p.pk: p for p in Pool.objects.select_for_update().filter(pk__in=ids).order_by("pk")}


def lock_pool(pool_id: int) -> Pool:
    pools = lock_pools([pool_id])
    if pool_id not in pools:
        raise Pool.DoesNotExist(f"pool {pool_id} does not exist")
    return pools[pool_id]


def lock_allocations(allocation_ids: Iterable[int]) -> dict[int, Allocation]:
    ids = sorted(set(allocation_ids))
    rows = (
        Allocation.objects.select_for_update(of=("self",))
        .select_related("project__team", "pool")
        .filter(pk__in=ids)
        .order_by("pk")
    )
    return {a.pk: a for a in rows}


def lock_change(change_id: int, *, skip_locked: bool = False) -> AllocationChange | None:
    """The change row, or None when it does not exist or (skip_locked) another transaction
    holds it — for the apply task that means another worker is on it."""
    return (
        AllocationChange.objects.select_for_update(skip_locked=skip_locked, of=("self",))
        .select_related("pool", "project__team__division", "requested_by")
        .filter(pk=change_id)
        .first()
    )


def claim_first_attempts(pool_id: int, *, exclude: int, limit: int) -> list[int]:
    """Up to `limit` of the pool's pending changes nobody has tried yet (attempts = 0), first in
    queue order, locked with SKIP LOCKED: two claims running at once take disjoint rows, and
    once a claim commits its rows count an attempt, so no later claim takes them again."""
    if limit <= 0:
        return []
    return list(
        AllocationChange.objects.select_for_update(skip_locked=True)
        .filter(pool_id=pool_id, status=AllocationChange.Status.PENDING, attempts=0)
        .exclude(pk=exclude)
        .order_by(*QUEUE_ORDER)
        .values_list("pk", flat=True)[:limit]
    )


def lock_claimed_changes(change_ids: Iterable[int]) -> dict[int, AllocationChange]:
    """The claimed changes' rows in pk order, skipping any another transaction holds (the caller
    holds the pool lock; a skipped change is another worker's now)."""
    ids = sorted(set(change_ids))
    rows = (
        AllocationChange.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("pool", "project__team__division", "requested_by")
        .filter(pk__in=ids)
        .order_by("pk")
    )
    return {c.pk: c for c in rows}


def lock_changes(change_ids: Iterable[int]) -> dict[int, AllocationChange]:
    ids = sorted(set(change_ids))
    rows = (
        AllocationChange.objects.select_for_update(of=("self",))
        .select_related("pool", "project__team__division", "requested_by")
        .filter(pk__in=ids)
        .order_by("pk")
    )
    return {c.pk: c for c in rows}


def lock_waiting_changes(pool_id: int) -> list[AllocationChange]:
    """The pool's waiting changes, locked in pk order (the caller holds the pool lock)."""
    rows = (
        AllocationChange.objects.select_for_update(of=("self",))
        .select_related("pool", "project__team__division", "requested_by")
        .filter(pool_id=pool_id, status=AllocationChange.Status.WAITING)
        .order_by("pk")
    )
    return list(rows)


def lock_reclaims(reclaim_ids: Iterable[int]) -> dict[int, Reclaim]:
    ids = sorted(set(reclaim_ids))
    rows = Reclaim.objects.select_for_update(of=("self",)).filter(pk__in=ids).order_by("pk")
    return {r.pk: r for r in rows}


def lock_scheduled_reclaims(allocation_id: int) -> list[Reclaim]:
    """The allocation's scheduled reclaims, locked in pk order (the caller holds the pool lock
    and the allocation row)."""
    rows = (
        Reclaim.objects.select_for_update(of=("self",))
        .filter(allocation_id=allocation_id, status=Reclaim.Status.SCHEDULED)
        .order_by("pk")
    )
    return list(rows)
