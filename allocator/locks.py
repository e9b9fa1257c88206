"""Row locks for the engine, always taken in one order so that two transactions never wait for
each other in a cycle:

    Pool rows (by pk)  →  Allocation rows (by pk)  →  AllocationChange rows (by pk)  →  Reclaim rows

The pool row is the mutex of the invariant: every write that changes what a pool holds or can
hold (apply, serve the queue, release, reclaim, capacity change, expiry) first locks the pool
row, so those writes are serialized per pool across every web process and worker machine —
PostgreSQL holds the lock, not process memory. Reads of the pool's timeline made after taking
the lock see every committed allocation (READ COMMITTED: each statement takes a fresh snapshot).

Only the apply worker's first step takes a change row on its own (with SKIP LOCKED, so it never
waits, hence never closes a cycle); requests_app locks change rows after its request row and never
takes a pool lock.
"""

from __future__ import annotations

from collections.abc import Iterable

from .models import Allocation, AllocationChange, Pool, Reclaim


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
