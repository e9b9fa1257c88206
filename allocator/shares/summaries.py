"""The whole-lab pages' sums, made in PostgreSQL (see the comment below)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from ..loaders import HOLDING_STATES
from ..models import Pool, Reclaim
from ..selectors import horizon
from ..timeline import Step

# --- summaries computed in PostgreSQL (the whole-lab pages) ---------------------------------
#
# The overview, the balance page and the divisions API need, for every pool, a handful of numbers
# (capacity now and at most, each division's holding now and at its peak over the horizon) and one
# chart series. Building 500 timelines in Python from ~15,000 rows took ~0.3-0.5 s at lab scale;
# the same sweep as `Timeline` (events at start/end instants, summed per instant, running sums in
# order) runs in PostgreSQL and returns a few hundred rows. tests/allocator/test_summaries.py
# checks every figure against the Timeline on generated pools.

_HOLDING = """
    SELECT a.id, a.pool_id, t.division_id, a.project_id, a.state, a.change_id,
           greatest(a.start, %(origin)s) AS s, a.start, a."end" AS e, a.gpus
    FROM allocator_allocation a
    JOIN org_project p ON p.id = a.project_id
    JOIN org_team t ON t.id = p.team_id
    WHERE a.pool_id = ANY(%(ids)s) AND a.state = ANY(%(states)s)
      AND a."end" > %(origin)s AND a.start < %(until)s
"""

_CAPACITY_SQL = """
    WITH c AS (
        SELECT pool_id, greatest(effective_at, %(origin)s) AS at, sum(delta) AS d
        FROM allocator_capacitychange WHERE pool_id = ANY(%(ids)s) GROUP BY 1, 2
    ), run AS (
        SELECT pool_id, at, sum(d) OVER (PARTITION BY pool_id ORDER BY at) AS cap FROM c
    )
    SELECT pool_id, max(cap) FILTER (WHERE at = %(origin)s), max(cap),
           min(at) FILTER (WHERE at > %(origin)s)
    FROM run GROUP BY pool_id
"""

_HOLDINGS_SQL = f"""
    WITH a AS ({_HOLDING}), ev AS (
        SELECT pool_id, division_id, at, sum(d) AS d FROM (
            SELECT pool_id, division_id, s AS at, gpus AS d FROM a
            UNION ALL
            SELECT pool_id, division_id, e, -gpus FROM a
        ) x GROUP BY 1, 2, 3
    ), run AS (
        SELECT pool_id, division_id, at,
               sum(d) OVER (PARTITION BY pool_id, division_id ORDER BY at) AS held
        FROM ev
    )
    SELECT pool_id, division_id,
           coalesce(max(held) FILTER (WHERE at = %(origin)s), 0),
           coalesce(max(held) FILTER (WHERE at < %(until)s), 0),
           min(at) FILTER (WHERE at > %(origin)s)
    FROM run GROUP BY 1, 2
    UNION ALL
    -- The first allocation to enter the window as it slides: the peak may grow then.
    SELECT pool_id, NULL, 0, 0, min(start) - (%(until)s - %(origin)s)
    FROM allocator_allocation
    WHERE pool_id = ANY(%(ids)s) AND state = ANY(%(states)s)
      AND "end" > %(until)s AND start >= %(until)s
    GROUP BY pool_id
"""

# One row per day of the window that has events: the lowest capacity and the highest holding
# among its steps, the first step's instant and the values in force at the end of the day.
_DAILY_SQL = f"""
    WITH a AS ({_HOLDING}), ev AS (
        SELECT at, sum(dc) AS dc, sum(dh) AS dh FROM (
            SELECT greatest(effective_at, %(origin)s) AS at, delta AS dc, 0 AS dh
            FROM allocator_capacitychange
            WHERE pool_id = ANY(%(ids)s) AND effective_at < %(until)s
            UNION ALL SELECT s, 0, gpus FROM a
            UNION ALL SELECT e, 0, -gpus FROM a WHERE e < %(until)s
        ) x GROUP BY at
    ), run AS (
        SELECT at, sum(dc) OVER w AS cap, sum(dh) OVER w AS held FROM ev WINDOW w AS (ORDER BY at)
    )
    SELECT floor(extract(epoch FROM at - %(origin)s) / 86400)::int AS day,
           min(at), min(cap), max(held),
           (array_agg(cap ORDER BY at DESC))[1], (array_agg(held ORDER BY at DESC))[1]
    FROM run GROUP BY 1 ORDER BY 1
