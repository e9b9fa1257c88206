"""Connecting pools and their accounts; the desired state; what pages and the API show.
(intents.py records and applies enforcement intents; reconcile.py compares and repairs.)

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
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from allocator.models import Allocation, Pool
from allocator.selectors import holding_allocations
from audit.services import audit_record
from org.models import Project

from .models import EnforcementIntent, PoolAccount, PoolConnector, SchedulerAccount

logger = logging.getLogger(__name__)

NAME_MAX = 30


def connector_conf(key: str):
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
