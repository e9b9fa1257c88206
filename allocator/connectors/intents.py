"""The enforcement outbox: record what the scheduler must be told when the ledger changes,
dispatch the intents that are due, and apply one (per account, under an advisory lock held
across the scheduler command; services.py explains why the apply recomputes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from allocator.models import LedgerEntry
from audit.services import audit_record
from org.models import Membership, Project

from .models import EnforcementIntent, PoolAccount, PoolConnector, SchedulerAccount
from .services import connector_conf, desired_gpus, pool_account_ensure, slurm_user_name
from .slurm import AccountState, Slurm, SlurmError

logger = logging.getLogger(__name__)

ADVISORY_CLASS = 0x5C07  # the first key of pg_advisory_xact_lock(int, int): "connector account"


# --- the outbox -------------------------------------------------------------------------------


def intents_record_for_ledger(entry: LedgerEntry) -> list[EnforcementIntent]:
    """Called in the ledger entry's transaction (receivers.py): write what the scheduler must
    hold because of it, now and at the instants the allocation starts and ends."""
    allocation = entry.allocation
    connector = PoolConnector.objects.filter(pool_id=allocation.pool_id).first()
    if connector is None:
        return []
    project = Project.objects.select_related("team__division").get(pk=allocation.project_id)
    pool_account = pool_account_ensure(connector, project)
    now = timezone.now()
    instants = sorted({now} | {t for t in (allocation.start, allocation.end) if t > now})
    intents = []
    for at in instants:
        sequence = _next_sequence(pool_account.pk)
        gpus = desired_gpus(pool_id=allocation.pool_id, project_ids=[project.pk], at=at)[project.pk]
        intents.append(
            EnforcementIntent.objects.create(
                pool_account=pool_account,
                sequence=sequence,
                effective_at=at,
                gpus=gpus,
                ledger_entry=entry,
                allocation=allocation,
            )
        )
    first = intents[0].pk

    def dispatch_after_commit():
        _dispatch_intent(first)

    transaction.on_commit(dispatch_after_commit, robust=True)
    return intents


def _next_sequence(pool_account_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE connectors_poolaccount SET last_sequence = last_sequence + 1 "
            "WHERE id = %s RETURNING last_sequence",
            [pool_account_id],
        )
        return cursor.fetchone()[0]


def _dispatch_intent(intent_id: int) -> None:
    from .tasks import apply_intent

    try:
        apply_intent.delay(intent_id)
    except Exception:  # the periodic sweep (intents_dispatch_due) sends it later
        logger.exception("could not send the apply task for intent %s", intent_id)


def intents_dispatch_due(*, now: datetime | None = None, limit: int = 500) -> int:
    """Send the oldest due pending intent of every account (the periodic sweep)."""
    now = now or timezone.now()
    due = (
        EnforcementIntent.objects.filter(
            status=EnforcementIntent.Status.PENDING, effective_at__lte=now
        )
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .values("pool_account_id")
        .annotate(last=Max("id"))
        .values_list("last", flat=True)[:limit]
    )
    ids = list(due)
    for intent_id in ids:
        _dispatch_intent(intent_id)
    return len(ids)


# --- applying ---------------------------------------------------------------------------------


@dataclass
class ApplyResult:
    outcome: str  # "noop", "changed", "not_due", "done"
    commands: list[str] = field(default_factory=list)


def intent_apply(*, intent_id: int) -> ApplyResult:
    intent = EnforcementIntent.objects.select_related("pool_account").filter(pk=intent_id).first()
    if intent is None or intent.status != EnforcementIntent.Status.PENDING:
        return ApplyResult("done")
    if intent.effective_at > timezone.now():
        return ApplyResult("not_due")
    try:
        return pool_account_apply(
            pool_account_id=intent.pool_account_id, intent=intent, trigger="intent"
        )
    except SlurmError as error:
        intent_record_failure(intent_id=intent_id, error=error)
        raise


def _covers(pool_account: PoolAccount, intent: EnforcementIntent) -> bool:
    return (
        pool_account.applied_as_of is not None
        and pool_account.applied_sequence >= intent.sequence
        and pool_account.applied_as_of >= intent.effective_at
    )


def pool_account_apply(
    *,
    pool_account_id: int,
    intent: EnforcementIntent | None = None,
    trigger: str,
    actor=None,
    state=None,
) -> ApplyResult:
    """Make the scheduler hold what the ledger says for one account, now. `state` is the
    cluster's account list when the caller (the reconciler) read it already."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_CLASS, pool_account_id]
            )
        # Read after the lock: the sequence first, the ledger after it.
        pool_account = PoolAccount.objects.select_related(
            "connector__pool", "account__parent__parent", "project__team"
        ).get(pk=pool_account_id)
        if intent is not None and _covers(pool_account, intent):
            _mark_covered(pool_account)
            return ApplyResult("noop")
        sequence = pool_account.last_sequence
        as_of = timezone.now()
        desired = desired_gpus(
            pool_id=pool_account.pool_id, project_ids=[pool_account.project_id], at=as_of
        )[pool_account.project_id]
        connector = pool_account.connector
        slurm = Slurm.for_connector(connector)
        accounts = state if state is not None else slurm.accounts()
        commands = _tree_repair(slurm, pool_account, accounts)
        current = accounts.get(pool_account.account_name)
        actual = current.limit if current else None
        if actual != desired:
            slurm.limit_set(pool_account.account_name, desired)
            commands.append(
                f"GrpTRES={slurm.tres}={desired} on {pool_account.account_name} (was {'unset' if actual is None else actual})"
            )
            if current:
                current.limit = desired
        PoolAccount.objects.filter(pk=pool_account.pk).update(
            applied_sequence=sequence,
            applied_as_of=as_of,
            applied_gpus=desired,
            actual_gpus=desired,
        )
        pool_account.applied_sequence, pool_account.applied_as_of = sequence, as_of
        _mark_covered(pool_account)
        if commands:
            audit_record(
                actor=actor,
                action="connector.apply",
                obj=connector,
                before={"account": pool_account.account_name, "limit": actual},
                after={
                    "account": pool_account.account_name,
                    "limit": desired,
                    "sequence": sequence,
                },
                message=f"{trigger}: " + "; ".join(commands),
            )
        return ApplyResult("changed" if commands else "noop", commands)


