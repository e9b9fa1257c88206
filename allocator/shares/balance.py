"""The cross-division balance (PRODUCT.md sections 2 and 5, "Balance"): each division's share of
each pool against what it holds now and at its peak over the horizon, and what compute ops would
reclaim where it stands above. Bulk reads: a bounded query count with 100 pools."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from org.models import Division

from ..models import DivisionShare, Pool
from .cached import cached_pool_summaries, cached_reclaim_lists
from .reclaim import ReclaimRow
from .summaries import PoolSummary

# --- balance --------------------------------------------------------------------------------


def _percent(part: int, whole: int) -> int | None:
    return round(100 * part / whole) if whole > 0 else None


@dataclass(frozen=True)
class ShareRow:
    division: Division
    pool: Pool
    share: int  # GPUs; 0 when no share row exists
    share_percent: int | None  # of the pool's current capacity
    held_now: int
    peak: int  # largest holding over the horizon
    reclaim: list[ReclaimRow]  # what compute ops would take back to bring the peak under the share

    @property
    def over(self) -> bool:
        return self.peak > self.share

    @property
    def excess(self) -> int:
        return max(self.peak - self.share, 0)


@dataclass(frozen=True)
class PoolBalance:
    forecast: PoolSummary  # capacity now and at most
    rows: list[ShareRow]

    @property
    def pool(self) -> Pool:
        return self.forecast.pool

    @property
    def shares_total(self) -> int:
        return sum(r.share for r in self.rows)

    @property
    def overcommitted(self) -> bool:
        """Shares promise more GPUs than the pool has now (allowed, but warned about)."""
        return self.shares_total > self.forecast.capacity_now


def _rows_of(
    summaries: dict[int, PoolSummary],
    pairs: list[tuple[Pool, Division]],
    shares: dict[tuple[int, int], int],
    *,
    with_reclaim: bool = True,
) -> dict[tuple[int, int], ShareRow]:
    """ShareRows of (pool, division) pairs from the pools' summaries: one more query for the
    allocations to reclaim where a division stands above its share (unless `with_reclaim` is
    false: then `reclaim` is left empty)."""
    excess = {}
    for pool, division in pairs:
        summary = summaries[pool.pk]
        excess[(pool.pk, division.pk)] = summary.division_peak(division.pk) - shares.get(
            (division.pk, pool.pk), 0
        )
    reclaims = cached_reclaim_lists(excess, summaries) if summaries and with_reclaim else {}
    rows = {}
    for pool, division in pairs:
        summary = summaries[pool.pk]
        share = shares.get((division.pk, pool.pk), 0)
        rows[(pool.pk, division.pk)] = ShareRow(
            division=division,
            pool=pool,
            share=share,
            share_percent=_percent(share, summary.capacity_now),
            held_now=summary.division_held_now(division.pk),
            peak=summary.division_peak(division.pk),
            reclaim=reclaims.get((pool.pk, division.pk), []),
        )
    return rows


def balance(
    *,
    origin: datetime | None = None,
    pools: Iterable[Pool] | None = None,
    summaries: dict[int, PoolSummary] | None = None,
    with_reclaim: bool = True,
) -> list[PoolBalance]:
    """Every pool (or the given ones) with every division's share, holding now and peak over
    the horizon, from the per-pool cache (allocator/shares/cached.py). Four queries when no
    pool changed: pools, divisions, shares, the pools' cache marks; when some did, three more
    for all of them (their summaries (2), their reclaim lists). Two when the caller already has
    the pools and their summaries and needs no reclaim lists (`with_reclaim=False`)."""
    origin = origin or timezone.now()
    pools = list(pools if pools is not None else Pool.objects.all())
    divisions = list(Division.objects.all())
    shares = {
        (d, p): g
        for d, p, g in DivisionShare.objects.filter(pool__in=pools).values_list(
            "division_id", "pool_id", "gpus"
        )
    }
    if summaries is None:
        summaries = cached_pool_summaries(pools, origin=origin)
    rows = _rows_of(
        summaries, [(p, d) for p in pools for d in divisions], shares, with_reclaim=with_reclaim
    )
    return [
        PoolBalance(forecast=summaries[pool.pk], rows=[rows[(pool.pk, d.pk)] for d in divisions])
        for pool in pools
    ]


def division_holdings(
    divisions: Iterable[Division], *, origin: datetime | None = None
) -> dict[int, list[ShareRow]]:
    """Shares, holdings now and peaks of the given divisions in every pool (for the API).
    Three queries when no pool changed (pools, shares, the cache marks); three more for all the
    pools that did (their summaries (2), their reclaim lists)."""
    origin = origin or timezone.now()
    divisions = list(divisions)
    pools = list(Pool.objects.all())
    shares = {
        (d, p): g
        for d, p, g in DivisionShare.objects.filter(
            division_id__in=[d.pk for d in divisions]
        ).values_list("division_id", "pool_id", "gpus")
    }
    summaries = cached_pool_summaries(pools, origin=origin)
    rows = _rows_of(summaries, [(p, d) for d in divisions for p in pools], shares)
    return {d.pk: [rows[(p.pk, d.pk)] for p in pools] for d in divisions}
