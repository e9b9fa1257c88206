"""When will a request be served: the forecast in numbers and words shown on the request page,
the list, notices and the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from allocator.models import Allocation
from allocator.waiting import LateStart

from .workflow import Status

# --- Forecast: when will it be served? ---


@dataclass(frozen=True)
class RequestForecast:
    start: datetime | None  # the expected start of its allocation, or None
    reason: str  # in words, with the event that makes it fit or why it will not
    outcome: str  # "allocated", "review", "failed" or "scheduled" (allocated, starts later)
    late: LateStart | None = None  # a fixed start served late runs only to its end

    assumptions = "Assumes no new approvals and no early releases."

    @property
    def days_served(self) -> float | None:
        return _days(self.late.served) if self.late is not None else None

    @property
    def days_asked(self) -> float | None:
        return _days(self.late.asked) if self.late is not None else None

    @property
    def late_words(self) -> str:
        from allocator.waiting import late_start_words

        return late_start_words(self.late) if self.late is not None else ""


def _days(d: timedelta) -> float:
    return round(d.total_seconds() / 86400, 1)


def sentence(text: str) -> str:
    """A whole sentence: capitalised, with its full stop."""
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else f"{text}."


def _forecast_words(o) -> tuple[datetime | None, str]:
    from allocator.forecast import when
    from allocator.waiting import late_start_words

    if o.kind == "allocated":
        words = [f"Expected to start {when(o.start)}, {o.reason}."]
        if o.late is not None:
            words.append(f"Served then, it {late_start_words(o.late)}.")
    elif o.kind == "review":
        words = [f"Expected to be {o.reason}."]
    else:
        words = [sentence(o.reason)]
    words.append(o.detail)
    return (o.start if o.kind == "allocated" else None), " ".join(w for w in words if w)


def forecasts_for(requests, *, now: datetime | None = None) -> dict[int, RequestForecast]:
    """request id -> its forecast, for the approved ones not yet holding their GPUs: waiting or
    approved (the pool's stored forecast, allocator/forecast/stored.py), and allocated ones
    whose allocation starts later. A bounded number of queries for any number of requests: one
    for the stored forecasts of their pools, then, for pools whose stored one is stale, the
    refresh's own (a lock, a re-read, the simulation's six, a write)."""
    from allocator.forecast import outcomes_for_pools, when

    now = now or timezone.now()
    live = [
        r
        for r in requests
        if r.change_id and r.status in (Status.WAITING, Status.APPROVED) and r.change is not None
    ]
    result: dict[int, RequestForecast] = {}
    if live:
        outcomes = outcomes_for_pools({r.pool_id for r in live}, now=now)
        for r in live:
            o = outcomes.get(r.pool_id, {}).get(r.change_id)
            if o is None:
                continue
            start, words = _forecast_words(o)
            result[r.pk] = RequestForecast(
                start=start, reason=words, outcome=o.kind, late=getattr(o, "late", None)
            )
    allocated = [
        r
        for r in requests
        if r.status == Status.ALLOCATED and r.change_id and r.change.allocation_id is not None
    ]
    if allocated:
        starts = dict(
            Allocation.objects.filter(
                pk__in=[r.change.allocation_id for r in allocated], start__gt=now
            ).values_list("pk", "start")
        )
        for r in allocated:
            start = starts.get(r.change.allocation_id)
            if start is not None:
                result[r.pk] = RequestForecast(
                    start=start,
                    reason=f"Allocated: its GPUs are held for it from {when(start)}.",
                    outcome="scheduled",
                )
    return result
