"""Which allocations compute ops would reclaim to bring a division back under its share of a
pool: its active ones (now or later), largest first and, among equals, the latest-ending first —
fewest moves, and the longest commitments go before short ones that end on their own soon.

The one place this rule is written: in SQL, so the whole-lab pages ask it for every (pool,
division) pair in one query; the share decision and the what-if ask it for theirs the same way.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, fields
from datetime import datetime

from ..signals import request_ids_for_changes
from .forecasts import HeldRow
from .summaries import _HOLDING, _params, _rows


@dataclass(frozen=True)
class ReclaimRow(HeldRow):
    """An allocation to reclaim, with what pages name it by: its team and the request that made
    it (the allocation and change ids stay internal)."""

    team_name: str = ""
    request_id: int | None = None


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
           c.state, c.start, c.e, c.gpus, t.name, c.change_id
    FROM c JOIN org_project p ON p.id = c.project_id JOIN org_team t ON t.id = p.team_id
    WHERE c.covered - c.gpus < c.excess
    ORDER BY c.pool_id, c.division_id, c.gpus DESC, c.e DESC, c.id DESC
"""


def reclaim_lists(
    wanted: dict[tuple[int, int], int], *, origin: datetime, until: datetime
) -> dict[tuple[int, int], list[ReclaimRow]]:
    """{(pool id, division id): excess GPUs} -> the allocations compute ops would reclaim to
    cover each excess, in one query (the rule above); one more for their request numbers when
    there are any."""
    result: dict[tuple[int, int], list[ReclaimRow]] = defaultdict(list)
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
    rows = _rows(_RECLAIM_SQL, params)
    requests = request_ids_for_changes({r[12] for r in rows if r[12] is not None})
    for row in rows:
        result[(row[1], row[2])].append(
            ReclaimRow(
                **dict(zip(_HELD_NAMES, row[:11], strict=True)),
                team_name=row[11],
                request_id=requests.get(row[12]),
            )
        )
    return result


_HELD_NAMES = [f.name for f in fields(HeldRow)]


def as_held(rows: list[ReclaimRow]) -> list[HeldRow]:
    """The rows without their names (to compare with the forecast's HeldRows)."""
    return [
        HeldRow(**{k: v for k, v in vars(r).items() if k not in ("team_name", "request_id")})
        for r in rows
    ]
