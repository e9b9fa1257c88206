"""Why a request waits, in numbers (PRODUCT.md section 4, "A waiting request says, in numbers, …").
Pure: it reads the same Timeline the engine plans on (allocator/timeline.py) and a demand
(allocator/planning.py), so the engine's reason, the forecast, the pages, the notices and the API
can all say the same thing.

For a waiting demand it finds:
- the instant that is short: the first instant of its period, at or after its start, where
  fewer GPUs are free than it asks for (not the approval time), and by how many;
- what would free them: the instant it would next fit (for a fixed start, the window from there
  to its end; for a flexible one, its whole duration), and the allocation ends and arrivals
  recorded at that instant;
- what would serve it sooner: the earliest start where it fits whole (within the horizon), and
  the most GPUs that fit its whole period now;
- for a fixed-start request served after its start, the late-start effect: it runs only to its
  end ("starts 22 Dec, 18 days late: 6 of its 24 days").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from .planning import Demand
from .timeline import Span, Timeline

ALLOCATION_END = "allocation_end"
ARRIVAL = "arrival"


class Freeing(NamedTuple):
    """Something on record that frees GPUs at an instant: an allocation ending, GPUs arriving."""

    at: datetime
    kind: str  # ALLOCATION_END or ARRIVAL
    id: int  # the allocation's or the capacity change's id
    gpus: int


def freeings_of(
    allocations: Iterable[tuple[int, Span]], capacity_changes: Iterable[tuple[int, datetime, int]]
) -> list[Freeing]:
    """The freeings on record: every allocation's end ((id, span) pairs) and every arrival
    ((id, effective_at, delta) with delta > 0), in time order."""
    found = [Freeing(span.end, ALLOCATION_END, pk, span.gpus) for pk, span in allocations]
    found += [Freeing(t, ARRIVAL, pk, delta) for pk, t, delta in capacity_changes if delta > 0]
    return sorted(found)


@dataclass(frozen=True)
class LateStart:
    """A fixed-start request served after its start runs only to its end."""

    start: datetime  # when it would start
    asked_start: datetime
    end: datetime

    @property
    def late(self) -> timedelta:
        return self.start - self.asked_start

    @property
    def served(self) -> timedelta:
        return self.end - self.start

    @property
    def asked(self) -> timedelta:
        return self.end - self.asked_start


def late_start(asked_start: datetime, end: datetime, start: datetime) -> LateStart | None:
    """The late-start effect of starting a fixed request [asked_start, end) at `start`, or None
    when it starts on time."""
    if start <= asked_start or start >= end:
        return None
    return LateStart(start, asked_start, end)


@dataclass(frozen=True)
class WaitingFacts:
    gpus: int  # asked for
    flexible: bool
    end: datetime  # of its period at its requested start
    latest_start: datetime | None  # flexible: the last acceptable start
    short_at: datetime | None  # the first short instant of its period (None: nothing short)
    free_then: int  # GPUs free there (never below 0)
    fits_from: datetime | None  # the instant it would next fit (what frees the GPUs)
    freed_by: tuple[Freeing, ...]  # what is recorded at `fits_from`
    fits_whole_from: datetime | None  # the earliest start with its whole period, in the horizon
    duration: timedelta
    most_gpus_now: int  # the most GPUs that fit its whole period now
    late: LateStart | None  # a fixed request served at `fits_from`, after its start

    @property
    def short_by(self) -> int:
        return self.gpus - self.free_then if self.short_at is not None else 0


def waiting_facts(
    timeline: Timeline,
    demand: Demand,
    *,
    horizon_end: datetime,
    freeings: Iterable[Freeing] = (),
    asked_start: datetime | None = None,
    can_start_late: bool = True,
) -> WaitingFacts:
    """Why `demand` waits on `timeline` (the planning timeline it did not fit on), in numbers.

    `horizon_end`: the latest start considered for "fits whole from" (the engine: now + horizon).
    `freeings`: what is on record (see `freeings_of`), to name what frees the GPUs.
    `asked_start`: the requested start, when the demand's start was clipped to now (default:
    the demand's start). `can_start_late`: False for an extension, which must start where the
    allocation it extends ends."""
    asked_start = asked_start or demand.start
    start, end = demand.start, demand.end
    short = timeline.shortfall(demand.gpus, start, end)
    if demand.flexible:
        last = max(timeline.last_instant, start)
        fits_from = timeline.earliest_start(demand.gpus, demand.duration, start, last)
    else:
        fits_from = timeline.free_from(demand.gpus, start, end) if short is not None else None
    freed_by = tuple(f for f in freeings if fits_from is not None and f.at == fits_from)
    late = None
    if not demand.flexible and can_start_late and fits_from is not None:
        late = late_start(asked_start, end, fits_from)
    return WaitingFacts(
        gpus=demand.gpus,
        flexible=demand.flexible,
        end=end,
        latest_start=demand.latest_start,
        short_at=max(short.at, start) if short is not None else None,
        free_then=max(short.free, 0) if short is not None else demand.gpus,
        fits_from=fits_from,
        freed_by=freed_by,
        fits_whole_from=timeline.earliest_start(
            demand.gpus, demand.duration, start, max(horizon_end, start)
        ),
        duration=demand.duration,
        most_gpus_now=max(timeline.min_free(start, end), 0),
        late=late,
    )


# --- in words ---


def when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%d %b %Y %H:%M UTC").lstrip("0")


def _count(d: timedelta) -> tuple[str, str]:
    """A duration as (number, unit): whole days from two days on, else tenths of a day, else
    hours."""
    n = d.total_seconds() / 86400
    if n >= 1:
        number = f"{n:.0f}" if n >= 2 or n.is_integer() else f"{n:.1f}"
        return number, "day" if number == "1" else "days"
    h = round(d.total_seconds() / 3600)
    return str(h), "hour" if h == 1 else "hours"


def days(d: timedelta) -> str:
    return " ".join(_count(d))


def _gpus(n: int) -> str:
    return "1 GPU" if n == 1 else f"{n} GPUs"


def _freeing(f: Freeing) -> str:
    if f.kind == ARRIVAL:
        return f"{_gpus(f.gpus)} arrive (capacity change #{f.id})"
    return f"allocation #{f.id} ends ({_gpus(f.gpus)})"


def late_start_words(late: LateStart) -> str:
    """The late-start effect in words: starts 22 Dec 2026 00:00 UTC, 18 days late: 6 of its 24 days."""
    served, served_unit = _count(late.served)
    asked, asked_unit = _count(late.asked)
    served = served if served_unit == asked_unit else f"{served} {served_unit}"
    return (
        f"starts {when(late.start)}, {days(late.late)} late: {served} of its {asked} {asked_unit}"
    )


def waiting_sentences(facts: WaitingFacts) -> str:
    """Whole, capitalised sentences: what is short and when, what frees it, what serves it
    sooner."""
    out = []
    if facts.short_at is None:
        out.append(f"All {facts.gpus} GPUs asked for are free over its whole period.")
    else:
        out.append(
            f"Only {facts.free_then} of the {facts.gpus} GPUs are free on {when(facts.short_at)}, "
            f"{facts.short_by} short."
        )
    if facts.flexible and facts.latest_start is not None:
        out.append(
            f"No start up to {when(facts.latest_start)} has {_gpus(facts.gpus)} free for "
            f"{days(facts.duration)}."
        )
    if facts.fits_from is not None:
        what = " and ".join(_freeing(f) for f in facts.freed_by)
        sentence = f"They are free from {when(facts.fits_from)}"
        sentence += f", when {what}." if what else "."
        out.append(sentence)
        if facts.late is not None:
            out.append(f"Served then, it {late_start_words(facts.late)}.")
    elif facts.short_at is not None:
        if facts.flexible:
            out.append(f"Nothing on record frees {_gpus(facts.gpus)} for {days(facts.duration)}.")
        else:
            out.append(f"Nothing on record frees them before its end on {when(facts.end)}.")
    sooner = sooner_sentence(facts)
    if sooner:
        out.append(sooner)
    return " ".join(out)


def short_sentence(facts: WaitingFacts) -> str:
    """The first sentence of `waiting_sentences`: which instant is short, by how many."""
    if facts.short_at is None:
        return ""
    return (
        f"Only {facts.free_then} of the {facts.gpus} GPUs are free on {when(facts.short_at)}, "
        f"{facts.short_by} short."
    )


def sooner_sentence(facts: WaitingFacts) -> str:
    """What would serve it sooner: a start from a given date with its whole period, or fewer
    GPUs now ("" when neither would)."""
    sooner = []
    if facts.fits_whole_from is not None and not (
        facts.flexible and facts.fits_whole_from == facts.fits_from
    ):
        sooner.append(
            f"with a start from {when(facts.fits_whole_from)} (all {facts.gpus} GPUs for its "
            f"{days(facts.duration)})"
        )
    if 0 < facts.most_gpus_now < facts.gpus:
        sooner.append(f"with {_gpus(facts.most_gpus_now)} now")
    return ("It could be served " + ", or ".join(sooner) + ".") if sooner else ""
