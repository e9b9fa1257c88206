"""Each pool's capacity/holdings timeline (and each division's inside it) over a window, built
in Python from two queries whatever the number of pools (allocator.loaders): what the share
decision and the what-if read, and what tests/allocator/test_summaries.py checks the SQL sums
against. The rows are `selectors.pool_timeline`'s (allocations ending after the origin, every
capacity change), so a forecast and the apply engine never disagree about a pool."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from ..loaders import load_pool_rows, timeline_of
from ..models import Pool
from ..selectors import horizon
from ..timeline import Step, Timeline


@dataclass(frozen=True)
class HeldRow:
    """One allocation as the forecast sees it (no model instance: cheap for 30,000 rows)."""

    id: int
    pool_id: int
    division_id: int
    project_id: int
    project_name: str
    confidential: bool
    team_id: int
    state: str
    start: datetime
    end: datetime
    gpus: int


# HeldRow's columns, in its order ("pool_id" is also the key load_pool_rows groups by).
HELD_FIELDS = (
    "id",
    "pool_id",
    "project__team__division_id",
    "project_id",
    "project__name",
    "project__confidential",
    "project__team_id",
    "state",
    "start",
    "end",
    "gpus",
)


@dataclass
class PoolForecast:
    pool: Pool
    origin: datetime
    until: datetime
    timeline: Timeline
    changes: list[tuple[datetime, int]]
    held: list[HeldRow]
    _division_timelines: dict[int, Timeline] = field(default_factory=dict)

    @property
    def capacity_now(self) -> int:
        return self.timeline.steps[0].capacity

    @property
    def held_now(self) -> int:
        return self.timeline.steps[0].held

    @property
    def max_capacity(self) -> int:
        """The most GPUs the pool will hold at once, counting every scheduled change (the same
        rule as `selectors.max_capacity`)."""
        return max(step.capacity for step in self.timeline.steps)

    def division_timeline(self, division_id: int) -> Timeline:
        if division_id not in self._division_timelines:
            self._division_timelines[division_id] = timeline_of(
                self.origin, self.changes, [r for r in self.held if r.division_id == division_id]
            )
        return self._division_timelines[division_id]

    def division_held_now(self, division_id: int) -> int:
        return self.division_timeline(division_id).steps[0].held

    def division_peak(self, division_id: int) -> int:
        """The division's largest holding at any instant of [origin, until)."""
        return self.division_timeline(division_id).max_held(self.origin, self.until)

    def steps_until(self) -> list[Step]:
        """The pool's steps in force over [origin, until)."""
        return self.timeline.window(self.origin, self.until)


def pool_forecasts(
    pools: Iterable[Pool] | None = None,
    *,
    origin: datetime | None = None,
    until: datetime | None = None,
) -> dict[int, PoolForecast]:
    """Timelines of the given pools (default all) over [origin, until) — default now and the
    horizon (90 days). Two queries: every capacity change of those pools, and every allocation
    overlapping the window, joined to its project's team for the division."""
    origin = origin or timezone.now()
    until = until or origin + horizon()
    pools = list(pools if pools is not None else Pool.objects.all())
    rows = load_pool_rows(
        [p.pk for p in pools],
        origin=origin,
        until=until,
        fields=HELD_FIELDS,
        row=HeldRow,
    )
    return {
        pool.pk: PoolForecast(
            pool=pool,
            origin=origin,
            until=until,
            timeline=rows.timeline(pool.pk, origin),
            changes=rows.changes[pool.pk],
            held=rows.held[pool.pk],
        )
        for pool in pools
    }


def summed_timeline(forecasts: dict[int, PoolForecast], origin: datetime) -> Timeline:
    """All pools as one: capacity and holdings summed (a Timeline does not care about pools)."""
    changes = [c for f in forecasts.values() for c in f.changes]
    return timeline_of(origin, changes, [r for f in forecasts.values() for r in f.held])
