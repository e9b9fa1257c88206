"""The engine's fit questions at lab scale: allocator.selectors.fits and earliest_start on the
busiest pool (the one with the most allocations still holding GPUs)."""

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
        # Every pool's forecast, from the database, no cache (docs/performance.md, Forecast).
        ("forecast all waiting requests", lambda: len(forecast.forecast_pools(pool_ids))),
    ]
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
            "pool": "all" if name.startswith("forecast") else pool_id,
            "median_ms": median(times),
            "p95_ms": percentile(times, 95),
            "queries": len(captured.captured_queries),
            "answer": str(answer),
        }
        log(f"{name} on pool {row['pool']}: {row['median_ms']:.2f} ms, {row['queries']} queries")
        rows.append(row)
    return rows
