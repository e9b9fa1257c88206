"""Work conservation at lab scale (PRODUCT.md section 4): GPU-hours over the next 90 days that
stand free on record while a waiting request that would fit there is not placed. It must be 0.

The data set's waiting requests were written by the generator, not served, so the figure is
taken after the engine's pass at now. That pass comes from the forecast's first instant
(allocator/forecast/ plays the engine's own rules; tests/allocator/test_forecast.py checks it
against the engine), so nothing is written and the data set stays as generated. Then, pool by
pool, the oracle of tests/allocator/test_work_conservation.py runs on the stored timeline plus
those placements (`idle_on`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.utils import timezone

H = timedelta(hours=1)


def idle_on(record, waiting: Iterable, *, until: datetime) -> float:
    """GPU-hours before `until` that waiting demands (in queue order) could use on `record`: a
    demand that fits on the record plus the reservations of the placeable demands ahead of it
    counts its GPU-hours, and is then added there, so the same free GPUs count once."""
    from allocator.planning import fit_start
    from allocator.timeline import Span

    planning = record
    idle = 0.0
    for demand in waiting:
        start = fit_start(planning, demand)
        if start is not None:
            span = Span(start, start + demand.duration, demand.gpus)
            idle += span.gpus * max((min(span.end, until) - span.start) / H, 0)
            planning = planning.with_span(span)
            continue
        held = fit_start(record, demand)  # its placement on record: what it holds back
        if held is not None:
            planning = planning.with_span(Span(held, held + demand.duration, demand.gpus))
    return idle


def run(*, log, now: datetime | None = None, days: int = 90) -> dict:
    from allocator import forecast
    from allocator.models import AllocationChange, Pool
    from allocator.planning import demand_for
    from allocator.selectors import HOLDING_STATES, horizon, queue_key
    from allocator.timeline import Span, Timeline

    started = time.perf_counter()
    now = now or timezone.now()
    until = now + timedelta(days=days)
    states = forecast.load_pools(Pool.objects.values_list("pk", flat=True), now=now)
    idle, waiting_count = 0.0, 0
    for state in states.values():
        outcomes = forecast.simulate(state, now=now).outcomes
        targets = {a.id: a for a in state.allocations}
        holdings = [
            Span(a.start, a.end, a.gpus) for a in targets.values() if a.state in HOLDING_STATES
        ]
        waiting = []
        for change in sorted(state.changes, key=queue_key):
            demand, _ = demand_for(change, now, targets, horizon=horizon())
            outcome = outcomes.get(change.pk)
            if outcome is not None and outcome.decided_at == now:
                if outcome.kind == "allocated":  # placed in the engine's pass at now
                    holdings.append(Span(outcome.start, outcome.end, demand.gpus))
                continue  # or sent to review, or failed: out of the queue
            if change.status == AllocationChange.Status.WAITING and demand is not None:
                waiting.append(demand)
        waiting_count += len(waiting)
        record = Timeline(now, [(at, delta) for at, delta, _ in state.capacity_changes], holdings)
        idle += idle_on(record, waiting, until=until)
    seconds = time.perf_counter() - started
    log(
        f"idle GPU-hours beside waiting requests that fit (next {days} days): {idle:.0f} "
        f"({waiting_count} waiting in {len(states)} pools, {seconds:.1f} s)"
    )
    return {
        "idle_gpu_hours": round(idle, 1),
        "days": days,
        "pools": len(states),
        "waiting": waiting_count,
        "seconds": round(seconds, 2),
    }
