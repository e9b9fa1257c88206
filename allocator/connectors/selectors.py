"""Reads for the ops console and the API: connectors with their accounts, recent runs and
pending intents, in a bounded number of queries whatever the number of accounts."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Prefetch, Sum
from django.utils import timezone

from allocator.selectors import holding_allocations

from .models import AllocationUsage, EnforcementIntent, PoolAccount, PoolConnector, SyncRun

RECENT_RUNS = 5


@dataclass
class AccountRow:
    pool_account: PoolAccount
    ledger_gpus: int  # what the ledger says now
    used_gpu_hours: float | None

    @property
    def in_sync(self) -> bool:
        return self.pool_account.applied_gpus == self.ledger_gpus


def connectors_overview() -> list[PoolConnector]:
    """Every connector with `.recent_runs`, `.pending` (due, unapplied intents with their
    errors) and `.rows` (AccountRow per project account). Six queries."""
    now = timezone.now()
    connectors = list(
        PoolConnector.objects.select_related("pool").prefetch_related(
            Prefetch(
                "accounts",
                queryset=PoolAccount.objects.select_related("project__team").order_by(
                    "account_name"
                ),
            )
        )
    )
    ids = [c.pk for c in connectors]
    runs: dict[int, list[SyncRun]] = {}
    for run in SyncRun.objects.filter(connector_id__in=ids).order_by("-started_at", "-id")[
        : RECENT_RUNS * max(1, len(ids)) * 4
    ]:
        bucket = runs.setdefault(run.connector_id, [])
        if len(bucket) < RECENT_RUNS:
            bucket.append(run)
    pending: dict[int, list[EnforcementIntent]] = {}
    for intent in (
        EnforcementIntent.objects.filter(
            pool_account__connector_id__in=ids, status="pending", effective_at__lte=now
        )
        .select_related("pool_account")
        .order_by("effective_at", "sequence")[:500]
    ):
        pending.setdefault(intent.pool_account.connector_id, []).append(intent)
    held = {
        (pool_id, project_id): total
        for pool_id, project_id, total in holding_allocations()
        .filter(pool_id__in=[c.pool_id for c in connectors], start__lte=now, end__gt=now)
        .values("pool_id", "project_id")
        .annotate(total=Sum("gpus"))
        .values_list("pool_id", "project_id", "total")
    }
    used = {
        (pool_id, project_id): total
        for pool_id, project_id, total in AllocationUsage.objects.filter(
            allocation__pool_id__in=[c.pool_id for c in connectors]
        )
        .values("allocation__pool_id", "allocation__project_id")
        .annotate(total=Sum("gpu_hours"))
        .values_list("allocation__pool_id", "allocation__project_id", "total")
    }
    for c in connectors:
        # Attributes for the page only, set on these instances.
        c.recent_runs = runs.get(c.pk, [])  # type: ignore[attr-defined]
        c.pending = pending.get(c.pk, [])  # type: ignore[attr-defined]
        c.rows = [  # type: ignore[attr-defined]
            AccountRow(
                pool_account=pa,
                ledger_gpus=held.get((c.pool_id, pa.project_id), 0),
                used_gpu_hours=used.get((c.pool_id, pa.project_id)),
            )
            for pa in c.accounts.all()
        ]
    return connectors


def intents_backlog() -> int:
    """Enforcement intents that are due and not yet applied: the backlog /readyz reports
    (ALLOTMENT_OPS["CONNECTOR_BACKLOG"] names this function)."""
    return EnforcementIntent.objects.filter(
        status=EnforcementIntent.Status.PENDING, effective_at__lte=timezone.now()
    ).count()
