"""A lab-sized data set (PRODUCT.md section 8), generated fast with bulk inserts and a seed.

Default scale: 100 pools, 50 teams, 2,000 projects, 100,000 requests in every state, 30,000
time-ranged allocations and capacity changes including future arrivals. The data respects the
invariant: allocations are placed pool by pool against a per-hour ledger of free GPUs, so every
instant of every pool holds at most its capacity.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from allocator.models import (
    Allocation,
    AllocationChange,
    CapacityChange,
    DivisionShare,
    LedgerEntry,
    Pool,
    Priority,
)
from org.models import Division, Membership, Project, RoleGrant, Team
from requests_app.models import ApprovalStep, ComputeRequest

BATCH = 5000
PRIORITIES = ["low", "normal", "normal", "normal", "high", "urgent"]
JUSTIFICATION = {
    "goal": "Train and evaluate the next iteration of the model family.",
    "expected_outcome": "A checkpoint that beats the current baseline on the core evals.",
    "size_rationale": "Sized from last quarter's scaling runs; shorter would not converge.",
    "impact_if_denied": "The milestone slips by about a month.",
}


@dataclass
class Scale:
    pools: int = 100
    teams: int = 50
    projects: int = 2000
    requests: int = 100_000
    allocations: int = 30_000
    divisions: int = 4
    users: int = 400

    @classmethod
    def fraction(cls, f: float) -> Scale:
        base = cls()
        return cls(
            pools=max(2, int(base.pools * f)),
            teams=max(2, int(base.teams * f)),
            projects=max(4, int(base.projects * f)),
            requests=max(20, int(base.requests * f)),
            allocations=max(6, int(base.allocations * f)),
            divisions=2,
            users=max(8, int(base.users * f)),
        )


def _floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _next_ids(model, count: int) -> list[int]:
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, %s)",
            [count],
        )
        return [row[0] for row in cursor.fetchall()]


def _copy(model, rows: list[dict]) -> list[int]:
    """Insert rows with PostgreSQL COPY (ten times faster than bulk_create at this size) and
    return their ids. Columns a row leaves out get the field's default, auto_now fields now."""
    if not rows:
        return []
    now = timezone.now()
    fields = list(model._meta.concrete_fields)
    if "id" not in rows[0]:
        for row, new_id in zip(rows, _next_ids(model, len(rows)), strict=True):
            row["id"] = new_id
    columns, defaults = [], {}
    for field in fields:
        columns.append(field.column)
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            defaults[field.attname] = now
        else:  # the model's default; "" for text columns that are not nullable
            defaults[field.attname] = field.get_default()
    json_fields = {f.attname for f in fields if f.get_internal_type() == "JSONField"}
    column_list = ", ".join(f'"{c}"' for c in columns)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f'COPY "{model._meta.db_table}" ({column_list}) FROM STDIN') as copy,
    ):
        for row in rows:
            values = []
            for field in fields:
                value = row.get(field.attname, defaults[field.attname])
                if field.attname in json_fields:
                    value = Jsonb(value)
                values.append(value)
            copy.write_row(values)
    return [row["id"] for row in rows]


