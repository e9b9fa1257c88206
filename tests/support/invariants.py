"""The engine's invariants, checked from the database alone (PRODUCT.md section 4). Used after
concurrency and fault tests: `assert violations() == []`."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Count

from allocator.models import Allocation, AllocationChange, CapacityChange, LedgerEntry

# What holds GPUs, spelled out here rather than imported, so a bug in the engine's own filter
# does not hide a violation: active and ended allocations hold over [start, end).
HOLDING = ("active", "ended")


def violations() -> list[str]:
    found: list[str] = []
    found += over_allocations()
    found += duplicate_grants()
    found += applied_without_one_allocation()
    return found


def over_allocations() -> list[str]:
    """For every pool, at every event instant, held <= capacity."""
    capacity_events = defaultdict(list)
    for pool_id, at, delta in CapacityChange.objects.values_list(
        "pool_id", "effective_at", "delta"
    ):
        capacity_events[pool_id].append((at, delta))
    spans = defaultdict(list)
    for pool_id, start, end, gpus in Allocation.objects.filter(state__in=HOLDING).values_list(
        "pool_id", "start", "end", "gpus"
    ):
        spans[pool_id].append((start, end, gpus))
    found = []
    for pool_id in set(capacity_events) | set(spans):
        instants = {at for at, _ in capacity_events[pool_id]}
        for start, end, _ in spans[pool_id]:
            instants.add(start)
            instants.add(end)
        for t in sorted(instants):
            capacity = sum(d for at, d in capacity_events[pool_id] if at <= t)
            held = sum(g for s, e, g in spans[pool_id] if s <= t < e)
            if held > capacity:
                found.append(
                    f"pool {pool_id} at {t:%Y-%m-%d %H:%M:%S.%f}: {held} held > {capacity}"
                )
    return found


def duplicate_grants() -> list[str]:
    """At most one grant (or extend) ledger row per change."""
    rows = (
        LedgerEntry.objects.filter(kind__in=["grant", "extend"], change__isnull=False)
        .values("change_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    return [f"change {r['change_id']} has {r['n']} grant rows" for r in rows]


def applied_without_one_allocation() -> list[str]:
    """Every applied change has exactly one allocation (a new one, or the one it extended) and
    one grant/extend ledger row; no other change has any."""
    found = []
    created = dict(
        Allocation.objects.filter(change__isnull=False)
        .values("change_id")
        .annotate(n=Count("id"))
        .values_list("change_id", "n")
    )
    grants = dict(
        LedgerEntry.objects.filter(kind__in=["grant", "extend"], change__isnull=False)
        .values("change_id")
        .annotate(n=Count("id"))
        .values_list("change_id", "n")
    )
    for change_id, status, kind, allocation_id in AllocationChange.objects.values_list(
        "pk", "status", "kind", "allocation_id"
    ):
        if status == "applied":
            expected_created = 0 if kind == "extension" else 1
            if allocation_id is None:
                found.append(f"applied change {change_id} has no allocation")
            if created.get(change_id, 0) != expected_created:
                found.append(f"applied change {change_id} created {created.get(change_id, 0)}")
            if grants.get(change_id, 0) != 1:
                found.append(f"applied change {change_id} has {grants.get(change_id, 0)} grants")
        elif created.get(change_id) or grants.get(change_id):
            found.append(f"{status} change {change_id} has an allocation or a grant")
    return found
