"""Compute ops and team actions on allocations: reclaim, transfer, capacity changes, release;
expiry and reminders. Every one writes ledger and audit rows, and bad input changes nothing."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from allocator import services
from allocator.models import Allocation, AllocationChange, CapacityChange, LedgerEntry, Reclaim
from audit.models import AuditEvent
from notifications.models import Notification
from tests import factories
from tests.factories import in_days
from tests.support.invariants import violations


@pytest.fixture
def held(pool, project):
    return factories.AllocationFactory(
        pool=pool, project=project, gpus=32, start=in_days(-1), end=in_days(30)
    )


# --- reclaim ---


def test_reclaim_gives_notice_then_takes_effect(held, ops, requester, teammate):
    # when compute ops reclaim 24 of 32 GPUs with the default notice
    reclaim = services.allocation_reclaim(
        allocation_id=held.pk, actor=ops, new_gpus=8, reason="East needs room for the launch."
    )
    # then nothing changes yet, but the owners are told at once
    held.refresh_from_db()
    assert held.gpus == 32 and reclaim.status == "scheduled"
    assert reclaim.effective_at - timezone.now() > timedelta(hours=71)
    told = Notification.objects.filter(kind="reclaim").values_list("recipient__username", flat=True)
    assert set(told) == {requester.username, teammate.username}
    assert AuditEvent.objects.filter(action="reclaim.schedule").count() == 1
    # when the periodic task runs before the notice is over, nothing happens
    assert services.reclaims_apply_due() == 0
    # when it runs after
    assert services.reclaims_apply_due(now=reclaim.effective_at + timedelta(seconds=1)) == 1
    # then the allocation keeps 8 GPUs, with ledger and audit rows
    held.refresh_from_db()
    reclaim.refresh_from_db()
    assert held.gpus == 8 and held.state == "active" and reclaim.status == "applied"
    assert LedgerEntry.objects.filter(allocation=held, kind="reclaim").count() == 1
    assert AuditEvent.objects.filter(action="allocation.reclaim", object_id=held.pk).exists()
    # and running again does nothing more
    assert services.reclaims_apply_due(now=reclaim.effective_at + timedelta(seconds=2)) == 0


def test_reclaim_all_and_shorten(held, ops):
    services.allocation_reclaim(
        allocation_id=held.pk, actor=ops, new_gpus=0, reason="Hardware fault", notice_hours=0
    )
    held.refresh_from_db()
    assert held.state == "reclaimed"
    assert held.end <= timezone.now()


def test_reclaim_shorten_end(held, ops):
    new_end = in_days(10)
    services.allocation_reclaim(
        allocation_id=held.pk,
        actor=ops,
        new_gpus=32,
        new_end=new_end,
        reason="Quarter ends",
        notice_hours=0,
    )
    held.refresh_from_db()
    assert held.end == new_end and held.gpus == 32


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"new_gpus": -1}, "new_gpus"),
        ({"new_gpus": 33}, "new_gpus"),
        ({"new_gpus": 32}, "new_gpus"),  # nothing reclaimed
        ({"reason": "  "}, "reason"),
        ({"notice_hours": -5}, "notice_hours"),
        ({"notice_hours": 10**7}, "notice_hours"),
        ({"notice_hours": 24 * 40}, "notice_hours"),  # after the allocation ends
        ({"transfer_to_id": 987654}, "transfer_to"),
    ],
)
def test_reclaim_bad_input_changes_nothing(held, ops, args, field):
    # values the service gets already parsed (the forms and serializers refuse text for
    # numbers or dates: tests/allocator/test_pages.py and test_api.py)
    kwargs = {"allocation_id": held.pk, "actor": ops, "new_gpus": 8, "reason": "Why not"}
    kwargs.update(args)
    with pytest.raises(ValidationError) as caught:
        services.allocation_reclaim(**kwargs)
    assert field in caught.value.message_dict
    assert not Reclaim.objects.exists()
    held.refresh_from_db()
    assert held.gpus == 32


def test_reclaim_new_end_inside_notice_refused(held, ops):
    with pytest.raises(ValidationError) as caught:
        services.allocation_reclaim(
            allocation_id=held.pk, actor=ops, new_gpus=32, new_end=in_days(1), reason="x"
        )
    assert "new_end" in caught.value.message_dict


@pytest.mark.parametrize("persona", ["requester", "division_lead", "executive"])
def test_only_compute_ops_reclaim(held, persona, request):
    user = request.getfixturevalue(persona)
    with pytest.raises(PermissionDenied):
        services.allocation_reclaim(allocation_id=held.pk, actor=user, new_gpus=0, reason="x")
    assert not Reclaim.objects.exists()


def test_second_reclaim_while_one_is_scheduled_refused(held, ops):
    services.allocation_reclaim(allocation_id=held.pk, actor=ops, new_gpus=16, reason="x")
    with pytest.raises(ValidationError):
        services.allocation_reclaim(allocation_id=held.pk, actor=ops, new_gpus=8, reason="y")


# --- transfer ---


def test_transfer_gives_the_gpus_to_the_named_request(held, pool, ops, make_change, project):
    # given the pool full and an approved request waiting at the back of the queue
    factories.AllocationFactory(
        pool=pool, project=project, gpus=32, start=in_days(-1), end=in_days(30)
    )
    ahead = make_change(gpus=16, priority=3, approved_at=in_days(-5), executive_reviewed=True)
    services.allocation_change_apply(change_id=ahead.pk)
    named = make_change(gpus=16, priority=0, executive_reviewed=True)
    services.allocation_change_apply(change_id=named.pk)
    assert AllocationChange.objects.get(pk=named.pk).status == "waiting"
    # when compute ops transfer 16 GPUs to it, effective now
    services.allocation_transfer(
        allocation_id=held.pk,
        to_change_id=named.pk,
        actor=ops,
        new_gpus=16,
        reason="Launch priority",
        notice_hours=0,
    )
    # then the named request got them in the same transaction, ahead of the queue
    named.refresh_from_db()
    ahead.refresh_from_db()
    held.refresh_from_db()
    assert named.status == "applied" and ahead.status == "waiting"
    assert held.gpus == 16
    assert LedgerEntry.objects.filter(allocation=held, kind="transfer", change=named).count() == 1
    assert violations() == []


@pytest.mark.parametrize("status", ["applied", "failed", "cancelled", "needs_review"])
def test_transfer_only_to_pending_or_waiting(held, ops, make_change, status, pool, project):
    extra = {}
    if status == "applied":
        extra = {
            "allocation": factories.AllocationFactory(pool=pool, project=project),
            "applied_at": in_days(0),
        }
    target = make_change(status=status, **extra)
    with pytest.raises(ValidationError):
        services.allocation_transfer(
            allocation_id=held.pk, to_change_id=target.pk, actor=ops, new_gpus=0, reason="x"
        )


def test_transfer_to_other_pool_refused(held, ops, project):
    other = factories.AllocationChangeFactory(project=project)
    with pytest.raises(ValidationError) as caught:
        services.allocation_transfer(
            allocation_id=held.pk, to_change_id=other.pk, actor=ops, new_gpus=0, reason="x"
        )
    assert "transfer_to" in caught.value.message_dict


# --- capacity changes ---


def test_arrival_recorded_with_audit(pool, ops):
    change = services.capacity_change_create(
        pool_id=pool.pk, kind="arrival", delta=128, effective_at=in_days(10), actor=ops
    )
    assert change.delta == 128
    assert AuditEvent.objects.filter(action="capacity_change.create").count() == 1


def test_decommission_that_breaks_the_invariant_is_refused_naming_allocations(pool, project, ops):
    # given 64 GPUs with 40 + 16 held over the coming weeks
    a = factories.AllocationFactory(
        pool=pool, project=project, gpus=40, start=in_days(-1), end=in_days(20)
    )
    b = factories.AllocationFactory(
        pool=pool, project=project, gpus=16, start=in_days(5), end=in_days(15)
    )
    c = factories.AllocationFactory(
        pool=pool, project=project, gpus=8, start=in_days(25), end=in_days(40)
    )
    # when compute ops try to decommission 16 GPUs from day 3
    with pytest.raises(ValidationError) as caught:
        services.capacity_change_create(
            pool_id=pool.pk, kind="decommission", delta=-16, effective_at=in_days(3), actor=ops
        )
    # then it is refused, naming the allocations in the way (and not the one that fits)
    message = caught.value.message_dict["delta"][0]
    assert f"{a.project}'s 40 GPUs" in message and f"{b.project}'s 16 GPUs" in message
    assert f"{c.project}'s 8 GPUs" not in message
    assert "56 are allocated" in message
    assert CapacityChange.objects.filter(pool=pool).count() == 1


def test_decommission_that_fits_is_recorded(pool, project, ops):
    factories.AllocationFactory(
        pool=pool, project=project, gpus=40, start=in_days(-1), end=in_days(20)
    )
    services.capacity_change_create(
        pool_id=pool.pk, kind="decommission", delta=-24, effective_at=in_days(3), actor=ops
    )
    # a further decrease after the allocation ends is fine too
    services.capacity_change_create(
        pool_id=pool.pk, kind="repair", delta=-40, effective_at=in_days(21), actor=ops
    )
    assert violations() == []


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"delta": 0}, "delta"),
        ({"delta": -5}, "delta"),  # an arrival must add
        ({"kind": "decommission", "delta": 5}, "delta"),
        ({"delta": 10**12}, "delta"),
        ({"kind": "theft"}, "kind"),
        ({"pool_id": 987654}, "pool"),
        ({"effective_at": in_days(1).replace(tzinfo=None)}, "effective_at"),
    ],
)
def test_capacity_change_bad_input_changes_nothing(pool, ops, args, field):
    kwargs = {
        "pool_id": pool.pk,
        "kind": "arrival",
        "delta": 8,
        "effective_at": in_days(1),
        "actor": ops,
    }
    kwargs.update(args)
    with pytest.raises(ValidationError) as caught:
        services.capacity_change_create(**kwargs)
    assert field in caught.value.message_dict
    assert CapacityChange.objects.filter(pool=pool).count() == 1


def test_only_compute_ops_change_capacity(pool, executive):
    with pytest.raises(PermissionDenied):
        services.capacity_change_create(
            pool_id=pool.pk, kind="arrival", delta=8, effective_at=in_days(1), actor=executive
        )


# --- release ---


def test_team_member_releases_early(held, teammate):
    services.allocation_release(allocation_id=held.pk, actor=teammate)
    held.refresh_from_db()
    assert held.state == "released" and held.end <= timezone.now()
    assert LedgerEntry.objects.filter(allocation=held, kind="release").count() == 1
    assert AuditEvent.objects.filter(action="allocation.release").count() == 1


def test_release_before_start_keeps_the_range_and_frees_it(pool, project, requester):
    future = factories.AllocationFactory(
        pool=pool, project=project, gpus=64, start=in_days(5), end=in_days(10)
    )
    services.allocation_release(allocation_id=future.pk, actor=requester)
    future.refresh_from_db()
    assert future.state == "released"
    from allocator.selectors import fits

    assert fits(pool.pk, 64, in_days(5), in_days(10))


@pytest.mark.parametrize("persona", ["outsider", "division_lead", "ops", "executive"])
def test_only_the_team_releases(held, persona, request):
    user = request.getfixturevalue(persona)
    with pytest.raises(PermissionDenied):
        services.allocation_release(allocation_id=held.pk, actor=user)
    held.refresh_from_db()
    assert held.state == "active"


@pytest.mark.parametrize("state", ["ended", "released", "reclaimed"])
def test_release_of_inactive_allocation_refused(pool, project, requester, state):
    allocation = factories.AllocationFactory(pool=pool, project=project, state=state)
    with pytest.raises(ValidationError):
        services.allocation_release(allocation_id=allocation.pk, actor=requester)


def test_release_unknown_allocation(requester):
    with pytest.raises(Allocation.DoesNotExist):
        services.allocation_release(allocation_id=987654, actor=requester)


# --- expiry and reminders ---


def test_expiry_ends_allocations_at_their_end(pool, project):
    done = factories.AllocationFactory(
        pool=pool, project=project, start=in_days(-5), end=in_days(-0.01)
    )
    running = factories.AllocationFactory(pool=pool, project=project)
    assert services.allocations_expire() == 1
    done.refresh_from_db()
    running.refresh_from_db()
    assert (done.state, running.state) == ("ended", "active")
    assert LedgerEntry.objects.filter(allocation=done, kind="expire").count() == 1
    assert services.allocations_expire() == 0


def test_reminders_7_days_and_1_day_before_once_each(pool, project, requester):
    week = factories.AllocationFactory(
        pool=pool, project=project, start=in_days(-5), end=in_days(6)
    )
    day = factories.AllocationFactory(
        pool=pool, project=project, start=in_days(-5), end=in_days(0.5)
    )
    factories.AllocationFactory(pool=pool, project=project, start=in_days(-5), end=in_days(20))
    assert services.allocations_remind_ending() == 2
    assert services.allocations_remind_ending() == 0
    notes = Notification.objects.filter(recipient=requester, kind="ending_soon")
    assert notes.count() == 2
    week.refresh_from_db()
    day.refresh_from_db()
    assert week.reminded_7d_at and not week.reminded_1d_at
    assert day.reminded_1d_at and day.reminded_7d_at
    # a day before the first one ends, it gets its second reminder
    later = timezone.now() + timedelta(days=5.5)
    assert services.allocations_remind_ending(now=later) == 1


@pytest.mark.parametrize(
    ("ends_in", "words"),
    [
        (timedelta(days=4, hours=6), "end in 4 days"),
        (timedelta(days=6, hours=23), "end in 7 days"),
        (timedelta(hours=20), "end in 20 hours"),
    ],
)
def test_the_reminder_says_when_the_allocation_really_ends(
    pool, project, requester, ends_in, words
):
    # given an allocation whose first reminder goes out late (it was made 4 days before its end)
    now = timezone.now()
    factories.AllocationFactory(pool=pool, project=project, start=in_days(-1), end=now + ends_in)

    # when the reminders run
    services.allocations_remind_ending(now=now)

    # then the notice names the real time left, not "in a week"
    (note,) = Notification.objects.filter(recipient=requester, kind="ending_soon")
    assert words in note.message and "in a week" not in note.message


def test_resend_stuck_changes_only_old_pending(make_change, monkeypatch):
    sent = []
    from allocator import tasks

    monkeypatch.setattr(tasks.apply_change, "delay", lambda cid: sent.append(cid))
    old = make_change(dispatched_at=in_days(-1))
    make_change(dispatched_at=timezone.now())
    make_change(status="waiting", dispatched_at=in_days(-1))
    assert services.changes_resend_stuck() == 1
    assert sent == [old.pk]
    old.refresh_from_db()
    assert old.dispatched_at > in_days(-0.01)


def test_decrease_below_zero_says_what_it_would_leave(pool, ops):
    # given an empty 64-GPU pool: removing 100 leaves -36, whatever is allocated
    with pytest.raises(ValidationError) as caught:
        services.capacity_change_create(
            pool_id=pool.pk,
            kind="decommission",
            delta=-100,
            effective_at=in_days(1),
            actor=ops,
        )
    [message] = caught.value.message_dict["delta"]
    assert "would leave -36 GPUs: it has only 64" in message
    assert "Allocations in the way" not in message and "0 are allocated" not in message


def test_decrease_refusal_names_allocations_by_project_not_id(pool, project, ops):
    held = factories.AllocationFactory(pool=pool, project=project, gpus=60, end=in_days(30))
    with pytest.raises(ValidationError) as caught:
        services.capacity_change_create(
            pool_id=pool.pk,
            kind="decommission",
            delta=-10,
            effective_at=in_days(1),
            actor=ops,
        )
    [message] = caught.value.message_dict["delta"]
    assert f"Allocations in the way: {project}'s 60 GPUs" in message
    assert f"#{held.pk}" not in message