@transaction.atomic
def generate_lab(*, scale: Scale, seed: int = 1, prefix: str = "lab") -> dict:
    rng = random.Random(seed)
    started = time.perf_counter()
    now = _floor_hour(timezone.now())
    past_days, future_days = 120, 120
    origin = now - timedelta(days=past_days)
    days = past_days + future_days
    User = get_user_model()

    divisions = Division.objects.bulk_create(
        [
            Division(name=f"{prefix} Division {i}", slug=f"{prefix}-division-{i}")
            for i in range(scale.divisions)
        ]
    )
    password = make_password("lab")
    users = User.objects.bulk_create(
        [
            User(
                username=f"{prefix}-user{i}",
                email=f"{prefix}-user{i}@lab.invalid",
                password=password,
            )
            for i in range(scale.users)
        ],
        batch_size=BATCH,
    )
    leads = User.objects.bulk_create(
        [User(username=f"{prefix}-lead{i}", password=password) for i in range(scale.divisions)]
    )
    executive, ops = User.objects.bulk_create(
        [
            User(username=f"{prefix}-exec", password=password),
            User(username=f"{prefix}-ops", password=password),
        ]
    )
    RoleGrant.objects.bulk_create(
        [
            RoleGrant(user=lead, role="division_lead", division=div)
            for lead, div in zip(leads, divisions, strict=True)
        ]
        + [RoleGrant(user=executive, role="executive"), RoleGrant(user=ops, role="compute_ops")]
    )
    teams = Team.objects.bulk_create(
        [
            Team(
                name=f"{prefix} Team {i}",
                slug=f"{prefix}-team-{i}",
                division=divisions[i % len(divisions)],
            )
            for i in range(scale.teams)
        ]
    )
    team_members: dict[int, list] = {t.pk: [] for t in teams}
    memberships = []
    for i, user in enumerate(users):
        for team in {teams[i % len(teams)], teams[rng.randrange(len(teams))]}:
            memberships.append(Membership(team=team, user=user))
            team_members[team.pk].append(user)
    Membership.objects.bulk_create(memberships, batch_size=BATCH)
    for team in teams:  # every team has at least one member
        if not team_members[team.pk]:
            Membership.objects.create(team=team, user=users[0])
            team_members[team.pk].append(users[0])

    states = ["active"] * 6 + ["winding_down"] * 3 + ["ended"]
    projects = Project.objects.bulk_create(
        [
            Project(
                team=teams[i % len(teams)],
                name=f"{prefix} Project {i}",
                description="Generated project.",
                expected_end=(now + timedelta(days=rng.randint(-30, 365))).date(),
                state=rng.choice(states),
                confidential=rng.random() < 0.1,
            )
            for i in range(scale.projects)
        ],
        batch_size=BATCH,
    )

    pools = Pool.objects.bulk_create(
        [
            Pool(cluster=f"{prefix}-c{i // 4}", gpu_model=["H100", "H200", "A100", "B200"][i % 4])
            for i in range(scale.pools)
        ]
    )
    capacity_changes, shares = [], []
    capacity_by_pool: dict[int, list[int]] = {}
    for pool in pools:
        base = rng.choice([256, 512, 1024, 2048])
        per_day = [base] * days
        capacity_changes.append(
            CapacityChange(
                pool=pool, kind="arrival", delta=base, effective_at=origin - timedelta(days=365)
            )
        )
        if rng.random() < 0.5:  # a future arrival
            arrival_day = rng.randint(past_days + 1, days - 1)
            extra = rng.choice([64, 128, 256])
            capacity_changes.append(
                CapacityChange(
                    pool=pool,
                    kind="arrival",
                    delta=extra,
                    effective_at=origin + timedelta(days=arrival_day),
                )
            )
            for d in range(arrival_day, days):
                per_day[d] += extra
        capacity_by_pool[pool.pk] = per_day
        remaining = base
        for d, division in enumerate(divisions):
            gpus = remaining if d == len(divisions) - 1 else base // len(divisions)
            remaining -= gpus
            shares.append(DivisionShare(division=division, pool=pool, gpus=gpus))
    CapacityChange.objects.bulk_create(capacity_changes, batch_size=BATCH)
    DivisionShare.objects.bulk_create(shares, batch_size=BATCH)

    # Allocations: placed against a daily ledger of free GPUs per pool. Every start, end and
    # arrival falls on a day boundary, so the daily ledger is exact at every instant.
    held = {pool.pk: [0] * days for pool in pools}
    # (pool, project, gpus, start day, end day)
    placed: list[tuple[Pool, Project, int, int, int]] = []
    attempts = 0
    while len(placed) < scale.allocations and attempts < scale.allocations * 6:
        attempts += 1
        pool = pools[rng.randrange(len(pools))]
        gpus = rng.choice([8, 8, 16, 16, 32, 64])
        start_d = rng.randrange(0, days - 2)
        end_d = min(days, start_d + rng.randint(2, 45))
        cap, h = capacity_by_pool[pool.pk], held[pool.pk]
        if all(h[x] + gpus <= cap[x] for x in range(start_d, end_d)):
            for x in range(start_d, end_d):
                h[x] += gpus
            placed.append((pool, projects[rng.randrange(len(projects))], gpus, start_d, end_d))

    def at(day: int) -> datetime:
        return origin + timedelta(days=day)

    approved_time = [at(s) - timedelta(hours=rng.randint(1, 200)) for _, _, _, s, _ in placed]
    # Ids are drawn from the sequences first, so rows can point at each other before COPY.
    change_ids = _next_ids(AllocationChange, len(placed))
    allocation_ids = _next_ids(Allocation, len(placed))
    change_rows: list[dict] = []
    allocation_rows: list[dict] = []
    ledger_rows: list[dict] = []
    for i, (pool, project, gpus, s, e) in enumerate(placed):
        change_rows.append(
            dict(
                id=change_ids[i],
                pool_id=pool.pk,
                project_id=project.pk,
                gpus=gpus,
                start=at(s),
                end=at(e),
                priority=int(Priority[rng.choice(PRIORITIES).upper()]),
                status="applied",
                approved_at=approved_time[i],
                applied_at=approved_time[i],
                executive_reviewed=gpus >= 256,
                allocation_id=allocation_ids[i],
            )
        )
        allocation_rows.append(
            dict(
                id=allocation_ids[i],
                pool_id=pool.pk,
                project_id=project.pk,
                gpus=gpus,
                start=at(s),
                end=at(e),
                change_id=change_ids[i],
                state="ended" if at(e) <= now else "active",
            )
        )
        ledger_rows.append(
            dict(
                allocation_id=allocation_ids[i],
                change_id=change_ids[i],
                kind="grant",
                gpus=gpus,
                start=at(s),
                end=at(e),
                note="generated",
            )
        )
    # The change and its allocation point at each other: insert both inside one transaction
    # with the foreign keys checked at commit (they are DEFERRABLE INITIALLY DEFERRED).
    _copy(AllocationChange, change_rows)
    _copy(Allocation, allocation_rows)
    _copy(LedgerEntry, ledger_rows)

    # Requests: one allocated request per allocation, the rest spread over the other states.
    # Weights: most requests are being reviewed, waiting or finished; "approved" lasts only until
    # a worker takes it and "failed" is rare, so both are few.
    other_states = (
        ["draft"] * 2
        + ["pending_division"] * 4
        + ["pending_executive"] * 2
        + ["changes_requested"] * 2
        + ["rejected"] * 2
        + ["withdrawn"] * 2
        + ["waiting"] * 4
        + ["failed", "approved"]
    )
    specs: list[tuple[str, int | None]] = [("allocated", i) for i in range(len(placed))]
    specs += [(rng.choice(other_states), None) for _ in range(max(0, scale.requests - len(specs)))]
    request_ids = _next_ids(ComputeRequest, len(specs))
    division_of_team = {t.pk: t.division_id for t in teams}
    lead_of_division = {d.pk: lead for d, lead in zip(divisions, leads, strict=True)}
    request_rows: list[dict] = []
    extra_change_rows: list[dict] = []
    step_rows: list[dict] = []
    for request_id, (status, placed_index) in zip(request_ids, specs, strict=True):
        if placed_index is not None:
            pool, project, gpus, s, e = placed[placed_index]
            start, end = at(s), at(e)
            priority = Priority(change_rows[placed_index]["priority"]).label
        else:
            pool = pools[rng.randrange(len(pools))]
            project = projects[rng.randrange(len(projects))]
            gpus = rng.choice([8, 16, 32, 64, 128, 300])
            start = now + timedelta(hours=rng.randint(1, 24 * 60))
            end = start + timedelta(days=rng.randint(1, 60))
            priority = rng.choice(PRIORITIES)
        members = team_members[project.team_id]
        submitted = None if status == "draft" else start - timedelta(days=rng.randint(1, 30))
        approved = status in ("allocated", "waiting", "failed", "approved")
        needs_executive = gpus >= 256 or priority == "urgent"
        change_id = change_ids[placed_index] if placed_index is not None else None
        if placed_index is None and approved:
            assert submitted is not None  # only drafts have no submission time
            change_id = len(extra_change_rows)  # replaced by a real id below
            extra_change_rows.append(
                dict(
                    pool_id=pool.pk,
                    project_id=project.pk,
                    gpus=gpus,
                    start=start,
                    end=end,
                    priority=int(Priority[priority.upper()]),
                    status={"waiting": "waiting", "failed": "failed", "approved": "pending"}[
                        status
                    ],
                    approved_at=submitted + timedelta(days=1),
                    attempts=3 if status == "failed" else 0,
                    last_error="generated failure" if status == "failed" else "",
                    dispatched_at=now if status == "approved" else None,
                    executive_reviewed=needs_executive,
                )
            )
        request_rows.append(
            dict(
                id=request_id,
                project_id=project.pk,
                pool_id=pool.pk,
                requester_id=members[rng.randrange(len(members))].pk,
                gpus=gpus,
                start=start,
                end=end,
                priority=priority,
                status=status,
                round=0 if status == "draft" else 1,
                needs_executive=needs_executive,
                executive_reasons=(
                    [f"it asks for {gpus} GPUs, at or above the 256 that need executive review"]
                    if gpus >= 256
                    else []
                ),
                submitted_at=submitted,
                stage_entered_at={
                    "pending_division": submitted,
                    "pending_executive": submitted + timedelta(hours=6) if submitted else None,
                }.get(status),
                approved_at=submitted + timedelta(days=1) if approved and submitted else None,
                change_id=change_id,
                created_at=submitted or now,
                updated_at=submitted or now,
                **JUSTIFICATION,
            )
        )
        if status in ("draft", "pending_division", "withdrawn"):
            continue
        assert submitted is not None  # only drafts have no submission time, and they stopped above
        lead = lead_of_division[division_of_team[project.team_id]]
        decided = submitted + timedelta(hours=6)
        first = {"changes_requested": "changes_requested", "rejected": "rejected"}.get(
            status, "approved"
        )
        step_rows.append(
            dict(
                request_id=request_id,
                round=1,
                stage="division",
                decision=first,
                decider_id=lead.pk,
                decided_at=decided,
                comment="" if first == "approved" else "Please narrow the range.",
            )
        )
        if first == "approved" and needs_executive and status != "pending_executive":
            step_rows.append(
                dict(
                    request_id=request_id,
                    round=1,
                    stage="executive",
                    decision="approved",
                    decider_id=executive.pk,
                    decided_at=decided + timedelta(hours=2),
                    comment="",
                )
            )
    extra_ids = _copy(AllocationChange, extra_change_rows)
    for row in request_rows:
        if row["change_id"] is not None and row["status"] != "allocated":
            row["change_id"] = extra_ids[row["change_id"]]
    _copy(ComputeRequest, request_rows)
    _copy(ApprovalStep, step_rows)

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {
        "pools": len(pools),
        "teams": len(teams),
        "projects": len(projects),
        "requests": len(request_rows),
        "allocations": len(allocation_rows),
        "capacity_changes": len(capacity_changes),
        "seconds": round(time.perf_counter() - started, 1),
        "users": {
            "researcher": users[0].username,
            "lead": leads[0].username,
            "executive": executive.username,
            "ops": ops.username,
        },
    }
