"""Applying an approved change (PRODUCT.md section 4): allocate, allocate later, wait, or go
back to executive review; idempotent under repeats and crashes."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction

from allocator import services
from allocator.models import Allocation, AllocationChange, LedgerEntry
from allocator.services import engine
from allocator.signals import change_settled
from allocator.waiting import when
from audit.models import AuditEvent
from notifications.models import Notification
from tests import factories
from tests.factories import in_days
from tests.support.invariants import violations

Status = AllocationChange.Status


@pytest.fixture
def settled():
    """Records every change_settled signal the engine sends."""
    seen = []

    def receiver(sender, *, change, outcome, reasons, actor, **kwargs):
        seen.append((change.pk, outcome, list(reasons)))

    change_settled.connect(receiver, dispatch_uid="test-settled")
    yield seen
    change_settled.disconnect(dispatch_uid="test-settled")


def test_fits_is_allocated_with_ledger_audit_signal_and_notice(
    make_change, requester, teammate, settled
):
    # given an approved change that fits
    change = make_change(gpus=16)
    # when it is applied
    outcome = services.allocation_change_apply(change_id=change.pk)
    # then one allocation exists over the asked-for range
    change.refresh_from_db()
    assert outcome == "applied"
    assert change.status == Status.APPLIED and change.attempts == 1
    allocation = Allocation.objects.get(change=change)
    assert (allocation.gpus, allocation.start, allocation.end) == (16, change.start, change.end)
    assert change.allocation == allocation
    # and the ledger, the audit trail, the signal and the team were told
    assert list(LedgerEntry.objects.values_list("kind", "change_id")) == [("grant", change.pk)]
    assert AuditEvent.objects.filter(action="allocation_change.apply", object_id=change.pk).exists()
    assert settled == [(change.pk, "applied", [])]
    told = set(
        Notification.objects.filter(kind="allocated").values_list("recipient__username", flat=True)
    )
    assert told == {requester.username, teammate.username}
    assert violations() == []


def test_applying_twice_makes_one_allocation(make_change, settled):
    # given an applied change
    change = make_change(gpus=8)
    services.allocation_change_apply(change_id=change.pk)
    # when the task is delivered again
    second = services.allocation_change_apply(change_id=change.pk)
    # then nothing more happens
    assert second is None
    assert Allocation.objects.filter(change=change).count() == 1
    assert LedgerEntry.objects.filter(change=change).count() == 1
    assert len(settled) == 1
    assert violations() == []


def test_crash_after_allocation_insert_rolls_back_and_rerun_allocates_once(
    make_change, monkeypatch
):
    # given a worker that dies after inserting the allocation, before the ledger row
    change = make_change(gpus=8)

    def crash(**kwargs):
        raise RuntimeError("worker died")

    monkeypatch.setattr(engine, "ledger", crash)
    with pytest.raises(RuntimeError):
        services.allocation_change_apply(change_id=change.pk)
    # then the whole apply rolled back, but the attempt was counted
    change.refresh_from_db()
    assert change.status == Status.PENDING and change.attempts == 1
    assert not Allocation.objects.exists()
    # when it runs again (the task is redelivered)
    monkeypatch.undo()
    services.allocation_change_apply(change_id=change.pk)
    # then exactly one allocation
    change.refresh_from_db()
    assert change.status == Status.APPLIED and change.attempts == 2
    assert Allocation.objects.filter(change=change).count() == 1
    assert violations() == []


def test_attempts_are_bounded_then_failed_and_ops_told(make_change, ops, settled, settings):
    # given a change whose apply keeps crashing
    change = make_change(gpus=8)
    limit = settings.ALLOTMENT["MAX_APPLY_ATTEMPTS"]
    for _ in range(limit):
        with pytest.raises(ZeroDivisionError):
            try:
                _apply_with(lambda **kw: 1 / 0, change)
            except ZeroDivisionError as exc:
                services.allocation_change_record_error(change_id=change.pk, error=str(exc))
                raise
    # then after the last allowed attempt it is failed, with the error kept
    change.refresh_from_db()
    assert change.status == Status.FAILED
    assert change.attempts == limit
    assert "division by zero" in change.last_error
    assert settled[-1][:2] == (change.pk, "failed")
    assert Notification.objects.filter(recipient=ops, kind="failed").count() == 1
    assert AuditEvent.objects.filter(action="allocation_change.fail").count() == 1
    # and another delivery does nothing
    assert services.allocation_change_apply(change_id=change.pk) is None
    assert not Allocation.objects.exists()


def test_claim_beyond_the_limit_marks_failed(make_change, settings, settled):
    # given a change that already used every attempt (the worker died each time)
    change = make_change(gpus=8, attempts=settings.ALLOTMENT["MAX_APPLY_ATTEMPTS"])
    # when it is delivered again
    assert services.allocation_change_apply(change_id=change.pk) is None
    # then it is failed instead of tried forever
    change.refresh_from_db()
    assert change.status == Status.FAILED
    assert settled == [(change.pk, "failed", [change.last_error])]


def _apply_with(ledger, change):
    original = engine.ledger
    engine.ledger = ledger
    try:
        return services.allocation_change_apply(change_id=change.pk)
    finally:
        engine.ledger = original


def test_short_capacity_waits_with_reason(make_change, pool, project, settled, requester):
    # given 60 of 64 GPUs held over the range
    factories.AllocationFactory(
        pool=pool, project=project, gpus=60, start=in_days(-1), end=in_days(60)
    )
    change = make_change(gpus=8)
    # when applied
    outcome = services.allocation_change_apply(change_id=change.pk)
    # then it waits, says why, and the requester is told
    change.refresh_from_db()
    assert outcome == "waiting" and change.status == Status.WAITING
    assert settled[0][1] == "waiting"
    assert "Only 4 of the 8 GPUs" in settled[0][2][0]
    assert Notification.objects.filter(recipient=requester, kind="waiting").exists()
    assert not Allocation.objects.filter(change=change).exists()


def test_waiting_reason_names_the_start_not_the_approval_time(
    make_change, pool, project, settled, requester
):
    # given 60 of 64 GPUs held until day 19, and a fixed request for 32 over days 1 to 25
    held = factories.AllocationFactory(
        pool=pool, project=project, gpus=60, start=in_days(-5), end=in_days(19)
    )
    change = make_change(gpus=32, start=in_days(1), end=in_days(25), approved_at=in_days(0))
    # when applied now
    assert services.allocation_change_apply(change_id=change.pk) == "waiting"
    # then its reason names its own start, what frees the GPUs, and the late start's effect,
    # in whole capitalised sentences, and so do its notice and its audit row
    reason = settled[0][2][0]
    assert reason == (
        f"Only 4 of the 32 GPUs are free on {when(change.start)}, 28 short. "
        f"They are free from {when(held.end)}, when allocation #{held.pk} ends (60 GPUs). "
        f"Served then, it starts {when(held.end)}, 18 days late: 6 of its 24 days. "
        f"It could be served with a start from {when(held.end)} (all 32 GPUs for its "
        "24 days), or with 4 GPUs now."
    )
    notice = Notification.objects.get(recipient=requester, kind="waiting")
    assert notice.message == f"32 GPUs of {pool} for {project} wait. {reason}"
    assert when(change.approved_at) not in notice.message  # the old reason named it


def test_big_fixed_request_waits_saying_nothing_on_record_frees_it(
    make_change, project, research, settled
):
    # given 256 GPUs with 64 held all month (the demo's central/A100)
    big_pool = factories.PoolFactory(cluster="central", gpu_model="A100", capacity=256)
    factories.DivisionShareFactory(division=research, pool=big_pool, gpus=256)
    held = factories.AllocationFactory(
        pool=big_pool, project=project, gpus=64, start=in_days(-1), end=in_days(30)
    )
    big = make_change(pool=big_pool, gpus=200, start=in_days(2), end=in_days(22))
    small = make_change(pool=big_pool, gpus=8, start=in_days(3), end=in_days(13))
    # when both are applied (in one batch: the big one's task takes the small one along)
    assert services.allocation_change_apply(change_id=big.pk) == "waiting"
    small.refresh_from_db()
    assert small.status == Status.APPLIED
    # then the 200 says which instant is short and what would serve it sooner
    reason = next(reasons for pk, _, reasons in settled if pk == big.pk)[0]
    assert reason.startswith(f"Only 192 of the 200 GPUs are free on {when(big.start)}, 8 short.")
    assert f"Nothing on record frees them before its end on {when(big.end)}." in reason
    assert f"with a start from {when(held.end)}" in reason
    assert reason.endswith("or with 192 GPUs now.")


def test_flexible_start_is_allocated_from_the_earliest_fit(make_change, pool, project):
    # given 60 of 64 GPUs held until day 10
    blocker = factories.AllocationFactory(
        pool=pool, project=project, gpus=60, start=in_days(-1), end=in_days(10)
    )
    change = make_change(gpus=8, start=in_days(1), end=in_days(6), flexible_start=True)
    # when applied
    assert services.allocation_change_apply(change_id=change.pk) == "applied"
    # then it starts when the GPUs free up, for the same duration
    allocation = Allocation.objects.get(change=change)
    assert allocation.start == blocker.end
    assert allocation.end - allocation.start == timedelta(days=5)


def test_flexible_start_beyond_the_horizon_waits(make_change, pool, project, settings):
    # given the pool full for longer than the horizon
    days = settings.ALLOTMENT["HORIZON_DAYS"] + 5
    factories.AllocationFactory(
        pool=pool, project=project, gpus=64, start=in_days(-1), end=in_days(days)
    )
    change = make_change(gpus=8, start=in_days(1), end=in_days(3), flexible_start=True)
    # then it waits
    assert services.allocation_change_apply(change_id=change.pk) == "waiting"


def test_future_arrival_counts_from_its_instant(make_change, pool):
    # given 64 GPUs now and 64 more arriving on day 20
    factories.CapacityChangeFactory(pool=pool, delta=64, effective_at=in_days(20))
    early = make_change(gpus=100, start=in_days(15), end=in_days(30), executive_reviewed=True)
    late = make_change(gpus=100, start=in_days(20), end=in_days(30), executive_reviewed=True)
    # then only the range after the arrival fits
    assert services.allocation_change_apply(change_id=late.pk) == "applied"
    early.refresh_from_db()
    assert early.status == Status.WAITING  # applied in the same batch


def test_share_rule_now_exceeded_goes_to_executive_review(
    make_change, research_share, pool, settled
):
    # given Research's share is 32 of 64 and it already holds 30
    research_share.gpus = 32
    research_share.save()
    factories.AllocationFactory(
        pool=pool, project=make_change().project, gpus=30, start=in_days(-1), end=in_days(60)
    )
    AllocationChange.objects.all().delete()
    change = make_change(gpus=8)
    # when applied
    outcome = services.allocation_change_apply(change_id=change.pk)
    # then it goes back to executive review with the reason in words
    change.refresh_from_db()
    assert outcome == "needs_review" and change.status == Status.NEEDS_REVIEW
    (_, kind, reasons) = settled[0]
    assert kind == "needs_review"
    assert reasons == [
        "would put Research at 59% of east/H100 (38 of 64 GPUs), above its 50% share (32 GPUs)"
    ]
    assert not Allocation.objects.filter(change=change).exists()


def test_executive_reviewed_change_skips_the_share_rule(make_change, research_share):
    # given a share of 0 but executives already reviewed the change
    research_share.gpus = 0
    research_share.save()
    change = make_change(gpus=8, executive_reviewed=True)
    # then it is applied
    assert services.allocation_change_apply(change_id=change.pk) == "applied"


def test_resume_after_review_then_apply(make_change, research_share, executive):
    # given a change sent back to executive review
    research_share.gpus = 0
    research_share.save()
    change = make_change(gpus=8)
    services.allocation_change_apply(change_id=change.pk)
    # when executives approve and the engine applies it again
    services.allocation_change_resume(change_id=change.pk, executive_reviewed=True, actor=executive)
    outcome = services.allocation_change_apply(change_id=change.pk)
    # then it is allocated
    assert outcome == "applied"


def test_cancel_only_from_needs_review(make_change, executive, research_share):
    change = make_change(gpus=8)
    with pytest.raises(Exception, match="pending"):
        services.allocation_change_cancel(change_id=change.pk, actor=executive)
    research_share.gpus = 0
    research_share.save()
    services.allocation_change_apply(change_id=change.pk)
    services.allocation_change_cancel(change_id=change.pk, actor=executive)
    change.refresh_from_db()
    assert change.status == Status.CANCELLED


def test_extension_moves_the_end(make_change, pool, project):
    # given an allocation and an approved extension of it
    allocation = factories.AllocationFactory(
        pool=pool, project=project, gpus=8, start=in_days(-1), end=in_days(10)
    )
    change = make_change(
        kind="extension", target_allocation=allocation, gpus=8, start=in_days(10), end=in_days(20)
    )
    # when applied
    assert services.allocation_change_apply(change_id=change.pk) == "applied"
    # then the allocation ends later, and the ledger says extend
    allocation.refresh_from_db()
    assert allocation.end == change.end
    assert LedgerEntry.objects.get(change=change).kind == "extend"
    assert violations() == []


def test_extension_of_a_released_allocation_fails(make_change, pool, project, ops):
    allocation = factories.AllocationFactory(
        pool=pool, project=project, state="released", start=in_days(-1), end=in_days(10)
    )
    change = make_change(
        kind="extension", target_allocation=allocation, start=in_days(10), end=in_days(20)
    )
    assert services.allocation_change_apply(change_id=change.pk) == "failed"
    change.refresh_from_db()
    assert "no longer active" in change.last_error


def test_start_in_the_past_allocates_from_now(make_change):
    change = make_change(gpus=8, start=in_days(-2), end=in_days(5))
    services.allocation_change_apply(change_id=change.pk)
    allocation = Allocation.objects.get(change=change)
    assert in_days(-1) < allocation.start and allocation.end == change.end


@pytest.mark.parametrize("status", [s for s in Status.values if s != "pending"])
def test_non_pending_changes_are_left_alone(make_change, status, pool, project):
    extra = {}
    if status == "applied":
        allocation = factories.AllocationFactory(pool=pool, project=project)
        extra = {"allocation": allocation, "applied_at": in_days(0)}
    change = make_change(status=status, attempts=0, **extra)
    assert services.allocation_change_apply(change_id=change.pk) is None
    change.refresh_from_db()
    assert change.status == status and change.attempts == 0


def test_unknown_change_is_ignored(db):
    assert services.allocation_change_apply(change_id=987654) is None


def test_ledger_refuses_a_second_grant_for_a_change(make_change):
    change = make_change(gpus=8)
    services.allocation_change_apply(change_id=change.pk)
    allocation = Allocation.objects.get(change=change)
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            allocation=allocation,
            change=change,
            kind="grant",
            gpus=8,
            start=allocation.start,
            end=allocation.end,
        )


def test_create_dispatches_on_commit(
    pool, project, requester, research_share, django_capture_on_commit_callbacks, monkeypatch
):
    # given the task's delay is watched
    sent = []
    from allocator import tasks

    monkeypatch.setattr(tasks.apply_change, "delay", lambda change_id: sent.append(change_id))
    # when a change is created inside a transaction
    with django_capture_on_commit_callbacks(execute=True):
        change = services.allocation_change_create(
            pool_id=pool.pk,
            project_id=project.pk,
            kind="new",
            target_allocation_id=None,
            gpus=8,
            start=in_days(1),
            end=in_days(5),
            flexible_start=False,
            priority=1,
            executive_reviewed=False,
            requested_by=requester,
            approved_at=in_days(0),
        )
        assert sent == []  # not before commit
    # then the task was sent after commit, and dispatched_at recorded
    assert sent == [change.pk]
    change.refresh_from_db()
    assert change.dispatched_at is not None


@pytest.mark.parametrize(
    "bad",
    [
        {"gpus": 0},
        {"gpus": -3},
        {"gpus": 10**9},
        {"end": "start"},
        {"kind": "steal"},
        {"priority": 9},
        {"pool_id": 987654},
        {"kind": "extension"},
    ],
)
def test_create_refuses_bad_input(pool, project, requester, bad):
    args = {
        "pool_id": pool.pk,
        "project_id": project.pk,
        "kind": "new",
        "target_allocation_id": None,
        "gpus": 8,
        "start": in_days(1),
        "end": in_days(5),
        "flexible_start": False,
        "priority": 1,
        "executive_reviewed": False,
        "requested_by": requester,
        "approved_at": in_days(0),
    }
    if bad.get("end") == "start":
        bad = {"end": args["start"]}
    args.update(bad)
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.allocation_change_create(**args)
    assert not AllocationChange.objects.exists()


def test_retry_of_failed_change(make_change, ops, requester, settled):
    change = make_change(status="failed", attempts=3, last_error="boom")
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        services.allocation_change_retry(change_id=change.pk, actor=requester)
    services.allocation_change_retry(change_id=change.pk, actor=ops)
    change.refresh_from_db()
    assert (change.status, change.attempts, change.last_error) == ("pending", 0, "")
    assert settled == [(change.pk, "retried", [])]
    assert services.allocation_change_apply(change_id=change.pk) == "applied"


@pytest.mark.parametrize(
    ("share", "blocked", "expected"),
    [(64, False, "allocated"), (64, True, "waiting"), (0, False, "pending_executive")],
)
def test_request_follows_its_change_through_the_receiver(
    make_change, research_share, pool, project, requester, share, blocked, expected
):
    # given an approved request and its change (the contract with requests_app)
    research_share.gpus = share
    research_share.save()
    if blocked:
        factories.AllocationFactory(
            pool=pool, project=project, gpus=64, start=in_days(-1), end=in_days(60)
        )
    change = make_change(gpus=8)
    req = factories.ComputeRequestFactory(
        project=project, pool=pool, requester=requester, status="approved", change=change
    )
    # when the engine applies the change
    services.allocation_change_apply(change_id=change.pk)
    # then the request moved with it, in the same transaction
    req.refresh_from_db()
    assert req.status == expected
    if expected == "pending_executive":
        assert req.executive_reasons and req.executive_reasons[0].startswith(
            "would put Research at"
        )


def test_project_end_moved_earlier_goes_back_to_executive_review(
    make_change, pool, project, requester, settled
):
    # given a request approved without executive review, for a period inside its project's
    # expected end at the time
    change = make_change(gpus=8, start=in_days(1), end=in_days(31))
    req = factories.ComputeRequestFactory(
        project=project, pool=pool, requester=requester, status="approved", change=change
    )
    # when the project's expected end moves earlier before the engine applies it
    project.expected_end = in_days(10).date()
    project.save()
    outcome = services.allocation_change_apply(change_id=change.pk)
    # then it goes back to executive review saying why, and nothing is allocated
    change.refresh_from_db()
    assert outcome == "needs_review" and change.status == Status.NEEDS_REVIEW
    reason = (
        f"runs until {change.end:%Y-%m-%d}, after project Atlas's expected end "
        f"({project.expected_end:%Y-%m-%d})"
    )
    assert settled == [(change.pk, "needs_review", [reason])]
    assert not Allocation.objects.filter(change=change).exists()
    req.refresh_from_db()
    assert req.status == "pending_executive"
    assert req.executive_reasons == [reason]


def test_period_ending_on_the_projects_last_day_is_applied(make_change, project):
    # given a change that ends at midnight after the project's expected last day
    change = make_change(gpus=8, start=in_days(1), end=in_days(31))
    end_day = in_days(31).date()
    change.end = change.end.replace(hour=0, minute=0, second=0)
    change.save()
    project.expected_end = end_day - timedelta(days=1)
    project.save()
    # when it is applied, then the expected end does not hold it back
    assert services.allocation_change_apply(change_id=change.pk) == "applied"


def test_executive_reviewed_change_is_applied_past_the_projects_end(make_change, project):
    # given executives already reviewed the change (they saw the project's end date)
    change = make_change(gpus=8, start=in_days(1), end=in_days(31), executive_reviewed=True)
    project.expected_end = in_days(10).date()
    project.save()
    # then the engine does not send it back again
    assert services.allocation_change_apply(change_id=change.pk) == "applied"
