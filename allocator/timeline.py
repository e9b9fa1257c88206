"""Capacity and holdings over time, as step functions. Pure: no database, so the fit rules can be
checked exhaustively (tests/allocator/test_timeline.py) and reused by the apply engine and the
forecast alike.

A pool's free GPUs change only at event instants (a capacity change taking effect, an allocation
starting or ending), so "do N fit over [a, b)?" is the minimum of a step function over the
window, and the earliest start where N fit for a duration is either the asked-for start or an
instant where free capacity rises (an allocation ends, GPUs arrive).
"""

from __future__ import annotations

import bisect
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
    """A NamedTuple rather than a frozen dataclass: planning builds hundreds of thousands of
    them (with_span), and a tuple is several times cheaper to make."""

    at: datetime
    capacity: int
    held: int

    @property
    def free(self) -> int:
        return self.capacity - self.held


class Timeline:
    """Capacity, held and free GPUs of one pool from `origin` on.

    `capacity_changes` are (effective_at, delta) pairs, all of them (those before origin make the
    starting capacity); `holdings` are spans (allocations) — any overlap with [origin, ∞) counts.
    """

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
        steps = [Step(origin, base_capacity, base_held)]
        capacity, held = base_capacity, base_held
        for at in sorted(deltas):
            d_cap, d_held = deltas[at]
            if d_cap == 0 and d_held == 0:
                continue
            capacity += d_cap
            held += d_held
            steps.append(Step(at, capacity, held))
        self.steps = steps
        self._times = [s.at for s in steps]

    def _index_at(self, t: datetime) -> int:
        if t < self.origin:
            raise ValueError(f"{t} is before the timeline's origin {self.origin}")
        return bisect.bisect_right(self._times, t) - 1

    def at(self, t: datetime) -> Step:
        return self.steps[self._index_at(t)]

    def window(self, start: datetime, end: datetime) -> list[Step]:
        """The steps in force at some instant of [start, end)."""
        first = self._index_at(start)
        last = bisect.bisect_left(self._times, end)  # steps at or after `end` don't count
        return self.steps[first : max(last, first + 1)]

    def min_free(self, start: datetime, end: datetime) -> int:
        return min(step.free for step in self.window(start, end))

    def max_held(self, start: datetime, end: datetime) -> int:
        return max(step.held for step in self.window(start, end))

    def fits(self, gpus: int, start: datetime, end: datetime) -> bool:
        return self.min_free(start, end) >= gpus

    def shortfall(self, gpus: int, start: datetime, end: datetime) -> Step | None:
        """The first step of [start, end) where `gpus` more would exceed capacity, or None."""
        for step in self.window(start, end):
            if step.free < gpus:
                return step
        return None

    def earliest_start(
        self, gpus: int, duration: timedelta, not_before: datetime, latest_start: datetime
    ) -> datetime | None:
        """The earliest t in [not_before, latest_start] such that `gpus` fit over
        [t, t + duration), or None. Exact: free capacity only rises at step instants."""
        if not_before > latest_start:
            return None
        candidates = [not_before]
        first = self._index_at(not_before)
        for i in range(first + 1, len(self.steps)):
            step = self.steps[i]
            if step.at > latest_start:
                break
            if step.free > self.steps[i - 1].free:
                candidates.append(step.at)
        for t in candidates:
            if self.fits(gpus, t, t + duration):
                return t
        return None

    def with_span(self, span: Span) -> Timeline:
        """A copy with one more holding (what-if, and serving a queue in one pass)."""
        clone = Timeline.__new__(Timeline)
        clone.origin = self.origin
        steps = list(self.steps)
        times = list(self._times)
        for at in (span.start, span.end):
            if at > self.origin and at not in times:
                i = bisect.bisect_right(times, at)
                prev = steps[i - 1]
                steps.insert(i, Step(at, prev.capacity, prev.held))
                times.insert(i, at)
        # The steps with span.start <= at < span.end hold it; only those are rebuilt.
        gpus, new = span.gpus, tuple.__new__  # Step(...) without the namedtuple's Python frame
        for k in range(bisect.bisect_left(times, span.start), bisect.bisect_left(times, span.end)):
            at, capacity, held = steps[k]
            steps[k] = new(Step, (at, capacity, held + gpus))
        clone.steps = steps
        clone._times = times
        return clone
