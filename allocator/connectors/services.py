"""Connecting pools, recording enforcement intents, applying them, reconciling.

Desired state is always read from the database: a project's limit on a pool at instant t is the
GPUs its allocations hold at t (allocator.selectors.holding_allocations). The outbox rows say
*when* to look again (a ledger entry, an allocation's start or end); the apply recomputes, so a
late retry can never send an old number.

Per account, applies are serialised by a PostgreSQL advisory lock held across the scheduler
command (never the rows the engine locks, so a slow scheduler never holds up an approval). An
apply reads the account's intent sequence first and the ledger after it, then writes the limit:
the next apply of the same account starts only after it, sees at least as new a ledger, and an
intent the last apply already covers is skipped before any command runs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Max, Q, Sum
from django.utils import timezone

from allocator.models import Allocation, LedgerEntry, Pool
from allocator.selectors import holding_allocations
from audit.services import audit_record
from notifications.models import Notification
from notifications.services import notify
from org.models import Membership, Project, RoleGrant

from .models import EnforcementIntent, PoolAccount, PoolConnector, SchedulerAccount, SyncRun
from .slurm import AccountState, Slurm, SlurmError

logger = logging.getLogger(__name__)

ADVISORY_CLASS = 0x5C07  # the first key of pg_advisory_xact_lock(int, int): "connector account"
NAME_MAX = 30


def _conf(key: str):
    return settings.ALLOTMENT_CONNECTORS[key]


# --- desired state ----------------------------------------------------------------------------


def desired_gpus(*, pool_id: int, project_ids, at: datetime) -> dict[int, int]:
    """GPUs each project holds in the pool at `at`: what its account's limit must be."""
    held = dict(
        holding_allocations()
        .filter(pool_id=pool_id, project_id__in=list(project_ids), start__lte=at, end__gt=at)
        .values("project_id")
        .annotate(total=Sum("gpus"))
        .values_list("project_id", "total")
    )
    return {pid: held.get(pid) or 0 for pid in project_ids}


# --- names and the account tree ---------------------------------------------------------------


def account_name_derive(text: str) -> str:
    """Slurm lower-cases account names and reads `,` `=` `|` as syntax: keep [a-z0-9_]."""
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:NAME_MAX] or "account"
    if name[0].isdigit():
        name = f"a{name}"[:NAME_MAX]
    return name


def slurm_user_name(username: str) -> str | None:
    """A team member's Slurm user: their username when it is a valid Unix user name."""
    name = username.lower()
    return name if re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", name) else None


def _account_get_or_create(
    *, cluster: str, level: str, obj, parent: SchedulerAccount | None, label: str
) -> SchedulerAccount:
    lookup = {"cluster": cluster, "level": level, level: obj}
    existing = SchedulerAccount.objects.filter(**lookup).first()
    if existing:
        return existing
    base = account_name_derive(label)
    name = base
    if SchedulerAccount.objects.filter(cluster=cluster, name=name).exists() or name == "root":
        name = f"{base[: NAME_MAX - 8]}_{level[0]}{obj.pk}"
    account, _ = SchedulerAccount.objects.get_or_create(
        **lookup, defaults={"name": name, "parent": parent}
    )
    return account


def pool_account_ensure(connector: PoolConnector, project: Project) -> PoolAccount:
    """The project's PoolAccount on this connector, with its division and team accounts."""
    existing = (
        PoolAccount.objects.filter(connector=connector, project=project)
        .select_related("account")
        .first()
    )
    if existing:
        return existing
    team = project.team
    division = team.division
    d = _account_get_or_create(
        cluster=connector.cluster, level="division", obj=division, parent=None, label=division.slug
    )
    t = _account_get_or_create(
        cluster=connector.cluster, level="team", obj=team, parent=d, label=team.slug
    )
    p = _account_get_or_create(
        cluster=connector.cluster, level="project", obj=project, parent=t, label=project.name
    )
    PoolAccount.objects.bulk_create(
        [
            PoolAccount(
                connector=connector,
                pool_id=connector.pool_id,
                project=project,
                account=p,
                account_name=p.name,
            )
        ],
        ignore_conflicts=True,
    )
    return PoolAccount.objects.select_related("account").get(connector=connector, project=project)


