"""`/metrics`: the Prometheus exposition (PRODUCT.md section 9, docs/deploy.md).

Two kinds of numbers, and how each stays right with many web processes and workers:
- the state of the lab (GPUs per pool, per division, the waiting queues, changes by status,
  apply attempts) is read from PostgreSQL at scrape time, in a fixed handful of queries — the
  database is the single source of truth, so every web process answers the same;
- events (HTTP requests, Celery tasks, approval-to-allocated latency, engine outcomes,
  notification emails) are counted by the process they happen in (telemetry/instruments.py) and, in
  prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR), summed over every process
  that shares the folder: all gunicorn workers of a host, and the Celery workers of that host.
"""

from __future__ import annotations

import os

from django.db.models import Count, Min, Sum
from django.utils import timezone
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class LabCollector:
    """Gauges computed from the database when scraped."""

    def collect(self):
        from allocator import selectors
        from allocator.models import AllocationChange, Pool

        now = timezone.now()
        pools = list(Pool.objects.all())
        names = {p.pk: p.name for p in pools}

        gpus = GaugeMetricFamily(
            "allotment_pool_gpus",
            "GPUs of a pool now: capacity, held by allocations, free, and asked for by waiting "
            "requests.",
            labels=["pool", "state"],
        )
        for status in selectors.pools_status(pools, at=now):
            name = status.pool.name
            gpus.add_metric([name, "capacity"], status.capacity)
            gpus.add_metric([name, "held"], status.allocated)
            gpus.add_metric([name, "free"], status.free)
            gpus.add_metric([name, "waiting"], status.waiting)
        yield gpus

        depth = GaugeMetricFamily(
            "allotment_pool_queue_depth", "Requests waiting in the pool's queue.", labels=["pool"]
        )
        oldest = GaugeMetricFamily(
            "allotment_pool_oldest_waiting_seconds",
            "Age of the oldest waiting request in the pool's queue, from its approval.",
            labels=["pool"],
        )
        waiting = dict.fromkeys(names, (0, None))
        for row in (
            AllocationChange.objects.filter(status=AllocationChange.Status.WAITING)
            .values("pool_id")
            .annotate(n=Count("id"), first=Min("approved_at"))
        ):
            waiting[row["pool_id"]] = (row["n"], row["first"])
        for pool_id, (n, first) in waiting.items():
            depth.add_metric([names[pool_id]], n)
            oldest.add_metric([names[pool_id]], (now - first).total_seconds() if first else 0)
        yield depth
        yield oldest

        held = GaugeMetricFamily(
            "allotment_division_gpus_held",
            "GPUs a division's projects hold now, per pool.",
            labels=["division", "pool"],
        )
        for row in (
            selectors.holding_allocations()
            .filter(start__lte=now, end__gt=now)
            .values("project__team__division__name", "pool_id")
            .annotate(total=Sum("gpus"))
        ):
            held.add_metric(
                [row["project__team__division__name"], names[row["pool_id"]]], row["total"]
            )
        yield held

        changes = GaugeMetricFamily(
            "allotment_changes",
            "Approved changes by status (failed ones wait for compute ops to retry).",
            labels=["status"],
        )
        counts = dict.fromkeys(AllocationChange.Status.values, 0)
        attempts = 0
        for row in AllocationChange.objects.values("status").annotate(
            n=Count("id"), tries=Sum("attempts")
        ):
            counts[row["status"]] = row["n"]
            attempts += row["tries"] or 0
        for status, n in counts.items():
            changes.add_metric([status], n)
        yield changes
        yield CounterMetricFamily(
            "allotment_apply_attempts",
            "Times workers started applying a change (every attempt of every change on record).",
            value=attempts,
        )


def registry() -> CollectorRegistry:
    """The registry a scrape reads: this process's (or, in multiprocess mode, every process's)
    event metrics, plus the lab's state from the database."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
    else:
        reg = CollectorRegistry()
        for collector in list(DEFAULT_REGISTRY._collector_to_names):
            reg.register(collector)
    reg.register(LabCollector())
    return reg


def exposition() -> bytes:
    return generate_latest(registry())
