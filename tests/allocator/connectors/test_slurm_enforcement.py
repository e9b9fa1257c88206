"""On a real Slurm (tests/support/slurm.py): the project's account may run the GPUs the ledger
gives it, and no more; a release lowers the limit; the reconciler repairs hand-made drift."""

import threading

import pytest
from django.core.management import call_command
from django.db import connection

from allocator import services as engine
from allocator.connectors.intents import intent_apply
from allocator.connectors.models import EnforcementIntent, PoolAccount, PoolConnector, SyncRun
from allocator.connectors.reconcile import connector_reconcile
from audit.models import AuditEvent

pytestmark = [pytest.mark.slurm, pytest.mark.django_db(transaction=True)]


def _pending_intents(allocation):
    return list(
        EnforcementIntent.objects.filter(allocation=allocation, status="pending").order_by(
            "sequence"
        )
    )


def _apply_due(allocation):
    for intent in _pending_intents(allocation):
        intent_apply(intent_id=intent.pk)


def _limit(slurm, account):
    out = slurm.run(
        "sacctmgr",
        "-n",
        "-P",
        "show",
        "assoc",
        "where",
        f"account={account}",
        "format=User,GrpTRES",
    ).stdout
    for line in out.splitlines():
        user, _, tres = line.partition("|")
        if not user:
            return tres
    return None


def test_an_allocation_lets_its_account_run_exactly_its_gpus(slurm, connected_pool, project, grant):
    # given an allocation of 4 GPUs, applied to the cluster
    allocation = grant(connected_pool, project, 4)
    _apply_due(allocation)
    account = PoolAccount.objects.get(project=project).account_name
    slurm.sacctmgr("add", "user", "root", f"account={account}")
    assert _limit(slurm, account) == "gres/gpu=4"

    # when the project's jobs ask for 3 GPUs, then 2 more
    first = slurm.submit(account=account, gpus=3)
    second = slurm.submit(account=account, gpus=2)
    third = slurm.submit(account=account, gpus=1)

    # then 4 run and the job that would go over waits for the account's limit
    slurm.wait_job_state(first, {"RUNNING"})
    slurm.wait_job_state(third, {"RUNNING"})
    slurm.wait_job_waiting(second, "AssocGrpGRES")


def test_an_early_release_lowers_the_limit_and_new_jobs_wait(
    slurm, connected_pool, project, grant, requester
):
    # given 6 GPUs held and enforced
    allocation = grant(connected_pool, project, 6)
    kept = grant(connected_pool, project, 2)
    _apply_due(allocation)
    _apply_due(kept)
    account = PoolAccount.objects.get(project=project).account_name
    slurm.sacctmgr("add", "user", "root", f"account={account}")
    assert _limit(slurm, account) == "gres/gpu=8"

    # when the team releases the 6 early
    engine.allocation_release(allocation_id=allocation.pk, actor=requester)
    _apply_due(allocation)

    # then the limit is 2: a 3-GPU job waits, a 2-GPU job runs
    assert _limit(slurm, account) == "gres/gpu=2"
    big = slurm.submit(account=account, gpus=3)
    small = slurm.submit(account=account, gpus=2)
    slurm.wait_job_state(small, {"RUNNING"})
    slurm.wait_job_waiting(big, "AssocGrpGRES")


def test_the_account_tree_mirrors_the_organisation(
    slurm, connected_pool, project, grant, requester
):
    allocation = grant(connected_pool, project, 1)
    _apply_due(allocation)
    assoc = slurm.run(
        "sacctmgr", "-n", "-P", "show", "assoc", "format=Account,User,ParentName"
    ).stdout
    rows = {tuple(line.split("|")) for line in assoc.splitlines()}
    # division -> team -> project, and the team's members are users of the project's account
    assert ("research", "", "root") in rows
    assert ("pretraining", "", "research") in rows
    assert ("atlas", "", "pretraining") in rows
    assert ("atlas", "rita", "") in rows
    assert PoolAccount.objects.get(project=project).account_name == "atlas"


def test_two_workers_applying_the_same_intent_make_one_change(
    slurm, connected_pool, project, grant
):
    # given one pending intent
    allocation = grant(connected_pool, project, 5)
    intent = _pending_intents(allocation)[0]
    before = slurm.run("sacctmgr", "-n", "-P", "show", "transactions", "format=Action,Info").stdout

    # when two workers apply it at the same time
    barrier = threading.Barrier(2)
    outcomes, errors = [], []

    def work():
        try:
            barrier.wait()
            outcomes.append(intent_apply(intent_id=intent.pk).outcome)
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    # then one changed the limit and the other found nothing to do
    assert errors == []
    assert sorted(outcomes) == ["changed", "noop"]
    after = slurm.run("sacctmgr", "-n", "-P", "show", "transactions", "format=Action,Info").stdout
    new = after.splitlines()[len(before.splitlines()) :]
    assert sum("gres/gpu=5" in line or "1001=5" in line for line in new) == 1, new
    assert _limit(slurm, "atlas") == "gres/gpu=5"
    assert AuditEvent.objects.filter(action="connector.apply").count() == 1


