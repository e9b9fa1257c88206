"""Which allocations compute ops would reclaim to bring a division back under its share of a
pool: its active ones (now or later), largest first and, among equals, the latest-ending first —
fewest moves, and the longest commitments go before short ones that end on their own soon.

The one place this rule is written: in SQL, so the whole-lab pages ask it for every (pool,
division) pair in one query; the share decision and the what-if ask it for theirs the same way.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from .forecasts import HeldRow
from .summaries import _HOLDING, _params, _rows

# For the (pool, division) pairs above their share: the division's active allocations, largest
# first, then latest end, then highest id, while the GPUs taken so far do not cover the excess.
_RECLAIM_SQL = f"""
    WITH want AS (
        SELECT * FROM unnest(%(want_pool)s::bigint[], %(want_division)s::bigint[],
                             %(want_excess)s::bigint[]) AS w(pool_id, division_id, excess)
    ), a AS ({_HOLDING}), c AS (
        SELECT a.*, w.excess, sum(a.gpus) OVER (
            PARTITION BY a.pool_id, a.division_id ORDER BY a.gpus DESC, a.e DESC, a.id DESC
        ) AS covered
        FROM a JOIN want w ON w.pool_id = a.pool_id AND w.division_id = a.division_id
        WHERE a.state = 'active'
    )
    SELECT c.id, c.pool_id, c.division_id, c.project_id, p.name, p.confidential, p.team_id,
           c.state, c.start, c.e, c.gpus
    FROM c JOIN org_project p ON p.id = c.project_id
    WHERE c.covered - c.gpus < c.excess
    ORDER BY c.pool_id, c.division_id, c.gpus DESC, c.e DESC, c.id DESC
"""


def reclaim_lists(
    wanted: dict[tuple[int, int], int], *, origin: datetime, until: datetime
) -> dict[tuple[int, int], list[HeldRow]]:
    """{(pool id, division id): excess GPUs} -> the allocations compute ops would reclaim to
    cover each excess, in one query (the rule above)."""
    result: dict[tuple[int, int], list[HeldRow]] = defaultdict(list)
    if not wanted:
        return result
    # Asked even when no division is above its share (the answer is then empty at once): the
    # pages' query count does not depend on the data.
    keys = [k for k, v in wanted.items() if v > 0]
    params = _params(
        sorted({p for p, _ in keys}),
        origin,
        until,
        want_pool=[p for p, _ in keys],
        want_division=[d for _, d in keys],
        want_excess=[wanted[k] for k in keys],
    )
    for row in _rows(_RECLAIM_SQL, params):
        result[(row[1], row[2])].append(HeldRow(*row))
    return result
