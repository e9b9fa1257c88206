"""Batched applies (issue 13 item 3): a worker claims a pool's pending first attempts together
and applies them in one transaction with one queue-serving pass. Each change is applied exactly
once, with the outcome and reasons it would have had applied alone in queue order; two workers
racing over one pool never take the same changes; a change that fails does not take the batch
with it; the queries of a batch do not grow per change beyond a small constant."""

from __future__ import annotations

import random
import re
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from allocator import services
from allocator.models import Allocation, AllocationChange, LedgerEntry, Priority
from allocator.selectors import queue_key
from allocator.services import engine
from allocator.signals import change_settled
from tests import factories
from tests.factories import in_days
from tests.support.invariants import violations

Status = AllocationChange.Status


@pytest.fixture
def settled():
    seen: dict[int, tuple[str, list[str]]] = {}

    def receiver(sender, *, change, outcome, reasons, actor, **kwargs):
        seen[change.pk] = (str(outcome), list(reasons))

    change_settled.connect(receiver, dispatch_uid="test-batch-settled")
    yield seen
    change_settled.disconnect(dispatch_uid="test-batch-settled")


def _batch_size(settings, n: int) -> None:
    settings.ALLOTMENT = {**settings.ALLOTMENT, "APPLY_BATCH_SIZE": n}


# --- the same outcomes as one at a time ------------------------------------------------------


def _build_case(rng: random.Random, *, pool_name: str, projects, divisions, plan):
    """One pool built from `plan` (the same plan builds the same pool twice)."""
    pool = factories.PoolFactory(cluster=pool_name, gpu_model="H100", capacity=plan["capacity"])
    if plan["arrival"]:
        factories.CapacityChangeFactory(
            pool=pool, delta=plan["arrival"][1], effective_at=plan["arrival"][0]
        )
    for division, share in zip(divisions, plan["shares"], strict=True):
        factories.DivisionShareFactory(division=division, pool=pool, gpus=share)
    held = []
    for p, gpus, start, end in plan["held"]:
        held.append(
            factories.AllocationFactory(
                pool=pool, project=projects[p], gpus=gpus, start=start, end=end
            )
        )
    changes = []
    for c in plan["changes"]:
        kwargs = dict(c)
        project = projects[kwargs.pop("project")]
        target = kwargs.pop("target")
        if target is not None:
            kwargs["kind"] = "extension"
            kwargs["target_allocation"] = held[target]
            kwargs["project"] = held[target].project
        else:
            kwargs["project"] = project
        changes.append(factories.AllocationChangeFactory(pool=pool, **kwargs))
    return pool, changes


