"""Capacity and holdings over time, as step functions. Pure: no database, so the fit rules can be
checked exhaustively (tests/allocator/test_timeline.py) and reused by the apply engine and the
forecast alike.

A pool's free GPUs change only at event instants (a capacity change taking effect, an allocation
starting or ending), so "do N fit over [a, b)?" is the minimum of a step function over the
window, and the earliest start where N fit for a duration is either the asked-for start or an
instant where free capacity rises (an allocation ends, GPUs arrive).

Representation: three parallel lists — the step instants, the capacity and the free GPUs of
each step — so the hot questions run at C speed on list slices (`min(free[i:j])`), and
`with_span` (the planner adds one holding per queued demand, the forecast keeps every
intermediate timeline) copies three flat lists and rewrites only the slice the span covers,
with no object per step. `Step` tuples are made only when asked for (`steps`, `window`, `at`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime
    gpus: int


class Step(NamedTuple):
    at: datetime
    capacity: int
    held: int

    @property
    def free(self) -> int:
        return self.capacity - self.held


class Timeline:
    """Capacity, held and free GPUs of one pool from `origin` on. Immutable: `with_span` makes a
    new one.

    `capacity_changes` are (effective_at, delta) pairs, all of them (those before origin make the
    starting capacity); `holdings` are spans (allocations) — any overlap with [origin, ∞) counts.
    """

    __slots__ = ("_capacity", "_free", "_steps", "_times", "origin")

    def __init__(
        self,
        origin: datetime,
        capacity_changes: Iterable[tuple[datetime, int]],
        holdings: Iterable[Span],
    ):
        self.origin = origin
        base_capacity = 0
        base_held = 0
        deltas: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
        for at, delta in capacity_changes:
            if at <= origin:
                base_capacity += delta
            else:
                deltas[at][0] += delta
        for span in holdings:
            if span.end <= origin:
                continue
            if span.start <= origin:
                base_held += span.gpus
            else:
                deltas[span.start][1] += span.gpus
            deltas[span.end][1] -= span.gpus
        times, caps, free = [origin], [base_capacity], [base_capacity - base_held]
        capacity, held = base_capacity, base_held
        for at in sorted(deltas):
            d_cap, d_held = deltas[at]
            if d_cap == 0 and d_held == 0:
                continue
            capacity += d_cap
            held += d_held
            times.append(at)
            caps.append(capacity)
            free.append(capacity - held)
        self._times = times
        self._capacity = caps
        self._free = free
        self._steps: list[Step] | None = None

    # Steps, made on demand.

    @property
    def steps(self) -> list[Step]:
        if self._steps is None:
            self._steps = [
                Step(at, c, c - f)
                for at, c, f in zip(self._times, self._capacity, self._free, strict=True)
            ]
        return self._steps

    @property
    def last_instant(self) -> datetime:
        """The last step's instant: the timeline is constant from there on."""
        return self._times[-1]

    def _step(self, i: int) -> Step:
        c = self._capacity[i]
        return Step(self._times[i], c, c - self._free[i])

    def _index_at(self, t: datetime) -> int:
        if t < self.origin:
            raise ValueError(f"{t} is before the timeline's origin {self.origin}")
        return bisect_right(self._times, t) - 1

    def _range(self, start: datetime, end: datetime) -> tuple[int, int]:
        """Indexes [i, j) of the steps in force at some instant of [start, end) (at least one)."""
        first = self._index_at(start)
        last = bisect_left(self._times, end)  # steps at or after `end` don't count
        return first, max(last, first + 1)

    def at(self, t: datetime) -> Step:
        return self._step(self._index_at(t))

    def window(self, start: datetime, end: datetime) -> list[Step]:
        """The steps in force at some instant of [start, end)."""
        i, j = self._range(start, end)
        return [self._step(k) for k in range(i, j)]

    # The questions.

    def min_free(self, start: datetime, end: datetime) -> int:
        i, j = self._range(start, end)
        return min(self._free[i:j])

    def min_capacity(self, start: datetime, end: datetime) -> int:
        i, j = self._range(start, end)
        return min(self._capacity[i:j])

    def max_held(self, start: datetime, end: datetime) -> int:
        i, j = self._range(start, end)
        return max(c - f for c, f in zip(self._capacity[i:j], self._free[i:j], strict=True))

    def peak_held(self, start: datetime, end: datetime) -> Step:
        """The first step of [start, end) with the most GPUs held."""
        i, j = self._range(start, end)
        caps, free = self._capacity, self._free
        best = i
        for k in range(i + 1, j):
            if caps[k] - free[k] > caps[best] - free[best]:
                best = k
        return self._step(best)

    def fits(self, gpus: int, start: datetime, end: datetime) -> bool:
        i, j = self._range(start, end)
        return min(self._free[i:j]) >= gpus

    def shortfall(self, gpus: int, start: datetime, end: datetime) -> Step | None:
        """The first step of [start, end) where `gpus` more would exceed capacity, or None."""
        i, j = self._range(start, end)
        free = self._free
        for k in range(i, j):
            if free[k] < gpus:
                return self._step(k)
        return None

    def _last_below(self, values: list[int], gpus: int, i: int, j: int) -> int | None:
        for k in range(j - 1, i - 1, -1):
            if values[k] < gpus:
                return k
        return None

    def free_from(self, gpus: int, start: datetime, end: datetime) -> datetime | None:
        """The instant the last step of [start, end) with fewer than `gpus` free ends: from then
        on the window, cut to start there, has them free. None when no step is short, or when
        the last short one lasts to `end`."""
        return self._after_last(self._free, gpus, start, end)

    def capacity_from(self, gpus: int, start: datetime, end: datetime) -> datetime | None:
        """As `free_from`, for the pool's capacity rather than its free GPUs."""
        return self._after_last(self._capacity, gpus, start, end)

    def _after_last(self, values, gpus, start, end) -> datetime | None:
        i, j = self._range(start, end)
        k = self._last_below(values, gpus, i, j)
        if k is None or k + 1 >= j or self._times[k + 1] >= end:
            return None
        return self._times[k + 1]

    def earliest_start(
        self, gpus: int, duration: timedelta, not_before: datetime, latest_start: datetime
    ) -> datetime | None:
        """The earliest t in [not_before, latest_start] such that `gpus` fit over
        [t, t + duration), or None. Exact: free capacity only rises at step instants, so when
        the window from t is short, no start before the end of its last short step can fit."""
        if not_before > latest_start:
            return None
        times, free = self._times, self._free
        t = not_before
        while True:
            i, j = self._range(t, t + duration)
            if min(free[i:j]) >= gpus:
                return t
            k = self._last_below(free, gpus, i, j)
            assert k is not None  # the window from t has a short step: min(free) < gpus
            if k + 1 >= len(times):
                return None
            t = times[k + 1]
            if t > latest_start:
                return None

    def with_span(self, span: Span) -> Timeline:
        """A copy with one more holding (what-if, and serving a queue in one pass)."""
        clone = Timeline.__new__(Timeline)
        clone.origin = origin = self.origin
        clone._steps = None
        times = self._times[:]
        caps = self._capacity[:]
        free = self._free[:]
        for at in (span.start, span.end):
            if at > origin:
                i = bisect_right(times, at)
                if times[i - 1] != at:
                    times.insert(i, at)
                    caps.insert(i, caps[i - 1])
                    free.insert(i, free[i - 1])
        # The steps with span.start <= at < span.end hold it; only those are rewritten.
        a, b = bisect_left(times, span.start), bisect_left(times, span.end)
        if a < b:
            gpus = span.gpus
            free[a:b] = [f - gpus for f in free[a:b]]
        clone._times = times
        clone._capacity = caps
        clone._free = free
        return clone