def test_a_late_retry_never_overwrites_a_newer_limit(
    slurm, connected_pool, project, grant, requester
):
    # given a grant's intent left unapplied, and a release applied after it
    allocation = grant(connected_pool, project, 6)
    stale = _pending_intents(allocation)[0]
    engine.allocation_release(allocation_id=allocation.pk, actor=requester)
    newest = _pending_intents(allocation)[-1]
    intent_apply(intent_id=newest.pk)
    assert _limit(slurm, "atlas") == "gres/gpu=0"

    # when the old intent's task is retried late
    result = intent_apply(intent_id=stale.pk)

    # then it changes nothing: the limit stays what the ledger says now
    assert result.outcome == "done"
    assert _limit(slurm, "atlas") == "gres/gpu=0"


def test_hand_made_drift_is_found_and_repaired(slurm, connected_pool, project, grant):
    # given an enforced allocation of 3
    allocation = grant(connected_pool, project, 3)
    _apply_due(allocation)
    # when someone raises the limit by hand and deletes the team's user
    slurm.sacctmgr("modify", "account", "where", "name=atlas", "set", "GrpTRES=gres/gpu=16")
    slurm.sacctmgr("delete", "user", "rita", "where", "account=atlas")

    run = connector_reconcile(connector_id=connected_pool.connector.pk, trigger="test")

    # then the reconciler names the drift, repairs it and records it
    assert run.outcome == SyncRun.Outcome.REPAIRED
    assert any("gres/gpu=16, the ledger says 3" in line for line in run.drift_found)
    assert any("added user rita to atlas" in line for line in run.repaired)
    assert _limit(slurm, "atlas") == "gres/gpu=3"
    event = AuditEvent.objects.filter(action="connector.repair").get()
    assert "repaired" in event.message
    connector = PoolConnector.objects.get(pk=connected_pool.connector.pk)
    assert connector.status == PoolConnector.Status.IN_SYNC
    assert connector.drift == []

    # and a second sync finds nothing
    assert connector_reconcile(connector_id=connector.pk).outcome == SyncRun.Outcome.IN_SYNC


def test_pool_sync_command_repairs_and_exits_zero(slurm, connected_pool, project, grant, capsys):
    grant(connected_pool, project, 2)  # never applied: the account does not exist yet
    call_command("pool_sync", "east/H100")
    out = capsys.readouterr().out
    assert "drift: account atlas is missing" in out
    assert "in sync with Slurm cluster allotmenttest" in out
    assert _limit(slurm, "atlas") == "gres/gpu=2"


def test_pool_connect_is_idempotent(slurm, connected_pool):
    for _ in range(2):
        call_command(
            "pool_connect",
            "east/H100",
            "slurm",
            "--cluster",
            slurm.cluster_name,
            "--partition",
            "gpu",
            "--gres",
            "gpu",
            "--slurm-conf",
            str(slurm.conf),
            "--no-sync",
        )
    assert PoolConnector.objects.count() == 1
    assert AuditEvent.objects.filter(action="connector.update").count() == 0


def test_jobs_running_above_a_lowered_limit_are_reported_and_left_running(
    slurm, connected_pool, project, grant, requester, ops
):
    from notifications.models import Notification

    # given 4 GPUs enforced and a job using all of them
    allocation = grant(connected_pool, project, 4)
    _apply_due(allocation)
    slurm.sacctmgr("add", "user", "root", "account=atlas")
    job = slurm.submit(account="atlas", gpus=4)
    slurm.wait_job_state(job, {"RUNNING"})

    # when the team releases the GPUs and the reconciler runs (twice)
    engine.allocation_release(allocation_id=allocation.pk, actor=requester)
    _apply_due(allocation)
    run = connector_reconcile(connector_id=connected_pool.connector.pk)
    connector_reconcile(connector_id=connected_pool.connector.pk)

    # then the job keeps running (requeueing is off by default); owners and ops are told once
    assert run.over_limit == [{"account": "atlas", "project": project.pk, "running": 4, "limit": 0}]
    assert slurm.job(job)["job_state"] == "RUNNING"
    told = Notification.objects.filter(message__contains="above its limit of 0")
    assert sorted(n.recipient.username for n in told) == ["ops", "rita"]


def test_with_the_setting_on_jobs_above_the_limit_are_requeued_after_the_grace(
    slurm, connected_pool, project, grant, requester, settings
):
    settings.ALLOTMENT_CONNECTORS = {
        **settings.ALLOTMENT_CONNECTORS,
        "REQUEUE_OVER_LIMIT_AFTER_MINUTES": 0,
    }
    allocation = grant(connected_pool, project, 4)
    _apply_due(allocation)
    slurm.sacctmgr("add", "user", "root", "account=atlas")
    job = slurm.submit(account="atlas", gpus=4)
    slurm.wait_job_state(job, {"RUNNING"})
    engine.allocation_release(allocation_id=allocation.pk, actor=requester)
    _apply_due(allocation)

    connector_reconcile(connector_id=connected_pool.connector.pk)

    # requeued: back in the queue, where the account's limit of 0 holds it
    slurm.wait_job_state(job, {"PENDING"}, timeout=30)
    assert AuditEvent.objects.filter(action="connector.requeue").count() == 1
