"""The rows a pool's simulation reads, as plain objects (PoolState), loaded for any number of
pools in six queries; a what-if copies a state with more changes or other shares."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q

from ..loaders import HOLDING_STATES, read_rows
from ..models import Allocation, AllocationChange, CapacityChange, DivisionShare, Pool, Reclaim
from .words import project_label

Status = AllocationChange.Status


# --- the pool's rows, as plain objects -----------------------------------------------------


@dataclass
class SimAllocation:
    id: int
    start: datetime
    end: datetime
    gpus: int
    state: str
    division_id: int
    label: str  # "project Atlas" or "a confidential project"
    change_id: int | None = None  # set for the allocations the forecast itself makes


@dataclass
class SimChange:
    pk: int
    priority: int
    approved_at: datetime
    kind: str
    target_allocation_id: int | None
    gpus: int
    start: datetime
    end: datetime
    flexible_start: bool
    executive_reviewed: bool
    division_id: int
    label: str
    status: str = Status.WAITING
    division_name: str = "the division"


@dataclass
class SimReclaim:
    pk: int
    allocation_id: int
    new_gpus: int
    new_end: datetime | None
    effective_at: datetime
    transfer_to_id: int | None


@dataclass
class PoolState:
    """Everything the simulation of one pool reads (built by `load_pools`, six queries for any
    number of pools; tests and what-ifs may build or copy one by hand)."""

    pool_id: int
    pool_name: str
    capacity_changes: list[tuple[datetime, int, str]]
    allocations: list[SimAllocation]
    changes: list[SimChange]  # waiting and pending (approved, not yet applied)
    reclaims: list[SimReclaim]
    shares: dict[int, int]  # division id -> GPUs

    def with_changes(
        self,
        *,
        extra: Iterable[SimChange] = (),
        shares: dict[int, int] | None = None,
    ) -> PoolState:
        """A what-if copy: more approved changes, other shares."""
        return PoolState(
            pool_id=self.pool_id,
            pool_name=self.pool_name,
            capacity_changes=self.capacity_changes,
            allocations=self.allocations,
            changes=[*self.changes, *extra],
            reclaims=self.reclaims,
            shares=dict(self.shares if shares is None else shares),
        )


def load_pools(pool_ids: Iterable[int], *, now: datetime) -> dict[int, PoolState]:
    """The rows the simulation needs for the given pools, in six queries whatever their number."""
    ids = sorted(set(pool_ids))
    if not ids:
        return {}
    names = {
        p.pk: p.name for p in Pool.objects.filter(pk__in=ids).only("id", "cluster", "gpu_model")
    }
    capacity: dict[int, list] = defaultdict(list)
    for pool_id, at, delta, kind in read_rows(
        CapacityChange.objects.filter(pool_id__in=ids).values_list(
            "pool_id", "effective_at", "delta", "kind"
        )
    ):
        capacity[pool_id].append((at, delta, kind))
    live = [Status.WAITING, Status.PENDING]
    targets = AllocationChange.objects.filter(
        pool_id__in=ids, status__in=live, target_allocation__isnull=False
    ).values("target_allocation_id")
    allocations: dict[int, list[SimAllocation]] = defaultdict(list)
    for row in read_rows(
        Allocation.objects.filter(pool_id__in=ids)
        .filter(Q(state__in=HOLDING_STATES, end__gt=now) | Q(pk__in=targets))
        .order_by()
        .values_list(
            "id",
            "pool_id",
            "start",
            "end",
            "gpus",
            "state",
            "project__team__division_id",
            "project__name",
            "project__confidential",
        )
    ):
        allocations[row[1]].append(
            SimAllocation(
                id=row[0],
                start=row[2],
                end=row[3],
                gpus=row[4],
                state=row[5],
                division_id=row[6],
                label=project_label(row[7], row[8]),
            )
        )
    changes: dict[int, list[SimChange]] = defaultdict(list)
    for row in read_rows(
        AllocationChange.objects.filter(pool_id__in=ids, status__in=live)
        .order_by()
        .values_list(
            "id",
            "pool_id",
            "priority",
            "approved_at",
            "kind",
            "target_allocation_id",
            "gpus",
            "start",
            "end",
            "flexible_start",
            "executive_reviewed",
            "project__team__division_id",
            "project__name",
            "project__confidential",
            "status",
            "project__team__division__name",
        )
    ):
        changes[row[1]].append(
            SimChange(
                pk=row[0],
                priority=row[2],
                approved_at=row[3],
                kind=row[4],
                target_allocation_id=row[5],
                gpus=row[6],
                start=row[7],
                end=row[8],
                flexible_start=row[9],
                executive_reviewed=row[10],
                division_id=row[11],
                label=project_label(row[12], row[13]),
                status=row[14],
                division_name=row[15],
            )
        )
    reclaims: dict[int, list[SimReclaim]] = defaultdict(list)
    for row in read_rows(
        Reclaim.objects.filter(allocation__pool_id__in=ids, status=Reclaim.Status.SCHEDULED)
        .order_by()
        .values_list(
            "id",
            "allocation__pool_id",
            "allocation_id",
            "new_gpus",
            "new_end",
            "effective_at",
            "transfer_to_id",
        )
    ):
        reclaims[row[1]].append(SimReclaim(row[0], row[2], row[3], row[4], row[5], row[6]))
    shares: dict[int, dict[int, int]] = defaultdict(dict)
    for pool_id, division_id, gpus in DivisionShare.objects.filter(pool_id__in=ids).values_list(
        "pool_id", "division_id", "gpus"
    ):
        shares[pool_id][division_id] = gpus
    return {
        pool_id: PoolState(
            pool_id=pool_id,
            pool_name=names.get(pool_id, f"pool {pool_id}"),
            capacity_changes=capacity[pool_id],
            allocations=allocations[pool_id],
            changes=changes[pool_id],
            reclaims=reclaims[pool_id],
            shares=shares[pool_id],
        )
        for pool_id in ids
    }
