"""Fault proofs (PROOFS.md section 2.2, adapted to Allotment): real worker processes are killed
at each crash point of the apply task, whole workers are killed, the broker is restarted with and
without its data, the broker is down while executives approve, a worker's database connection is
cut mid-transaction, and a change that always crashes is quarantined. After each: nothing lost,
nothing applied twice, the invariant holds.

Recovery comes from two places: Celery's redelivery (acks_late + reject_on_worker_lost) and the
resend sweep (allocator.services.changes_resend_stuck), which these tests run directly instead of
waiting for beat."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time

import pytest
from django.db import connection
from rest_framework.test import APIClient

from allocator.models import AllocationChange
from requests_app.models import ComputeRequest
from tests.proofs.reliability import pending_executive
from tests.support import figures
from tests.support.fault_injection.models import FaultInjection
from tests.support.proofs import (
    PrivateRedis,
    account,
    approve_changes,
    arm,
    fired,
    pending,
    sweep_now,
    use_broker,
    wait_for,
)
from tests.support.workers import Worker

pytestmark = [pytest.mark.fault, pytest.mark.worker, pytest.mark.slow]

RECOVERY = 90  # seconds: a generous deadline (the CI box is shared), never a timing assertion


def _applied(ids) -> bool:
    return not AllocationChange.objects.filter(pk__in=list(ids)).exclude(status="applied").exists()


def _approve(client: APIClient, req: ComputeRequest):
    return client.post(f"/api/v1/requests/{req.pk}/approve/", {"comment": ""}, format="json")


@pytest.fixture
def private_redis():
    server = PrivateRedis(persistence=True).start()
    yield server
    server.destroy()


def _worker_on(url: str, name: str) -> Worker:
    return Worker(name=name, extra_env={"TEST_REDIS_URL": url})


# --- F4 ------------------------------------------------------------------------------------


def test_f4_broker_down_while_approving(
    transactional_db, private_redis, pool, project, requester, division_lead, executive
):
    # given 10 requests waiting for executive review, and the broker down
    reqs = [
        pending_executive(
            requester=requester, project=project, pool=pool, lead=division_lead, gpus=2
        )
        for _ in range(10)
    ]
    client = APIClient()
    client.force_authenticate(executive)
    with use_broker(private_redis.url):
        private_redis.shutdown()

        # when the executive approves all ten
        codes = [_approve(client, r).status_code for r in reqs]

        # then every approval committed and answered 2xx
        assert codes == [200] * 10, codes
        figures.add("approvals during broker outage", len(codes))
        change_ids = list(
            ComputeRequest.objects.filter(pk__in=[r.pk for r in reqs]).values_list(
                "change_id", flat=True
            )
        )
        assert None not in change_ids

        # when the broker is back, a worker runs and the sweep re-sends what was not sent
        private_redis.start()
        worker = _worker_on(private_redis.url, "f4").start()
        try:
            assert sweep_now() == 10
            # then all ten are applied, once
            assert wait_for(lambda: _applied(change_ids), RECOVERY), worker.log_tail()

            # and a crash between the approval's commit and the publish loses nothing either
            extra = pending_executive(
                requester=requester, project=project, pool=pool, lead=division_lead, gpus=2
            )
            arm("view_after_commit_before_publish", "raise")
            response = _approve(client, extra)
            assert response.status_code == 200, response.content
            extra.refresh_from_db()
            assert extra.change_id is not None
            assert AllocationChange.objects.get(pk=extra.change_id).dispatched_at is None
            sweep_now()
            change_ids.append(extra.change_id)
            assert wait_for(lambda: _applied(change_ids), RECOVERY), worker.log_tail()
        finally:
            worker.kill()
    result = account(change_ids)
    assert result["lost"] == [] and result["duplicates"] == [], result
    assert result["violations"] == []
    assert ComputeRequest.objects.filter(status="allocated").count() == 11


# --- F1: a pool child killed at each crash point -------------------------------------------

CRASH_POINTS = ["before_tx", "in_tx_before_commit", "after_commit_before_ack"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_f1_child_killed_at_each_crash_point_applies_once(
    live_crew, point, pool, project, requester
):
    # given a fault that kills the worker's pool child at `point`, once per change
    figures.add("apply crash points exercised")
    changes = []
    faults = []
    for _ in range(2):
        # when an approval commits and its task is delivered
        changes += _approve_armed(point, pool=pool, project=project, requester=requester)
        faults.append(FaultInjection.objects.order_by("-pk").first())
    ids = [c.pk for c in changes]

    # then each child died once, the message came back (acks_late + reject_on_worker_lost),
    # and the change was applied exactly once
    assert wait_for(lambda: _applied(ids), RECOVERY), live_crew.logs()
    # the faults really fired (each at most once: remaining=1). After the commit the test sees,
    # `after_commit_before_ack` fires a moment later: one batch may have applied both changes.
    assert wait_for(lambda: sum(fired(f) for f in faults) >= 1, RECOVERY), live_crew.logs()
    kills = sum(fired(f) for f in faults)
    figures.add("worker kills survived", kills)
    figures.add("pool children killed", kills)
    result = account(ids)
    assert result["lost"] == [] and result["duplicates"] == [], result
    assert result["violations"] == []


def _approve_armed(point, *, pool, project, requester):
    """One approved change whose apply task kills its own pool child at `point`. The fault is
    armed for the next change id before the approval commits, so the first delivery meets it."""
    from django.db import transaction

    from allocator import services
    from allocator.models import Priority
    from tests.factories import in_days

    with transaction.atomic():
        change = services.allocation_change_create(
            pool_id=pool.pk,
            project_id=project.pk,
            kind="new",
            target_allocation_id=None,
            gpus=1,
            start=in_days(1),
            end=in_days(5),
            flexible_start=False,
            priority=Priority.NORMAL,
            executive_reviewed=True,
            requested_by=requester,
            approved_at=in_days(0),
        )
        arm(point, "sigkill_self", change_id=change.pk)
    return [change]


def test_negative_control_a_lost_message_is_detected(live_crew, pool, project):
    # given an approved change whose task was never sent (as if the broker lost it)
    from tests import factories

    change = factories.AllocationChangeFactory(
        pool=pool, project=project, gpus=1, executive_reviewed=True
    )
    # when the workers run but nobody re-sends it
    time.sleep(2)
    # then the accounting the fault tests rely on reports it lost (it can fail)
    from tests.support import invariants

    assert pending([change.pk]) == [change.pk]
    statuses = dict(AllocationChange.objects.values_list("pk", "status"))
    assert statuses[change.pk] != "applied"
    # and the resend sweep is what recovers it
    assert sweep_now() == 1
    assert wait_for(lambda: _applied([change.pk]), RECOVERY), live_crew.logs()
    assert invariants.violations() == []


# --- F2: a whole worker killed (main process and child, SIGKILL by pid) -------------------


@pytest.mark.parametrize("point", ["in_tx_before_commit", "after_commit_before_ack"])
def test_f2_whole_worker_killed_mid_task(live_crew, point, pool, project, requester):
    # given a task that stalls at `point` in whichever worker takes it
    with _one_armed(point, "sleep:30", pool=pool, project=project, requester=requester) as (
        change,
        fault,
    ):
        assert wait_for(lambda: fired(fault) == 1, RECOVERY), live_crew.logs()
        victim = next(w for w in live_crew.workers if fault.last_pid in w.children())
        # when that worker's main process and child are SIGKILLed
        victim.kill(signal.SIGKILL)
        figures.add("worker kills survived")
        figures.add("whole workers killed")
        # then the sweep re-sends what is still pending and the other worker applies it once
        sweep_now()
        assert wait_for(lambda: _applied([change.pk]), RECOVERY), live_crew.logs()
    result = account([change.pk])
    assert result["lost"] == [] and result["duplicates"] == [], result
    assert result["violations"] == []


@contextlib.contextmanager
def _one_armed(point, action, *, pool, project, requester, remaining=1):
    from django.db import transaction

    from allocator import services
    from allocator.models import Priority
    from tests.factories import in_days

    with transaction.atomic():
        change = services.allocation_change_create(
            pool_id=pool.pk,
            project_id=project.pk,
            kind="new",
            target_allocation_id=None,
            gpus=1,
            start=in_days(1),
            end=in_days(5),
            flexible_start=False,
            priority=Priority.NORMAL,
            executive_reviewed=True,
            requested_by=requester,
            approved_at=in_days(0),
        )
        fault = arm(point, action, change_id=change.pk, remaining=remaining)
    yield change, fault


# --- F5: the worker's database connection cut mid-transaction -----------------------------


def test_f5_database_connection_dropped_mid_task(live_crew, pool, project, requester):
    # given a task that waits inside its transaction, before commit
    with _one_armed(
        "in_tx_before_commit", "sleep:3", pool=pool, project=project, requester=requester
    ) as (change, fault):
        assert wait_for(lambda: fired(fault) == 1, RECOVERY), live_crew.logs()
        # when the test terminates that worker's PostgreSQL backend
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [fault.last_backend_pid])
            assert cursor.fetchone()[0] is True
        figures.add("database connections terminated")
        # then the task's commit fails, Celery retries it, and it is applied once
        assert wait_for(lambda: _applied([change.pk]), RECOVERY), live_crew.logs()
    change.refresh_from_db()
    assert change.attempts == 2  # the killed attempt and the retry
    result = account([change.pk])
    assert result["lost"] == [] and result["duplicates"] == [], result
    assert all(w.alive for w in live_crew.workers)  # no stuck or dead worker


# --- F6: a change whose apply always crashes is quarantined -------------------------------


def test_f6_poison_change_is_failed_after_max_attempts(live_crew, pool, project, requester):
    from django.conf import settings

    from audit.models import AuditEvent

    # given one change whose apply kills the worker child every time, among 20 good ones
    with _one_armed(
        "in_tx_before_commit",
        "sigkill_self",
        pool=pool,
        project=project,
        requester=requester,
        remaining=100,
    ) as (poison, fault):
        others = approve_changes(pool=pool, project=project, requested_by=requester, n=20)
        other_ids = [c.pk for c in others]
        # then the poison change is marked failed after MAX_APPLY_ATTEMPTS, the others flow
        assert wait_for(
            lambda: AllocationChange.objects.get(pk=poison.pk).status == "failed", RECOVERY * 2
        ), live_crew.logs()
        assert wait_for(lambda: _applied(other_ids), RECOVERY), live_crew.logs()
    poison.refresh_from_db()
    attempts = settings.ALLOTMENT["MAX_APPLY_ATTEMPTS"]
    assert poison.attempts == attempts
    assert fired(fault) == attempts
    assert AuditEvent.objects.filter(action="allocation_change.fail", object_id=poison.pk).exists()
    figures.set("attempts before poison quarantine", poison.attempts)
    figures.add("worker kills survived", fired(fault))
    result = account(other_ids)
    assert result["lost"] == [] and result["duplicates"] == [], result
    assert result["violations"] == []


# --- F3: broker restarts (graceful with AOF; killed and wiped) ----------------------------


def test_f3_broker_restarts_lose_nothing_end_to_end(
    transactional_db, private_redis, pool, project, requester
):
    import shutil

    worker = _worker_on(private_redis.url, "f3")
    with use_broker(private_redis.url):
        try:
            # given 20 approvals queued in the broker while no worker runs
            batch_a = approve_changes(pool=pool, project=project, requested_by=requester, n=20)
            assert private_redis.queue_length() == 20
            # when Redis restarts gracefully (AOF on)
            private_redis.shutdown()
            private_redis.start()
            figures.add("Redis restarts survived")
            # then the messages are still there and a worker applies them all
            figures.add("broker-level messages lost", 20 - private_redis.queue_length())
            worker.start()
            ids_a = [c.pk for c in batch_a]
            assert wait_for(lambda: _applied(ids_a), RECOVERY), worker.log_tail()

            # when Redis is SIGKILLed and comes back empty (its data gone) while the worker
            # runs, and 10 approvals happen during the outage
            private_redis.kill()
            shutil.rmtree(private_redis.dir / "appendonlydir", ignore_errors=True)
            batch_b = approve_changes(pool=pool, project=project, requested_by=requester, n=10)
            private_redis.start()
            figures.add("Redis restarts survived")
            # then the sweep re-sends them and the same worker, reconnected, applies them
            assert sweep_now() == 10
            ids_b = [c.pk for c in batch_b]
            assert wait_for(lambda: _applied(ids_b), RECOVERY * 2), worker.log_tail()
        finally:
            worker.kill()
    result = account(ids_a + ids_b)
    assert result["lost"] == [] and result["duplicates"] == [], result
    assert result["violations"] == []


# --- F2(c): a worker asked to stop (SIGTERM, warm shutdown) while it runs a task ----------


def test_f2c_warm_shutdown_with_a_running_task(live_crew, pool, project, requester):
    # given a task that is inside its apply transaction (2 s) in whichever worker takes it
    with _one_armed(
        "in_tx_before_commit", "sleep:2", pool=pool, project=project, requester=requester
    ) as (change, fault):
        assert wait_for(lambda: fired(fault) == 1, RECOVERY), live_crew.logs()
        victim = next(w for w in live_crew.workers if fault.last_pid in w.children())
        # when its main process gets SIGTERM (what a service manager sends on stop)
        os.kill(victim.pid, signal.SIGTERM)
        victim.proc.wait(RECOVERY)  # warm shutdown: it waits for the running task
        figures.add("warm shutdowns survived")
        finished_by_victim = AllocationChange.objects.get(pk=change.pk).status == "applied"
        figures.add("warm shutdowns that finished their task", int(finished_by_victim))
        # then the task finished before the worker left, or its message comes back (the sweep
        # stands in for beat) and the other worker applies it
        if not finished_by_victim:
            sweep_now()
        assert wait_for(lambda: _applied([change.pk]), RECOVERY), live_crew.logs()
    # and the stopped worker is started again and answers
    live_crew.revive()
    assert all(w.alive for w in live_crew.workers)
    result = account([change.pk])
    assert result["lost"] == [] and result["duplicates"] == [], result
    assert result["violations"] == []


# --- F7: pause nemesis (a worker stalls longer than the visibility timeout) ---------------

# A dedicated pair on a private Redis with short limits (visibility >= 2 x hard time limit), so
# the redelivery happens within seconds and the module's crew never sees these messages.
F7_VISIBILITY = 10
F7_ENV = {
    "TEST_CELERY_VISIBILITY_TIMEOUT": str(F7_VISIBILITY),
    "TEST_CELERY_TASK_TIME_LIMIT": "5",
    "TEST_CELERY_TASK_SOFT_TIME_LIMIT": "4",
}
_DONE = re.compile(r"Task allocator\.tasks\.apply_change\[[^\]]+\] succeeded in [^:]+: (.*)")


def _finished_applies(worker: Worker, offset: int) -> list[str]:
    """Outcomes of the apply tasks `worker` finished since `offset` in its log."""
    text = worker.log_path.read_text()[offset:] if worker.log_path.exists() else ""
    return _DONE.findall(text)


def _busy_retries(worker: Worker, offset: int) -> int:
    text = worker.log_path.read_text()[offset:] if worker.log_path.exists() else ""
    return text.count("ChangeBusy(")


def _log_size(worker: Worker) -> int:
    return len(worker.log_path.read_text()) if worker.log_path.exists() else 0


def test_f7_paused_worker_past_the_visibility_timeout(
    transactional_db, private_redis, pool, project, requester, monkeypatch
):
    from allocator.tasks import apply_change

    # The sender puts the time limits in the message: send the pair's.
    monkeypatch.setattr(apply_change, "time_limit", int(F7_ENV["TEST_CELERY_TASK_TIME_LIMIT"]))
    monkeypatch.setattr(
        apply_change, "soft_time_limit", int(F7_ENV["TEST_CELERY_TASK_SOFT_TIME_LIMIT"])
    )
    assert 2 * apply_change.time_limit <= F7_VISIBILITY
    # given sessions stalled in a transaction are ended by PostgreSQL (bounds a paused holder)
    with connection.cursor() as cursor:
        cursor.execute("SHOW idle_in_transaction_session_timeout")
        assert cursor.fetchone()[0] not in ("0", "0ms", "")
    pair = [
        Worker(name=name, extra_env={"TEST_REDIS_URL": private_redis.url, **F7_ENV})
        for name in ("f7a", "f7b")
    ]
    offsets = {w.name: _log_size(w) for w in pair}
    with use_broker(private_redis.url):
        try:
            from tests.support.workers import start_all

            start_all(pair)
            # and a task that waits inside its apply transaction (pool and change rows locked)
            with _one_armed(
                "in_tx_before_commit", "sleep:3.5", pool=pool, project=project, requester=requester
            ) as (change, fault):
                assert wait_for(lambda: fired(fault) == 1, RECOVERY), _pair_logs(pair)
                holder = next(w for w in pair if fault.last_pid in w.children())
                other = next(w for w in pair if w is not holder)
                # when the holder is SIGSTOPped (main process and child) mid-transaction
                os.killpg(holder.pid, signal.SIGSTOP)
                try:
                    assert pending([change.pk]) == [change.pk]  # stopped before its commit
                    # and stays stopped past the visibility timeout, so Redis hands the same
                    # message to the other worker, which finds the change locked: it changes
                    # nothing and tries again later (ChangeBusy)
                    assert wait_for(
                        lambda: _busy_retries(other, offsets[other.name]),
                        F7_VISIBILITY + RECOVERY,
                    ), _pair_logs(pair)
                    figures.add("concurrent executions of the same change observed")
                    assert pending([change.pk]) == [change.pk]
                finally:
                    # when the holder resumes (its hard time limit has passed: it is killed
                    # or it commits, whichever its pool sees first)
                    os.killpg(holder.pid, signal.SIGCONT)
                figures.add("worker pauses survived")
                figures.add("worker kills survived")
                # then the change is applied exactly once: by the holder, or — if its
                # transaction died — by whichever worker gets the re-sent message
                wait_for(lambda: _applied([change.pk]), 5)
                if not _applied([change.pk]):
                    sweep_now()
                assert wait_for(lambda: _applied([change.pk]), RECOVERY), _pair_logs(pair)
        finally:
            for w in pair:
                w.kill()
    result = account([change.pk])
    assert result["lost"] == [] and result["duplicates"] == [], result
    assert result["violations"] == []
    assert invariants_over() == []


def invariants_over() -> list[str]:
    from tests.support import invariants

    return invariants.over_allocations()


def _pair_logs(pair) -> str:
    return "\n".join(f"--- {w.name}\n{w.log_tail(2000)}" for w in pair)


# --- "Consistently": once, after every fault test above -----------------------------------


def test_zz_consistently_no_late_applications(live_crew):
    """After the module's scenarios, wait one visibility timeout + 5 s with the crew running:
    no message may come back and apply anything (a late duplicate). Runs last in the module
    (file order), once, instead of a wait per test."""
    import redis
    from django.conf import settings

    from allocator.models import LedgerEntry

    # given the crew idle and the test database as the last test left it
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    figures.set(
        "messages in flight before the Consistently wait",
        int(broker.hlen("unacked") + broker.llen("celery")),
    )
    grants = LedgerEntry.objects.filter(kind__in=["grant", "extend"]).count()
    offsets = {w.name: _log_size(w) for w in live_crew.workers}
    # when a visibility timeout (plus the redelivery scan and a margin) passes
    time.sleep(settings.CELERY_VISIBILITY_TIMEOUT + 5)
    # then no grant appeared and no apply task applied anything
    late = LedgerEntry.objects.filter(kind__in=["grant", "extend"]).count() - grants
    late += sum(
        outcome != "None"
        for w in live_crew.workers
        for outcome in _finished_applies(w, offsets[w.name])
    )
    figures.add("late duplicate applications", late)
    figures.set("Consistently wait (s)", settings.CELERY_VISIBILITY_TIMEOUT + 5)
    assert late == 0, live_crew.logs()
    assert broker.hlen("unacked") == 0