"""


def _params(ids: Iterable[int], origin: datetime, until: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "ids": list(ids),
        "origin": origin,
        "until": until,
        "states": [str(s) for s in HOLDING_STATES],
        **extra,
    }


def _rows(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


@dataclass
class PoolSummary:
    """What a pool's forecast says about now and the horizon, without its timeline: the same
    numbers as PoolForecast (capacity_now, held_now, max_capacity, division_held_now,
    division_peak), from PostgreSQL."""

    pool: Pool
    origin: datetime
    until: datetime
    capacity_now: int
    max_capacity: int
    division_now: dict[int, int]
    division_peaks: dict[int, int]
    # The first instant after `origin` at which a figure here may change by time alone (an
    # allocation starting or ending, a capacity change taking effect, an allocation entering
    # the window as it slides); None: none is on record.
    valid_until: datetime | None = None
    # The pool's cache key part when these figures came from allocator/shares/cached.py.
    cache_mark: str | None = None

    @property
    def held_now(self) -> int:
        return sum(self.division_now.values())

    def division_held_now(self, division_id: int) -> int:
        return self.division_now.get(division_id, 0)

    def division_peak(self, division_id: int) -> int:
        return self.division_peaks.get(division_id, 0)


def pool_summaries(
    pools: Iterable[Pool] | None = None,
    *,
    origin: datetime | None = None,
    until: datetime | None = None,
) -> dict[int, PoolSummary]:
    """Capacity now and at most, and each division's holding now and peak over [origin, until)
        (default now and the horizon), of the given pools (default all), and until when they hold by
    time alone (`valid_until`). Two queries."""
    origin = origin or timezone.now()
    until = until or origin + horizon()
    pools = list(pools if pools is not None else Pool.objects.all())
    params = _params([p.pk for p in pools], origin, until)
    capacity, next_of = {}, defaultdict(list)
    for pid, now, most, next_at in _rows(_CAPACITY_SQL, params):
        capacity[pid] = (now or 0, most or 0)
        next_of[pid].append(next_at)
    now_of: dict[int, dict[int, int]] = defaultdict(dict)
    peak_of: dict[int, dict[int, int]] = defaultdict(dict)
    for pool_id, division_id, now, peak, next_at in _rows(_HOLDINGS_SQL, params):
        next_of[pool_id].append(next_at)
        if division_id is not None:
            now_of[pool_id][division_id] = int(now)
            peak_of[pool_id][division_id] = int(peak)
    result = {}
    for pool in pools:
        now, most = capacity.get(pool.pk, (0, 0))
        result[pool.pk] = PoolSummary(
            pool=pool,
            origin=origin,
            until=until,
            capacity_now=int(now),
            # Steps from the origin on: the capacity now, or any later one.
            max_capacity=int(max(now, most)),
            division_now=now_of[pool.pk],
            division_peaks=peak_of[pool.pk],
            valid_until=min((t for t in next_of[pool.pk] if t is not None), default=None),
        )
    return result


def daily_load(
    pools: Iterable[Pool], *, origin: datetime, days: int
) -> list[tuple[datetime, int, int]]:
    """(day start, lowest capacity, highest holding) for each of `days` days from `origin`, the
    given pools summed — what `common.charts.daily_points` draws from a (summed) timeline, in one
    query."""
    until = origin + timedelta(days=days)
    params = _params([p.pk for p in pools], origin, until)
    by_day = {row[0]: row[1:] for row in _rows(_DAILY_SQL, params)}
    capacity, held = 0, 0  # in force before the first event
    out = []
    for d in range(days):
        start = origin + timedelta(days=d)
        if d in by_day:
            first_at, low, high, last_capacity, last_held = by_day[d]
            if first_at > start:  # the step in force at the day's start counts too
                low, high = min(low, capacity), max(high, held)
            out.append((start, int(low), int(high)))
            capacity, held = last_capacity, last_held
        else:
            out.append((start, int(capacity), int(held)))
    return out


# --- one pool's step series (the pool page's timeline) ---------------------------------------
#
# The pool page drew its chart from a Timeline of every allocation overlapping the window (a
# few thousand rows on a busy pool). The same sweep runs here: one event per span end, summed
# per instant, running sums in order; only the steps come back. A scheduled reclaim is drawn
# ahead of time, as the page always did: the allocation holds all its GPUs until the reclaim's
# effective time, then what it keeps until its new end (the latest scheduled one counts).

_POOL_STEPS_SQL = """
    WITH r AS (
        SELECT DISTINCT ON (allocation_id) allocation_id, effective_at, new_gpus, new_end
        FROM allocator_reclaim WHERE status = %(scheduled)s
        ORDER BY allocation_id, effective_at DESC, id DESC
    ), a AS (
        SELECT a.start, a."end", a.gpus, r.effective_at AS cut, r.new_gpus, r.new_end
        FROM allocator_allocation a LEFT JOIN r ON r.allocation_id = a.id
        WHERE a.pool_id = %(pool)s AND a.state = ANY(%(states)s)
          AND a."end" > %(origin)s AND a.start < %(until)s
    ), spans AS (
        SELECT start AS s, "end" AS e, gpus FROM a
        WHERE cut IS NULL OR NOT (start < cut AND cut < "end")
        UNION ALL
        SELECT start, cut, gpus FROM a WHERE start < cut AND cut < "end"
        UNION ALL
        SELECT cut, least(coalesce(new_end, "end"), "end"), new_gpus FROM a
        WHERE start < cut AND cut < "end" AND new_gpus > 0
    ), ev AS (
        SELECT at, sum(dc) AS dc, sum(dh) AS dh FROM (
            SELECT %(origin)s::timestamptz AS at, 0 AS dc, 0 AS dh
            UNION ALL
            SELECT greatest(effective_at, %(origin)s), delta, 0
            FROM allocator_capacitychange WHERE pool_id = %(pool)s AND effective_at < %(until)s
            UNION ALL SELECT greatest(s, %(origin)s), 0, gpus FROM spans WHERE e > %(origin)s
            UNION ALL SELECT e, 0, -gpus FROM spans WHERE e > %(origin)s AND e < %(until)s
        ) x GROUP BY at
    ), run AS (
        SELECT at, dc, dh, sum(dc) OVER w AS cap, sum(dh) OVER w AS held
        FROM ev WINDOW w AS (ORDER BY at)
    )
    SELECT at, cap, held FROM run
    WHERE at < %(until)s AND (at = %(origin)s OR dc <> 0 OR dh <> 0)
    ORDER BY at
"""


def pool_steps(pool_id: int, *, origin: datetime, until: datetime) -> list[Step]:
    """The pool's steps (instant, capacity, GPUs held) from `origin` to before `until`, scheduled
    reclaims drawn ahead of time: what `Timeline(origin, capacity changes, spans).steps` gives
    for those instants (tests/allocator/test_summaries.py). One query; the rows read are the
    allocations overlapping the window, the rows sent back are the steps."""
    params = _params([pool_id], origin, until, pool=pool_id, scheduled=Reclaim.Status.SCHEDULED)
    return [Step(at, int(cap), int(held)) for at, cap, held in _rows(_POOL_STEPS_SQL, params)]