def _mark_covered(pool_account: PoolAccount) -> None:
    EnforcementIntent.objects.filter(
        pool_account=pool_account,
        status=EnforcementIntent.Status.PENDING,
        sequence__lte=pool_account.applied_sequence,
        effective_at__lte=pool_account.applied_as_of,
    ).update(status=EnforcementIntent.Status.APPLIED, applied_at=timezone.now(), last_error="")


def _tree_repair(slurm: Slurm, pool_account: PoolAccount, accounts: dict) -> list[str]:
    """Division -> team -> project accounts exist under the right parents; team members are
    users of the project's account. Returns what it changed."""
    done: list[str] = []
    chain: list[SchedulerAccount] = []
    link: SchedulerAccount | None = pool_account.account
    while link is not None:
        chain.append(link)
        link = link.parent
    parent_name = "root"
    for account in reversed(chain):
        existing = accounts.get(account.name)
        if existing is None:
            slurm.account_add(
                account.name, parent=parent_name, description=f"Allotment {account.level}"
            )
            accounts[account.name] = AccountState(name=account.name, parent=parent_name, limit=None)
            done.append(f"added account {account.name} under {parent_name}")
        elif existing.parent != parent_name:
            slurm.account_set_parent(account.name, parent_name)
            existing.parent = parent_name
            done.append(f"moved account {account.name} under {parent_name}")
        parent_name = account.name
    members = Membership.objects.filter(
        team_id=pool_account.project.team_id, user__is_active=True
    ).values_list("user__username", flat=True)
    present = accounts.get(pool_account.account_name)
    have = present.users if present else set()
    for username in sorted(members):
        user = slurm_user_name(username)
        if user and user not in have:
            slurm.user_add(user, pool_account.account_name)
            have.add(user)
            done.append(f"added user {user} to {pool_account.account_name}")
    return done


def intent_record_failure(*, intent_id: int, error: SlurmError) -> None:
    with transaction.atomic():
        intent = (
            EnforcementIntent.objects.select_for_update()
            .select_related("pool_account__connector")
            .filter(pk=intent_id)
            .first()
        )
        if intent is None or intent.status != EnforcementIntent.Status.PENDING:
            return
        intent.attempts += 1
        backoff = min(2**intent.attempts, connector_conf("MAX_BACKOFF_SECONDS"))
        intent.next_attempt_at = timezone.now() + timedelta(seconds=backoff)
        intent.last_error = f"{error}: {error.command}\n{error.output}"[:4000]
        intent.save(update_fields=["attempts", "next_attempt_at", "last_error"])
        audit_record(
            actor=None,
            action="connector.apply_failed",
            obj=intent.pool_account.connector,
            after={
                "intent": intent.pk,
                "account": intent.pool_account.account_name,
                "command": error.command,
                "output": error.output[-1000:],
                "attempts": intent.attempts,
            },
            message=f"Could not apply the limit of {intent.pool_account.account_name}: {error}",
        )