def _random_plan(rng: random.Random, n_projects: int) -> dict:
    capacity = rng.choice([48, 64])
    base = in_days(0) + timedelta(hours=2)  # every start in the future: `now` plays no part
    held = []
    for _ in range(rng.randint(0, 3)):  # at most 48 GPUs: the record itself never over-allocates
        start = base + timedelta(hours=rng.randint(-48, 48))
        held.append(
            (
                rng.randrange(n_projects),
                rng.choice([4, 8, 16]),
                start,
                start + timedelta(days=rng.randint(2, 20)),
            )
        )
    changes = []
    approved = in_days(-1)
    for _ in range(rng.randint(6, 14)):
        start = base + timedelta(hours=rng.randint(0, 24 * 12))
        target = rng.randrange(len(held)) if held and rng.random() < 0.15 else None
        end = start + timedelta(days=rng.randint(1, 25))
        if target is not None:
            end = held[target][3] + timedelta(days=rng.randint(1, 10))
        changes.append(
            {
                "project": rng.randrange(n_projects),
                "target": target,
                "gpus": rng.choice([2, 4, 8, 12, 16, 24]),
                "start": start,
                "end": end,
                "flexible_start": rng.random() < 0.4,
                "priority": rng.choice(list(Priority.values)),
                "executive_reviewed": rng.random() < 0.3,
                "approved_at": approved + timedelta(minutes=rng.randint(0, 600)),
            }
        )
    return {
        "capacity": capacity,
        "arrival": (base + timedelta(days=rng.randint(1, 10)), rng.choice([8, 16]))
        if rng.random() < 0.4
        else None,
        "shares": [rng.choice([16, capacity // 2, capacity]), rng.choice([16, capacity])],
        "held": held,
        "changes": changes,
    }


def _normalised(text: str, pool) -> str:
    # Allocation and capacity-change ids and the pool's name differ between the two copies.
    return re.sub(r"#\d+", "#N", text.replace(str(pool), "POOL"))


def _outcomes(pool, changes, settled):
    found = []
    for c in changes:
        c.refresh_from_db()
        outcome, reasons = settled.get(c.pk, ("none", []))
        allocation = Allocation.objects.filter(pk=c.allocation_id).first()
        found.append(
            (
                c.status,
                outcome,
                [_normalised(r, pool) for r in reasons],
                (allocation.gpus, allocation.start, allocation.end) if allocation else None,
            )
        )
    return found


@pytest.mark.parametrize("seed", range(12))
def test_a_batch_has_the_outcomes_of_one_at_a_time_in_queue_order(
    db, settings, settled, research, applications, seed
):
    # given two copies of one generated pool: waiting and fitting changes, tight shares,
    # extensions, arrivals, flexible starts, priorities, and projects ending mid-way
    rng = random.Random(seed)
    teams = [factories.TeamFactory(division=d) for d in (research, applications)]
    projects = [
        factories.ProjectFactory(
            team=teams[i % 2], expected_end=in_days(rng.choice([8, 15, 200])).date()
        )
        for i in range(4)
    ]
    plan = _random_plan(rng, len(projects))
    alone_pool, alone = _build_case(
        rng,
        pool_name=f"alone{seed}",
        projects=projects,
        divisions=[research, applications],
        plan=plan,
    )
    batch_pool, batch = _build_case(
        rng,
        pool_name=f"batch{seed}",
        projects=projects,
        divisions=[research, applications],
        plan=plan,
    )

    # when one copy is applied one change at a time, in queue order
    _batch_size(settings, 1)
    for c in sorted(alone, key=queue_key):
        services.allocation_change_apply(change_id=c.pk)
    # and the other in one batch, started by whichever change's task came first
    _batch_size(settings, 50)
    services.allocation_change_apply(change_id=rng.choice(batch).pk)

    # then the batch was one claim and one pass
    assert not AllocationChange.objects.filter(pool=batch_pool, status=Status.PENDING).exists()
    assert set(
        AllocationChange.objects.filter(pool=batch_pool).values_list("attempts", flat=True)
    ) == {1}
    # and every change has the same outcome, reasons and allocation as applied alone
    assert _outcomes(batch_pool, batch, settled) == _outcomes(alone_pool, alone, settled)
    # and each applied change has exactly one grant or extend ledger row
    for c in batch:
        rows = LedgerEntry.objects.filter(change=c, kind__in=["grant", "extend"]).count()
        assert rows == (1 if c.status == Status.APPLIED else 0)
    assert violations() == []


def test_the_cases_cover_every_outcome(db, settings, settled, research, applications):
    # the generated cases above are worth comparing: together they allocate, wait, send back
    # for the share and for the project's end, and fail an extension
    seen = set()
    reasons = set()
    for seed in range(12):
        rng = random.Random(seed)
        teams = [factories.TeamFactory(division=d) for d in (research, applications)]
        projects = [
            factories.ProjectFactory(
                team=teams[i % 2], expected_end=in_days(rng.choice([8, 15, 200])).date()
            )
            for i in range(4)
        ]
        plan = _random_plan(rng, len(projects))
        _, batch = _build_case(
            rng,
            pool_name=f"cover{seed}",
            projects=projects,
            divisions=[research, applications],
            plan=plan,
        )
        services.allocation_change_apply(change_id=batch[0].pk)
        for c in batch:
            outcome, why = settled[c.pk]
            seen.add(outcome)
            reasons.update(w.split(" ")[0] for w in why if outcome == "needs_review")
    assert {"applied", "waiting", "needs_review"} <= seen
    assert {"would", "runs"} <= reasons  # the share rule and the project's end


# --- failures --------------------------------------------------------------------------------


def test_a_change_failing_in_a_batch_does_not_lose_the_others(make_change, monkeypatch, settled):
    # given five pending changes of one pool, one of whose apply raises
    changes = [make_change(gpus=4, start=in_days(1 + i)) for i in range(5)]
    bad = changes[2]
    real_ledger = engine.ledger

    def ledger(*, allocation, kind, change=None, **kwargs):
        if change is not None and change.pk == bad.pk:
            raise RuntimeError("cannot write this one")
        return real_ledger(allocation=allocation, kind=kind, change=change, **kwargs)

    monkeypatch.setattr(engine, "ledger", ledger)
    # when the first change's task applies them as a batch
    outcome = services.allocation_change_apply(change_id=changes[0].pk)
    # then the batch rolled back and each change was tried again on its own: the others are
    # applied once, the failing one keeps its error and its two attempts
    assert outcome == "applied"
    for c in changes:
        c.refresh_from_db()
    assert [c.status for c in changes] == ["applied", "applied", "pending", "applied", "applied"]
    assert [c.attempts for c in changes] == [2, 2, 2, 2, 2]
    assert "cannot write this one" in bad.last_error
    assert LedgerEntry.objects.filter(kind="grant").count() == 4
    assert violations() == []


def test_a_change_that_always_fails_still_ends_failed(make_change, monkeypatch, settings, ops):
    # given a change whose apply always raises, batched with others
    changes = [make_change(gpus=4, start=in_days(1 + i)) for i in range(3)]
    poison = changes[0]

    def crash(*args, **kwargs):
        raise RuntimeError("poison")

    monkeypatch.setattr(engine, "_settle_applied", crash)
    # when its task is delivered until it gives up (the task records each error)
    for _ in range(settings.ALLOTMENT["MAX_APPLY_ATTEMPTS"] + 1):
        try:
            services.allocation_change_apply(change_id=poison.pk)
        except RuntimeError as exc:
            services.allocation_change_record_error(change_id=poison.pk, error=str(exc))
    # then it is failed after MAX_APPLY_ATTEMPTS, the first of them the batch's
    poison.refresh_from_db()
    assert poison.status == Status.FAILED
    assert poison.attempts == settings.ALLOTMENT["MAX_APPLY_ATTEMPTS"]


def test_a_retried_change_is_applied_alone(make_change):
    # given a change already tried once (a batch that died), and a fresh one of the same pool
    tried = make_change(gpus=4)
    AllocationChange.objects.filter(pk=tried.pk).update(attempts=1)
    fresh = make_change(gpus=4)
    # when the tried change's task runs
    services.allocation_change_apply(change_id=tried.pk)
    # then it was applied on its own: the fresh one waits for its own task
    tried.refresh_from_db()
    fresh.refresh_from_db()
    assert (tried.status, tried.attempts) == ("applied", 2)
    assert (fresh.status, fresh.attempts) == ("pending", 0)


def test_a_batch_never_takes_another_pools_changes(make_change, project, requester):
    other_pool = factories.PoolFactory(cluster="west", gpu_model="H200", capacity=64)
    here = [make_change(gpus=4) for _ in range(3)]
    there = factories.AllocationChangeFactory(
        pool=other_pool, project=project, requested_by=requester, executive_reviewed=True
    )
    services.allocation_change_apply(change_id=here[0].pk)
    assert set(
        AllocationChange.objects.filter(pk__in=[c.pk for c in here]).values_list(
            "status", flat=True
        )
    ) == {"applied"}
    there.refresh_from_db()
    assert (there.status, there.attempts) == ("pending", 0)


# --- query count -----------------------------------------------------------------------------


def _batch_queries(make_change, pool, n: int) -> int:
    changes = [make_change(pool=pool, gpus=1, start=in_days(1), end=in_days(2)) for _ in range(n)]
    with CaptureQueriesContext(connection) as queries:
        services.allocation_change_apply(change_id=changes[0].pk)
    assert (
        AllocationChange.objects.filter(pk__in=[c.pk for c in changes], status="applied").count()
        == n
    )
    return len(queries)


# Per applied change: the allocation, its ledger row (and the connector's look-up of the pool's
# scheduler, the outbox receiver), the request hand-back's look-up, and the team's notice.
# Everything else is once per batch: the claim, the locks, the pool's rows, the shares, the
# queue, the team's members, the change rows and audit rows (one statement each), the emails.
PER_CHANGE = 5


def test_queries_per_batch_grow_by_a_small_constant_per_change(
    make_change, research, research_share
):
    pools = [
        factories.PoolFactory(cluster=f"q{i}", gpu_model="H100", capacity=64) for i in range(3)
    ]
    for p in pools:
        factories.DivisionShareFactory(division=research, pool=p, gpus=64)
    one = _batch_queries(make_change, pools[0], 1)
    five = _batch_queries(make_change, pools[1], 5)
    twenty = _batch_queries(make_change, pools[2], 20)
    assert five - one <= 4 * PER_CHANGE, (one, five, twenty)
    assert twenty - five <= 15 * PER_CHANGE, (one, five, twenty)
    # and a batch of 20 costs far less than 20 single applies
    assert twenty < 20 * one / 2, (one, twenty)


# --- two workers racing over one pool --------------------------------------------------------


def _apply_like_the_task(change_id: int, attempts: int = 200) -> None:
    for _ in range(attempts):
        try:
            services.allocation_change_apply(change_id=change_id)
            return
        except services.ChangeBusy:
            time.sleep(0.02)
    raise AssertionError(f"change {change_id} stayed busy")


@pytest.mark.slow
def test_workers_racing_over_one_pool_never_apply_a_change_twice(transactional_db):
    # given 60 pending changes on one pool (more than it holds) and 20 on another
    pool = factories.PoolFactory(cluster="east", gpu_model="H100", capacity=128)
    other = factories.PoolFactory(cluster="west", gpu_model="H200", capacity=64)
    rng = random.Random(5)
    changes = []
    for i in range(80):
        start = in_days(rng.randint(1, 5))
        changes.append(
            factories.AllocationChangeFactory(
                pool=pool if i < 60 else other,
                gpus=rng.choice([2, 4, 8]),
                start=start,
                end=start + timedelta(days=rng.randint(1, 6)),
                flexible_start=i % 4 == 0,
                priority=rng.randint(0, 3),
                executive_reviewed=True,
            )
        )
    # when four workers (threads, each with its own connection) take every change's task,
    # each task delivered twice, in random order
    jobs = [c.pk for c in changes for _ in range(2)]
    rng.shuffle(jobs)
    lock = threading.Lock()
    errors: list[Exception] = []
    barrier = threading.Barrier(4)

    def worker():
        try:
            barrier.wait()
            while True:
                with lock:
                    if not jobs:
                        return
                    change_id = jobs.pop()
                _apply_like_the_task(change_id)
        except Exception as exc:  # asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # then every change was settled exactly once and the pool never over-allocated
    assert errors == []
    statuses = set(AllocationChange.objects.values_list("status", flat=True))
    assert statuses <= {"applied", "waiting"}, statuses
    for c in AllocationChange.objects.all():
        grants = LedgerEntry.objects.filter(change=c, kind="grant").count()
        assert grants == (1 if c.status == "applied" else 0), c
        assert c.attempts <= 2, c  # a batch's claim, at most one more from a racing task
    assert violations() == []
    # and the workers really applied changes in batches (rows inserted by one transaction)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM allocator_allocation GROUP BY xmin::text::bigint")
        sizes = sorted(n for (n,) in cursor.fetchall())
    assert sizes[-1] > 1, sizes
