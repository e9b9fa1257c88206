"""The engine's invariants, checked from the database alone (PRODUCT.md section 4). Used after
concurrency and fault tests: `assert violations() == []`; the proofs use `all_violations()`,
which adds the ledger, four-eyes and audit-chain checks."""

from __future__ import annotations

import contextlib
from collections import defaultdict

from django.db import connection, transaction
from django.db.models import Count

from allocator.models import Allocation, AllocationChange, CapacityChange, LedgerEntry
from audit.models import AuditEvent

# What holds GPUs, spelled out here rather than imported, so a bug in the engine's own filter
# does not hide a violation: active and ended allocations hold over [start, end).
HOLDING = ("active", "ended")


def violations() -> list[str]:
    found: list[str] = []
    found += over_allocations()
    found += duplicate_grants()
    found += applied_without_one_allocation()
    return found


def all_violations() -> list[str]:
    """violations() plus the checks that need every row to have been made by the real
    workflow and engine (fixtures that build allocations or requests directly skip the ledger
    and the audit trail): used by the proofs (tests/proofs)."""
    return [*violations(), *ledger_disagrees(), *approvals_missing(), *request_audit_gaps()]


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


def max_utilisation() -> float:
    """The worst instant of any pool: max over pools and instants of held / capacity."""
    worst = 0.0
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
    for pool_id, pool_spans in spans.items():
        for t in sorted({s for s, _, _ in pool_spans}):
            capacity = sum(d for at, d in capacity_events[pool_id] if at <= t)
            held = sum(g for s, e, g in pool_spans if s <= t < e)
            worst = max(worst, held / capacity if capacity > 0 else float(held > 0) * 99)
    return worst


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


def ledger_disagrees() -> list[str]:
    """Every allocation starts with a grant ledger row, and its latest ledger row states it as
    it stands (gpus, start, end): the ledger alone rebuilds the allocations."""
    found = []
    latest: dict[int, tuple] = {}
    first_kind: dict[int, str] = {}
    for allocation_id, kind, gpus, start, end in LedgerEntry.objects.order_by(
        "allocation_id", "at", "id"
    ).values_list("allocation_id", "kind", "gpus", "start", "end"):
        first_kind.setdefault(allocation_id, kind)
        latest[allocation_id] = (gpus, start, end)
    for pk, gpus, start, end in Allocation.objects.values_list("pk", "gpus", "start", "end"):
        if pk not in latest:
            found.append(f"allocation {pk} has no ledger row")
        elif first_kind[pk] != "grant":
            found.append(f"allocation {pk}'s first ledger row is {first_kind[pk]}, not grant")
        elif latest[pk] != (gpus, start, end):
            found.append(f"allocation {pk} is {(gpus, start, end)}, its ledger says {latest[pk]}")
    return found


def approvals_missing() -> list[str]:
    """Every change made for a request that went into effect (applied, waiting) had, in the
    request's last round, a division approval and — when the request needs executive review —
    an executive approval, by distinct people none of whom is the requester."""
    from requests_app.models import ApprovalStep, ComputeRequest

    found = []
    requests = ComputeRequest.objects.filter(change__status__in=["applied", "waiting"]).values_list(
        "pk", "round", "requester_id", "needs_executive"
    )
    steps: dict[tuple[int, int], list[tuple[str, str, int]]] = defaultdict(list)
    for request_id, rnd, stage, decision, decider in ApprovalStep.objects.values_list(
        "request_id", "round", "stage", "decision", "decider_id"
    ):
        steps[(request_id, rnd)].append((stage, decision, decider))
    for pk, rnd, requester_id, needs_executive in requests:
        approved = {s: d for s, dec, d in steps[(pk, rnd)] if dec == "approved"}
        needed = ["division", "executive"] if needs_executive else ["division"]
        missing = [stage for stage in needed if stage not in approved]
        if missing:
            found.append(f"request {pk} took effect without {', '.join(missing)} approval")
            continue
        deciders = [approved[stage] for stage in needed]
        if requester_id in deciders:
            found.append(f"request {pk} was approved by its requester")
        if len(set(deciders)) != len(deciders):
            found.append(f"request {pk} was approved at both stages by one person")
    return found


@contextlib.contextmanager
def _one_snapshot():
    """Read several tables as of one instant while workers may still be writing (REPEATABLE
    READ); inside a test's own transaction the reads already share it."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def request_audit_gaps() -> list[str]:
    with _one_snapshot():
        return _request_audit_gaps()


def _request_audit_gaps() -> list[str]:
    """Exactly one audit row per request transition: each request's audit rows that record a
    status form one unbroken chain from its creation to its current status (a missing row
    breaks the chain, a doubled one repeats a step the chain has left)."""
    from requests_app.models import ComputeRequest

    found = []
    chains: dict[int, list[tuple[str | None, str]]] = defaultdict(list)
    for object_id, before, after in (
        AuditEvent.objects.filter(object_type="requests_app.computerequest")
        .order_by("at", "id")
        .values_list("object_id", "before", "after")
    ):
        if "status" in (after or {}):
            chains[object_id].append(((before or {}).get("status"), after["status"]))
    for pk, status in ComputeRequest.objects.values_list("pk", "status"):
        chain = chains.get(pk)
        if not chain:
            continue  # made directly by a fixture, not through the workflow
        current = chain[0][1] if chain[0][0] is None else chain[0][0]
        for before, after in chain[1:] if chain[0][0] is None else chain:
            if before != current:
                found.append(f"request {pk}: audit row {before} -> {after} after {current}")
            current = after
        if current != status:
            found.append(f"request {pk} is {status} but its audit trail ends at {current}")
    return found
