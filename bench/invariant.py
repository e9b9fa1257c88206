"""The invariant, checked from the database after each throughput and latency run (PRODUCT.md
section 4): for every pool, at every event instant, GPUs held <= capacity. One SQL sweep over all
pools, so it stays quick on the full lab (the Python checker in tests/support/invariants.py is
quadratic per pool). Also: every applied change has exactly one grant (or extend) ledger row."""

from __future__ import annotations

from django.db import connection

OVER_ALLOCATION = """
WITH events AS (
    SELECT pool_id, effective_at AS at, delta AS capacity_delta, 0 AS held_delta
      FROM allocator_capacitychange
    UNION ALL
    SELECT pool_id, start, 0, gpus FROM allocator_allocation WHERE state IN ('active', 'ended')
    UNION ALL
    SELECT pool_id, "end", 0, -gpus FROM allocator_allocation WHERE state IN ('active', 'ended')
), instants AS (
    SELECT pool_id, at, sum(capacity_delta) AS dc, sum(held_delta) AS dh
      FROM events GROUP BY pool_id, at
), running AS (
    SELECT pool_id, at,
           sum(dc) OVER w AS capacity,
           sum(dh) OVER w AS held
      FROM instants
    WINDOW w AS (PARTITION BY pool_id ORDER BY at ROWS UNBOUNDED PRECEDING)
)
SELECT pool_id, at, held, capacity FROM running WHERE held > capacity ORDER BY pool_id, at LIMIT 50
"""

GRANTS = """
SELECT c.id, count(l.id)
  FROM allocator_allocationchange c
  LEFT JOIN allocator_ledgerentry l ON l.change_id = c.id AND l.kind IN ('grant', 'extend')
 WHERE c.status = 'applied' {scope}
 GROUP BY c.id HAVING count(l.id) <> 1
 LIMIT 50
"""


def violations(*, change_ids: list[int] | None = None) -> list[str]:
    found = []
    with connection.cursor() as cursor:
        cursor.execute(OVER_ALLOCATION)
        for pool_id, at, held, capacity in cursor.fetchall():
            found.append(f"pool {pool_id} at {at.isoformat()}: {held} held > {capacity}")
        scope, params = "", []
        if change_ids is not None:
            scope, params = "AND c.id = ANY(%s)", [list(change_ids)]
        cursor.execute(GRANTS.format(scope=scope), params)
        for change_id, n in cursor.fetchall():
            found.append(f"applied change {change_id} has {n} grant rows")
    return found
