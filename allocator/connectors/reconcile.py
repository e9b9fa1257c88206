"""Reconciling: read the scheduler, compare with the ledger, repair every difference, and
handle projects that ran over their limit; one SyncRun per reconcile.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from allocator.selectors import holding_allocations
from audit.services import audit_record
from notifications.models import Notification
from notifications.services import notify
from org.models import Project, RoleGrant

from .intents import pool_account_apply
from .models import EnforcementIntent, PoolAccount, PoolConnector, SyncRun
from .services import connector_conf, desired_gpus, pool_account_ensure
from .slurm import Slurm, SlurmError

# --- reconciling ------------------------------------------------------------------------------


def connector_reconcile(*, connector_id: int, trigger: str = "periodic", actor=None) -> SyncRun:
    """Read the scheduler, compare with the ledger, repair every difference; one SyncRun."""
    connector = PoolConnector.objects.select_related("pool").get(pk=connector_id)
    started = timezone.now()
    run = SyncRun(
        connector=connector, started_at=started, trigger=trigger, outcome=SyncRun.Outcome.IN_SYNC
    )
    slurm = Slurm.for_connector(connector)
    drift: list[str] = []
    repaired: list[str] = []
    remaining: list[str] = []
    try:
        # Projects holding now or later get accounts before anything is compared.
        for project in (
            Project.objects.filter(
                pk__in=holding_allocations()
                .filter(pool_id=connector.pool_id, end__gt=started)
                .values("project_id")
            )
            .exclude(scheduler_accounts__connector=connector)
            .select_related("team__division")
        ):
            with transaction.atomic():
                pool_account_ensure(connector, project)
        accounts = slurm.accounts()
        running = slurm.running_gpus()
        pool_accounts = list(
            PoolAccount.objects.filter(connector=connector).select_related(
                "account__parent__parent", "project__team"
            )
        )
        desired = desired_gpus(
            pool_id=connector.pool_id,
            project_ids=[pa.project_id for pa in pool_accounts],
            at=started,
        )
        # Accounts whose due intents no apply has covered yet (their tasks failed or are late):
        # applied here too, so the intents are marked done even where no value differs.
        uncovered = set(
            EnforcementIntent.objects.filter(
                pool_account__connector=connector,
                status=EnforcementIntent.Status.PENDING,
                effective_at__lte=started,
            ).values_list("pool_account_id", flat=True)
        )
        over_limit = []
        for pa in pool_accounts:
            state = accounts.get(pa.account_name)
            want = desired[pa.project_id]
            problems = _differences(pa, state, want, accounts)
            drift.extend(problems)
            if problems or pa.pk in uncovered:
                try:
                    result = pool_account_apply(
                        pool_account_id=pa.pk,
                        trigger=f"reconcile ({trigger})",
                        actor=actor,
                        state=accounts,
                    )
                    repaired.extend(result.commands)
                except SlurmError as error:
                    remaining.extend(problems)
                    raise error
            use = running.get(pa.account_name, 0)
            over = use > want
            PoolAccount.objects.filter(pk=pa.pk).update(
                running_gpus=use,
                checked_at=started,
                actual_gpus=want,
                over_limit_since=(pa.over_limit_since or started) if over else None,
            )
            if over:
                over_limit.append(
                    {
                        "account": pa.account_name,
                        "project": pa.project_id,
                        "running": use,
                        "limit": want,
                    }
                )
                _over_limit_handle(
                    connector,
                    pa,
                    use,
                    want,
                    since=pa.over_limit_since or started,
                    now=started,
                    slurm=slurm,
                )
        run.over_limit = over_limit
        run.outcome = SyncRun.Outcome.REPAIRED if drift else SyncRun.Outcome.IN_SYNC
    except SlurmError as error:
        run.outcome = SyncRun.Outcome.ERROR
        run.error = str(error)
        run.error_command = error.command
        run.error_output = error.output
        remaining = remaining or drift or ["the scheduler could not be read"]
    run.drift_found, run.repaired, run.remaining = drift, repaired, remaining
    run.finished_at = timezone.now()
    with transaction.atomic():
        run.save()
        status = (
            PoolConnector.Status.ERROR
            if run.outcome == SyncRun.Outcome.ERROR
            else PoolConnector.Status.DRIFT
            if remaining
            else PoolConnector.Status.IN_SYNC
        )
        PoolConnector.objects.filter(pk=connector.pk).update(
            last_sync_at=run.finished_at, status=status, drift=remaining
        )
        if drift or run.outcome == SyncRun.Outcome.ERROR:
            audit_record(
                actor=actor,
                action="connector.sync_failed"
                if run.outcome == SyncRun.Outcome.ERROR
                else "connector.repair",
                obj=connector,
                before={"drift": drift},
                after={
                    "repaired": repaired,
                    "remaining": remaining,
                    **(
                        {"command": run.error_command, "output": run.error_output[-1000:]}
                        if run.error
                        else {}
                    ),
                },
                message=(
                    f"Sync of {connector.pool} failed: {run.error}"
                    if run.error
                    else f"Sync of {connector.pool} repaired {len(repaired)} difference(s)."
                ),
            )
    return run


def _differences(pa: PoolAccount, state, want: int, accounts: dict) -> list[str]:
    name = pa.account_name
    if state is None:
        return [f"account {name} is missing (limit should be {want})"]
    problems = []
    if state.limit != want:
        shown = "unset" if state.limit is None else state.limit
        problems.append(f"{name}: GrpTRES gres/{pa.connector.gres}={shown}, the ledger says {want}")
    parent = pa.account.parent
    if parent and state.parent != parent.name:
        problems.append(f"{name}: parent is {state.parent or 'none'}, should be {parent.name}")
    account = parent
    while account is not None:
        if account.name not in accounts:
            problems.append(f"account {account.name} is missing")
        account = account.parent
    return problems


def _over_limit_handle(connector, pa, use: int, limit: int, *, since, now, slurm) -> None:
    """Running jobs above a lowered limit keep running (Slurm never stops them): owners and
    ops are told once; after the grace period, jobs are requeued only if the setting says so."""
    if pa.over_limit_since is None:
        users = list(
            get_user_model()
            .objects.filter(
                Q(memberships__team_id=pa.project.team_id)
                | Q(role_grants__role=RoleGrant.Role.COMPUTE_OPS),
                is_active=True,
            )
            .distinct()
        )
        notify(
            recipients=users,
            kind=Notification.Kind.INFO,
            message=(
                f"Jobs of {pa.project} on {connector.pool} use {use} GPUs, above its limit of "
                f"{limit}: they keep running, new jobs wait until they fit."
            ),
            dedupe_key=f"over-limit:{pa.pk}:{since.isoformat()}",
        )
    grace = connector_conf("REQUEUE_OVER_LIMIT_AFTER_MINUTES")
    if grace is None or now - since < timedelta(minutes=grace):
        return
    excess = use - limit
    for job in sorted(slurm.running_jobs(pa.account_name), key=lambda j: -j["start_time"]):
        if excess <= 0:
            break
        slurm.requeue(job["job_id"])
        excess -= job["gpus"]
        audit_record(
            actor=None,
            action="connector.requeue",
            obj=connector,
            after={"job": job["job_id"], "account": pa.account_name},
            message=f"Requeued job {job['job_id']} of {pa.account_name}: above its limit.",
        )


def connectors_reconcile_all(*, trigger: str = "periodic") -> int:
    count = 0
    for connector_id in PoolConnector.objects.values_list("pk", flat=True):
        connector_reconcile(connector_id=connector_id, trigger=trigger)
        count += 1
    return count
