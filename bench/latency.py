"""Approval-to-allocated latency through real Celery and Redis.

Two `celery -A config worker` processes run on the bench database and the bench Redis database.
Requests are filed and submitted beforehand (not measured); then, at a steady rate, the division
lead approves them with the real service (requests_app.services.request_decide), whose commit
sends the apply task. The clock starts when the approval commits (an on_commit callback
registered before the service's own) and stops when a poller (every 10 ms, its own connection)
first sees the change applied in the database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from . import invariant
from .processes import die_with_parent, stop_group
from .stats import median, percentile

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"
POLL_SECONDS = 0.01


class Workers:
    """`celery -A config worker` subprocesses on the bench database, stopped by their pids."""

    def __init__(self, count: int, *, db_name: str):
        self.count = count
        self.db_name = db_name
        self.procs: list[subprocess.Popen] = []
        self.names: list[str] = []
        self.logs: list[Path] = []

    def start(self, timeout: float = 60) -> None:
        from config.celery import app

        OUTPUT.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.bench",
            "BENCH_DATABASE_NAME": self.db_name,
            "BENCH_REDIS_URL": settings.BENCH_REDIS_URL,
        }
        for _ in range(self.count):
            name = f"bench-{uuid.uuid4().hex[:8]}"
            log_path = OUTPUT / f"bench-worker-{name}.log"
            log = open(log_path, "w")  # noqa: SIM115 — kept open for the process's lifetime
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "config",
                        "worker",
                        "-l",
                        "WARNING",
                        "-P",
                        "prefork",
                        "-c",
                        "1",
                        "-n",
                        f"{name}@%h",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),
                )
            )
            self.names.append(name)
            self.logs.append(log_path)
        deadline = time.time() + timeout
        waiting = {f"{n}@{os.uname().nodename}" for n in self.names}
        while waiting and time.time() < deadline:
            for proc, log_path in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"bench worker exited: {log_path.read_text()[-2000:]}")
            for reply in app.control.ping(destination=list(waiting), timeout=0.5) or []:
                waiting -= set(reply)
        if waiting:
            raise RuntimeError(f"bench workers not ready in {timeout}s: {sorted(waiting)}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            stop_group(proc)


def purge_broker() -> None:
    """Empty the bench's own Redis database (never another index)."""
    import redis

    redis.Redis.from_url(settings.BENCH_REDIS_URL).flushdb()


def file_requests(*, subjects, count: int) -> list[tuple[int, object]]:
    """`count` submitted requests on the bench pools, each with who approves it next: the
    division lead, or an executive where the request also needs executive review (its division
    stage is approved here, unmeasured)."""
    from django.contrib.auth import get_user_model

    from requests_app import services

    executive = get_user_model().objects.filter(role_grants__role="executive").first()
    now = timezone.now()
    filed = []
    for i in range(count):
        req = services.request_create(
            user=subjects.requester,
            data={
                "project": subjects.project_id,
                "pool": subjects.pool_ids[i % len(subjects.pool_ids)],
                "gpus": 1 + i % 4,
                "start": now + timedelta(minutes=2),
                "end": now + timedelta(minutes=20),
                "kind": "new",
                "priority": "normal",
                "goal": "Benchmark approval latency.",
                "expected_outcome": "A latency figure.",
                "size_rationale": "Small on purpose.",
                "impact_if_denied": "No figure.",
            },
        )
        req = services.request_submit(user=subjects.requester, request_id=req.pk)
        decider = subjects.lead
        if req.needs_executive:
            services.request_decide(user=subjects.lead, request_id=req.pk, action="approve")
            decider = executive
        filed.append((req.pk, decider))
    return filed


class Poller(threading.Thread):
    """Sees when each committed change stops being pending."""

    def __init__(self):
        super().__init__(daemon=True)
        self.lock = threading.Lock()
        self.outstanding: dict[int, float] = {}  # change id -> commit time
        self.done: dict[int, tuple[float, float, str]] = {}  # id -> (commit, seen, status)
        self.stop_at: float | None = None
        self.error: str | None = None

    def add(self, change_id: int, committed: float) -> None:
        with self.lock:
            self.outstanding[change_id] = committed

    def run(self) -> None:
        from allocator.models import AllocationChange

        try:
            while True:
                with self.lock:
                    ids = list(self.outstanding)
                if ids:
                    rows = list(
                        AllocationChange.objects.filter(pk__in=ids)
                        .exclude(status="pending")
                        .values_list("pk", "status")
                    )
                    seen = time.monotonic()
                    with self.lock:
                        for pk, status in rows:
                            self.done[pk] = (self.outstanding.pop(pk), seen, status)
                elif self.stop_at is not None:
                    return
                if self.stop_at is not None and time.monotonic() > self.stop_at:
                    return
                time.sleep(POLL_SECONDS)
        except Exception as exc:
            self.error = repr(exc)
        finally:
            connection.close()


def run(*, subjects, rate: float, seconds: float, workers: int, db_name: str, log) -> dict:
    from requests_app import services

    count = max(2, round(rate * seconds))
    filed = file_requests(subjects=subjects, count=count)
    log(f"latency: {count} requests filed; starting {workers} Celery workers")
    purge_broker()
    pool = Workers(workers, db_name=db_name)
    poller = Poller()
    result: dict = {"approvals": count, "rate_asked": rate, "workers": workers}
    try:
        pool.start()
        poller.start()
        started = time.monotonic()
        for i, (request_id, decider) in enumerate(filed):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            committed: list[float] = []
            with transaction.atomic():
                transaction.on_commit(lambda box=committed: box.append(time.monotonic()))
                req = services.request_decide(user=decider, request_id=request_id, action="approve")
            if req.change_id is None:
                raise RuntimeError(f"request {request_id} was approved without a change")
            poller.add(req.change_id, committed[0])
        approving = time.monotonic() - started
        poller.stop_at = time.monotonic() + 60
        poller.join(70)
    finally:
        pool.stop()
    if poller.error:
        result["error"] = poller.error
    latencies = [(seen - commit) * 1000 for commit, seen, _ in poller.done.values()]
    statuses: dict[str, int] = {}
    for _, _, status in poller.done.values():
        statuses[status] = statuses.get(status, 0) + 1
    found = invariant.violations()
    result.update(
        rate_achieved=count / approving if approving else None,
        settled=len(latencies),
        unsettled=len(poller.outstanding),
        outcomes=statuses,
        median_ms=median(latencies),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies) if latencies else None,
        poll_ms=POLL_SECONDS * 1000,
        violations=len(found),
        violation_examples=found[:5],
    )
    if poller.outstanding and "error" not in result:
        result["error"] = f"{len(poller.outstanding)} approvals not applied within 60 s"
    log(
        f"latency: median {result['median_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms over "
        f"{len(latencies)} approvals ({statuses}); {len(found)} invariant violations"
    )
    return result