# --- connecting a pool ------------------------------------------------------------------------


@transaction.atomic
def pool_connect(
    *,
    pool: Pool,
    kind: str,
    cluster: str,
    partition: str,
    gres: str,
    slurm_conf: str = "",
    command_prefix: str = "",
    actor=None,
) -> PoolConnector:
    """Connect (or re-point) a pool. Idempotent: the same arguments change nothing."""
    if kind != PoolConnector.Kind.SLURM:
        raise ValueError(f"unknown connector kind {kind!r}")
    for label, value in (("cluster", cluster), ("partition", partition), ("gres", gres)):
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,60}", value or ""):
            raise ValueError(f"{label} {value!r} is not a Slurm name")
    wanted = {
        "kind": kind,
        "cluster": cluster,
        "partition": partition,
        "gres": gres,
        "slurm_conf": slurm_conf,
        "command_prefix": command_prefix,
    }
    connector = PoolConnector.objects.select_for_update().filter(pool=pool).first()
    if connector is None:
        connector = PoolConnector.objects.create(pool=pool, **wanted)
        audit_record(
            actor=actor,
            action="connector.connect",
            obj=connector,
            after=wanted,
            message=f"{pool} connected to Slurm cluster {cluster}, partition {partition}.",
        )
    else:
        before = {k: getattr(connector, k) for k in wanted}
        if before != wanted:
            if before["cluster"] != cluster:
                connector.accounts.all().delete()  # accounts of another cluster
            for k, v in wanted.items():
                setattr(connector, k, v)
            connector.save(update_fields=list(wanted))
            audit_record(
                actor=actor,
                action="connector.update",
                obj=connector,
                before=before,
                after=wanted,
                message=f"{pool}'s connector changed.",
            )
    # Every project with GPUs now or later in the pool gets its account.
    now = timezone.now()
    for project in Project.objects.filter(
        pk__in=holding_allocations().filter(pool=pool, end__gt=now).values("project_id")
    ).select_related("team__division"):
        pool_account_ensure(connector, project)
    return connector


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
        backoff = min(2**intent.attempts, _conf("MAX_BACKOFF_SECONDS"))
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
    grace = _conf("REQUEUE_OVER_LIMIT_AFTER_MINUTES")
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


# --- what the pages and the API show -------------------------------------------------------


def allocation_enforcement(allocations) -> dict[int, str]:
    """Per allocation of a connected pool: "enforced", "pending", "failing" or "scheduled"
    (starts later). Allocations of pools with no connector are absent. Two queries."""
    allocations = list(allocations)
    pools = set(
        PoolConnector.objects.filter(pool_id__in={a.pool_id for a in allocations}).values_list(
            "pool_id", flat=True
        )
    )
    ids = [a.pk for a in allocations if a.pool_id in pools]
    now = timezone.now()
    pending: dict[int, str] = {}
    for allocation_id, error in EnforcementIntent.objects.filter(
        allocation_id__in=ids, status=EnforcementIntent.Status.PENDING, effective_at__lte=now
    ).values_list("allocation_id", "last_error"):
        if error or pending.get(allocation_id) != "failing":
            pending[allocation_id] = "failing" if error else "pending"
    result = {}
    for a in allocations:
        if a.pool_id not in pools:
            continue
        if a.pk in pending:
            result[a.pk] = pending[a.pk]
        elif a.start > now and a.state == Allocation.State.ACTIVE:
            result[a.pk] = "scheduled"
        else:
            result[a.pk] = "enforced"
    return result


def connector_sync_request(*, connector: PoolConnector, actor) -> None:
    """Compute ops asked for a sync now: audited, sent to a worker after the commit (a
    reconcile runs scheduler commands for seconds: never inside a web request)."""
    from .tasks import reconcile_pool

    with transaction.atomic():
        audit_record(
            actor=actor,
            action="connector.sync_requested",
            obj=connector,
            message=f"{actor} asked for a sync of {connector.pool} now.",
        )

        def send():
            reconcile_pool.delay(connector.pk, f"sync now by {actor}")

        transaction.on_commit(send, robust=True)
