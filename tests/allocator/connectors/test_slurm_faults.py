"""Failures never lose or corrupt anything: with the scheduler down, hung, or munge gone, the
intent stays pending with its error for compute ops, and the next run converges."""

import time

import pytest
from django.utils import timezone

from allocator import services as engine
from allocator.connectors.intents import intent_apply, intents_dispatch_due
from allocator.connectors.models import EnforcementIntent, PoolConnector, SyncRun
from allocator.connectors.reconcile import connector_reconcile
from allocator.connectors.slurm import SlurmError
from audit.models import AuditEvent

from .test_slurm_enforcement import _limit, _pending_intents

pytestmark = [pytest.mark.slurm, pytest.mark.django_db(transaction=True)]


def _apply_all_pending(allocations):
    for allocation in allocations:
        for intent in _pending_intents(allocation):
            intent_apply(intent_id=intent.pk)


def test_approvals_while_the_scheduler_is_down_converge_when_it_returns(
    slurm, connected_pool, project, grant, requester
):
    # given an enforced allocation of 2
    first = grant(connected_pool, project, 2)
    _apply_all_pending([first])
    assert _limit(slurm, "atlas") == "gres/gpu=2"

    # when the scheduler (controller and accounting) is down while approvals and a release land
    slurm.stop_controller()
    slurm.stop_accounting()
    second = grant(connected_pool, project, 5)
    third = grant(connected_pool, project, 3)
    engine.allocation_release(allocation_id=first.pk, actor=requester)
    for allocation in (second, third, first):
        for intent in _pending_intents(allocation):
            if intent.effective_at > timezone.now():
                continue  # an allocation's end, not due yet
            with pytest.raises(SlurmError):
                intent_apply(intent_id=intent.pk)
    run = connector_reconcile(connector_id=connected_pool.connector.pk, trigger="test")

    # then nothing is lost: every intent is pending with its error, ops see the failure
    assert run.outcome == SyncRun.Outcome.ERROR
    assert "sacctmgr" in run.error_command
    failing = EnforcementIntent.objects.filter(status="pending", effective_at__lte=timezone.now())
    assert failing.count() >= 3
    assert all(i.last_error and i.attempts == 1 for i in failing)
    assert AuditEvent.objects.filter(action="connector.apply_failed").count() == failing.count()
    assert PoolConnector.objects.get().status == PoolConnector.Status.ERROR

    # when the scheduler returns, the reconciler converges on what the ledger says now
    slurm.start_accounting()
    slurm.start_controller()
    run = connector_reconcile(connector_id=connected_pool.connector.pk, trigger="test")
    assert run.outcome == SyncRun.Outcome.REPAIRED, run.error
    assert _limit(slurm, "atlas") == "gres/gpu=8"
    assert not EnforcementIntent.objects.filter(status="pending", effective_at__lte=timezone.now())
    assert PoolConnector.objects.get().status == PoolConnector.Status.IN_SYNC


def test_a_hung_scheduler_times_out_and_the_retry_converges(slurm, connected_pool, project, grant):
    # given slurmdbd hung (its port open, answering nothing)
    slurm.pause("slurmdbd")
    allocation = grant(connected_pool, project, 4)
    intent = _pending_intents(allocation)[0]

    # when the apply runs, it gives up after the command timeout
    started = time.monotonic()
    with pytest.raises(SlurmError, match="timed out"):
        intent_apply(intent_id=intent.pk)
    assert time.monotonic() - started < 15
    intent.refresh_from_db()
    assert intent.status == "pending"
    assert "timed out" in intent.last_error
    assert intent.next_attempt_at > timezone.now()

    # then once it answers again, the next attempt sets the limit
    slurm.resume("slurmdbd")
    assert intent_apply(intent_id=intent.pk).outcome == "changed"
    assert _limit(slurm, "atlas") == "gres/gpu=4"


def test_munge_failing_keeps_the_intent_pending(slurm, connected_pool, project, grant):
    slurm.stop_munge()
    allocation = grant(connected_pool, project, 3)
    intent = _pending_intents(allocation)[0]
    with pytest.raises(SlurmError) as failure:
        intent_apply(intent_id=intent.pk)
    assert "sacctmgr" in failure.value.command
    intent.refresh_from_db()
    assert intent.status == "pending" and intent.last_error

    slurm.start_munge()
    assert intent_apply(intent_id=intent.pk).outcome == "changed"
    assert _limit(slurm, "atlas") == "gres/gpu=3"


def test_a_limit_changes_when_an_allocation_starts_with_no_ledger_event(
    slurm, connected_pool, project, grant
):
    # given an allocation of 6 starting in a few seconds (granted now: its account exists at 0);
    # the window leaves room for the grant and the first apply on a loaded 2-core machine
    start = timezone.now() + timezone.timedelta(seconds=12)
    allocation = grant(connected_pool, project, 6, start=start)
    _apply_all_pending([allocation])
    assert _limit(slurm, "atlas") == "gres/gpu=0"
    assert EnforcementIntent.objects.filter(
        allocation=allocation, status="pending", effective_at=start
    ).exists()

    # when its start passes, the periodic sweep finds the due intent
    time.sleep(max(0, (start - timezone.now()).total_seconds()) + 0.2)
    due = EnforcementIntent.objects.get(allocation=allocation, status="pending", effective_at=start)
    assert intents_dispatch_due() == 1
    intent_apply(intent_id=due.pk)

    # then the limit is the allocation's GPUs
    assert _limit(slurm, "atlas") == "gres/gpu=6"
