"""The engine's fit questions at lab scale: allocator.selectors.fits and earliest_start on the
busiest pool (the one with the most allocations still holding GPUs); and the forecast of every
waiting request, computed from scratch, read from the stored forecasts, and brought up to date
after a change to one pool (allocator/forecast/stored.py)."""

from __future__ import annotations

import time
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from .stats import median, percentile


def run(*, pool_id: int, repeats: int, log) -> list[dict]:
    from allocator import forecast, selectors
    from allocator.models import Pool

    now = timezone.now()
    pool_ids = list(Pool.objects.values_list("pk", flat=True))
    timeline = selectors.pool_timeline(pool_id)
    capacity = max(step.capacity for step in timeline.steps)
    # A small ask that fits soon, and one too big to fit now (earliest_start has to search).
    cases = [
        (
            "fits",
            lambda: selectors.fits(pool_id, 8, now + timedelta(days=1), now + timedelta(days=8)),
        ),
        (
            "earliest_start",
            lambda: selectors.earliest_start(
                pool_id, max(1, capacity // 2), now + timedelta(hours=1), now + timedelta(days=14)
            ),
        ),
        # Every pool's forecast computed from the database, as before it was stored.
        (
            "forecast all waiting requests, computed",
            lambda: len(forecast.forecast_pools(pool_ids)),
        ),
        # What pages read: every pool's stored forecast (all fresh after the warm-up).
        (
            "forecast all waiting requests",
            lambda: sum(len(o) for o in forecast.outcomes_for_pools(pool_ids).values()),
        ),
        # A write to one pool (its version moves, as every write's trigger does), then that
        # pool's forecast read: the one pool is computed again and stored.
        ("forecast after a change to one pool", lambda: _after_a_change(pool_id)),
    ]
    forecast.refresh(pool_ids)  # the stored forecasts, as the worker and the sweep keep them
    rows = []
    for name, call in cases:
        call()  # warm up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        with CaptureQueriesContext(connection) as captured:
            answer = call()
        row = {
            "name": name,
            "pool": "all" if name.startswith("forecast all") else pool_id,
            "median_ms": median(times),
            "p95_ms": percentile(times, 95),
            "queries": len(captured.captured_queries),
            "answer": str(answer),
        }
        log(f"{name} on pool {row['pool']}: {row['median_ms']:.2f} ms, {row['queries']} queries")
        rows.append(row)
    return rows


def _after_a_change(pool_id: int) -> int:
    from allocator import forecast

    with connection.cursor() as cursor:
        cursor.execute("UPDATE allocator_pool SET version = version + 1 WHERE id = %s", [pool_id])
    return len(forecast.outcomes_for_pools([pool_id])[pool_id])
