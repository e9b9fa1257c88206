"""Apply throughput: approved changes applied per second by P worker processes contending for
the same few pools, next to a bare-transaction baseline run the same way.

- apply: N pending AllocationChange rows spread round-robin over the bench pools; P forked OS
  processes take ids from one queue and call allocator.services.allocation_change_apply — the
  very function the Celery task runs, without the broker, retrying a busy change as the task
  does. As with real workers, a change's first attempt claims a batch of its pool's pending
  first attempts (APPLY_BATCH_SIZE), and the messages of the changes it took find nothing to do.
- baseline: the same N items and P processes, each item one transaction that locks the same pool
  row (SELECT ... FOR UPDATE) and inserts one row into a scratch table.

Rate = N / (last process finished - first process started), all processes released together.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import time
import traceback
from collections import Counter
from datetime import timedelta

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from . import invariant

SCRATCH = "bench_scratch"


def make_changes(*, subjects, count: int) -> list[int]:
    from allocator.models import AllocationChange, Priority

    now = timezone.now()
    rows = [
        AllocationChange(
            pool_id=subjects.pool_ids[i % len(subjects.pool_ids)],
            project_id=subjects.project_id,
            kind="new",
            gpus=1 + i % 4,
            # Starts now (the engine starts a past start at once) and ends minutes after the run.
            start=now,
            end=now + timedelta(minutes=15),
            priority=Priority.NORMAL,
            requested_by=subjects.requester,
            approved_at=now,
            executive_reviewed=False,
        )
        for i in range(count)
    ]
    return [c.pk for c in AllocationChange.objects.bulk_create(rows)]


def _apply_item(item) -> str:
    """What the apply task does with one message: apply the change — on its first attempt that
    claims the pool's other pending first attempts too (a batch), so most later messages find
    their change applied ("nothing"). A change another worker holds (ChangeBusy) is tried
    again shortly, as the task's retry does."""
    from allocator.services import ChangeBusy, allocation_change_apply

    for _ in range(200):
        try:
            return allocation_change_apply(change_id=item) or "nothing"
        except ChangeBusy:
            time.sleep(0.01)
    return "busy"


def _baseline_item(item) -> str:
    pool_id, n = item
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT id FROM allocator_pool WHERE id = %s FOR UPDATE", [pool_id])
        cursor.execute(
            f"INSERT INTO {SCRATCH} (pool_id, n, payload) VALUES (%s, %s, %s)",
            [pool_id, n, "bench"],
        )
    return "committed"


KINDS = {"apply": _apply_item, "baseline": _baseline_item}


def _worker(kind, items, barrier, results):
    """One OS process: connect, wait for the others, then take items until the sentinel."""
    work = KINDS[kind]
    outcomes: Counter = Counter()
    errors: list[str] = []
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        barrier.wait(timeout=120)
        started = time.monotonic()
        while (item := items.get()) is not None:
            try:
                outcomes[work(item)] += 1
            except Exception as exc:
                outcomes["error"] += 1
                errors.append(traceback.format_exception_only(type(exc), exc)[-1].strip())
        finished = time.monotonic()
        results.put(("ok", started, finished, dict(outcomes), errors[:5]))
    except Exception as exc:
        results.put(("crash", 0.0, 0.0, {}, [repr(exc)]))
    finally:
        connections.close_all()


def _run(kind: str, items: list, processes: int) -> dict:
    context = mp.get_context("fork")
    queue, results = context.Queue(), context.Queue()
    for item in items:
        queue.put(item)
    for _ in range(processes):
        queue.put(None)
    barrier = context.Barrier(processes)
    connections.close_all()  # never share a connection with the children
    children = [
        context.Process(target=_worker, args=(kind, queue, barrier, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        reports = [results.get(timeout=900) for _ in children]
    except queue_module.Empty:
        reports = [("crash", 0.0, 0.0, {}, ["a process did not report within 900 s"])]
    for child in children:
        child.join(30)
        if child.is_alive():
            child.terminate()
    crashed = [r for r in reports if r[0] != "ok"]
    if crashed:
        return {"error": "; ".join(e for r in crashed for e in r[4])}
    started = min(r[1] for r in reports)
    finished = max(r[2] for r in reports)
    outcomes: Counter = Counter()
    errors = []
    for r in reports:
        outcomes.update(r[3])
        errors += r[4]
    seconds = max(finished - started, 1e-9)
    return {
        "items": len(items),
        "seconds": seconds,
        "per_s": len(items) / seconds,
        "outcomes": dict(outcomes),
        "errors": errors[:5],
    }


def ensure_scratch() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {SCRATCH} (id bigserial PRIMARY KEY, pool_id bigint NOT NULL,"
            " n integer NOT NULL, at timestamptz NOT NULL DEFAULT now(), payload text NOT NULL)"
        )
        cursor.execute(f"TRUNCATE {SCRATCH}")


def run(*, subjects, changes: int, process_counts: list[int], log) -> list[dict]:
    from allocator.models import AllocationChange

    ensure_scratch()
    rows = []
    for processes in process_counts:
        ids = make_changes(subjects=subjects, count=changes)
        apply = _run("apply", ids, processes)
        items = [(subjects.pool_ids[i % len(subjects.pool_ids)], i) for i in range(changes)]
        base = _run("baseline", items, processes)
        applied = AllocationChange.objects.filter(pk__in=ids, status="applied").count()
        found = invariant.violations()
        row = {
            "workers": processes,
            "batch_size": settings.ALLOTMENT.get("APPLY_BATCH_SIZE", 1),
            "changes": changes,
            "pools": len(subjects.pool_ids),
            "applied": applied,
            "apply_per_s": apply.get("per_s"),
            "apply_seconds": apply.get("seconds"),
            "apply_outcomes": apply.get("outcomes", {}),
            "baseline_tx_per_s": base.get("per_s"),
            "violations": len(found),
            "violation_examples": found[:5],
            "errors": (apply.get("errors") or []) + (base.get("errors") or []),
        }
        if "error" in apply or "error" in base:
            row["error"] = apply.get("error") or base.get("error")
        if row["apply_per_s"] and row["baseline_tx_per_s"]:
            row["ratio"] = row["apply_per_s"] / row["baseline_tx_per_s"]
            log(
                f"apply with {processes} process(es): {row['apply_per_s']:.1f}/s, bare tx "
                f"{row['baseline_tx_per_s']:.1f}/s (ratio {row['ratio']:.2f}); {applied}/{changes} "
                f"applied, {len(found)} invariant violations"
            )
        else:
            log(f"apply with {processes} process(es): ERROR {row.get('error')}")
        rows.append(row)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {SCRATCH}")
    return rows
