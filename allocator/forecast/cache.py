"""Forecasts cached per pool for pages and the API: the key is a version token that changes on
any write a forecast reads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from django.utils import timezone

from .simulation import ForecastOutcome, Status, forecast_pools

CACHE_SECONDS = 60  # time passing alone changes a forecast little; any write changes the key


def pool_versions(pool_ids: Iterable[int]) -> dict[int, str]:
    """A token per pool that changes on any write a forecast reads: the ledger (every grant,
    extension, release, reclaim, transfer, expiry), the waiting and pending changes, capacity
    changes, scheduled reclaims and shares. One query for any number of pools."""
    ids = sorted(set(pool_ids))
    if not ids:
        return {}
    from django.db import connection

    live = [Status.WAITING, Status.PENDING]
    # One grouped pass per table over the asked-for pools (a correlated subquery per pool
    # scanned the whole ledger once per pool: ~4 ms a pool at lab scale).
    sql = """
        WITH ledger AS (
            SELECT a.pool_id, max(l.id) AS top FROM allocator_ledgerentry l
            JOIN allocator_allocation a ON a.id = l.allocation_id
            WHERE a.pool_id = ANY(%(ids)s) GROUP BY a.pool_id
        ), changes AS (
            SELECT c.pool_id, sum(c.id) AS total, count(*) AS n FROM allocator_allocationchange c
            WHERE c.pool_id = ANY(%(ids)s) AND c.status = ANY(%(live)s) GROUP BY c.pool_id
        ), capacity AS (
            SELECT k.pool_id, sum(k.id) AS total FROM allocator_capacitychange k
            WHERE k.pool_id = ANY(%(ids)s) GROUP BY k.pool_id
        ), reclaims AS (
            SELECT a.pool_id, sum(r.id) AS total, count(*) AS n FROM allocator_reclaim r
            JOIN allocator_allocation a ON a.id = r.allocation_id
            WHERE a.pool_id = ANY(%(ids)s) AND r.status = 'scheduled' GROUP BY a.pool_id
        ), shares AS (
            SELECT s.pool_id,
                   string_agg(s.division_id || ':' || s.gpus, ',' ORDER BY s.id) AS listed
            FROM allocator_divisionshare s WHERE s.pool_id = ANY(%(ids)s) GROUP BY s.pool_id
        )
        SELECT p.id, p.created_at, coalesce(ledger.top, 0),
               coalesce(changes.total, 0) || '.' || coalesce(changes.n, 0),
               coalesce(capacity.total, 0),
               coalesce(reclaims.total, 0) || '.' || coalesce(reclaims.n, 0),
               coalesce(shares.listed, '')
        FROM allocator_pool p
        LEFT JOIN ledger ON ledger.pool_id = p.id
        LEFT JOIN changes ON changes.pool_id = p.id
        LEFT JOIN capacity ON capacity.pool_id = p.id
        LEFT JOIN reclaims ON reclaims.pool_id = p.id
        LEFT JOIN shares ON shares.pool_id = p.id
        WHERE p.id = ANY(%(ids)s)
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"ids": ids, "live": live})
        return {row[0]: "|".join(str(v) for v in row[1:]) for row in cursor.fetchall()}


def outcomes_for_pools(
    pool_ids: Iterable[int], *, now: datetime | None = None
) -> dict[int, dict[int, ForecastOutcome]]:
    """{pool id: {change id: ForecastOutcome}} for the given pools: from Django's cache when the pool
    has not changed (one query for the versions), else simulated (six more queries for all the
    pools that missed) and cached."""
    from django.core.cache import cache

    now = now or timezone.now()
    versions = pool_versions(pool_ids)
    # v2: the cached values are pickled ForecastOutcome rows (once named Outcome); a new prefix
    # keeps an upgraded worker from unpickling entries an older one wrote.
    keys = {
        pid: f"forecast:v2:{pid}:{hashlib.sha1(v.encode()).hexdigest()}"
        for pid, v in versions.items()
    }
    cached = cache.get_many(list(keys.values()))
    result = {pid: cached[key] for pid, key in keys.items() if key in cached}
    missing = [pid for pid in keys if pid not in result]
    if missing:
        fresh = {pid: f.outcomes for pid, f in forecast_pools(missing, now=now).items()}
        cache.set_many({keys[pid]: out for pid, out in fresh.items()}, CACHE_SECONDS)
        result.update(fresh)
    return result
