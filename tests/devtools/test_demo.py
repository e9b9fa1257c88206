import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from allocator.models import CapacityChange, DivisionShare, Pool
from org.models import Division, Membership, Project, RoleGrant, Team
from requests_app.models import ComputeRequest
from requests_app.workflow import Status

MODELS = [
    Division,
    Team,
    Membership,
    Project,
    RoleGrant,
    Pool,
    CapacityChange,
    DivisionShare,
    ComputeRequest,
]


def snapshot():
    counts = {m.__name__: m.objects.count() for m in MODELS}
    counts["User"] = get_user_model().objects.count()
    return counts


@pytest.mark.django_db(transaction=True)
def test_demo_loads_twice_without_duplicates(settings):
    settings.ALLOTMENT = {**settings.ALLOTMENT, "DEMO": True}
    call_command("seed_demo")
    first = snapshot()
    call_command("seed_demo")
    assert snapshot() == first
    assert {p.name for p in Pool.objects.all()} == {"east/H100", "west/H200", "central/A100"}
    users = set(get_user_model().objects.values_list("username", flat=True))
    assert {"rita", "paul", "rlead", "alead", "exec", "ops", "admin"} <= users
    # requests in every state, made through the real workflow and engine
    assert set(ComputeRequest.objects.values_list("status", flat=True)) == set(Status.values)
    big = ComputeRequest.objects.get(gpus=300)
    assert big.status == Status.PENDING_EXECUTIVE
    assert any("300 GPUs" in reason for reason in big.executive_reasons)


@pytest.mark.django_db(transaction=True)
def test_demo_capacities_shares_and_future_arrival(settings):
    settings.ALLOTMENT = {**settings.ALLOTMENT, "DEMO": True}
    call_command("seed_demo")
    from allocator.selectors import max_capacity, pools_status

    now = {s.pool.name: s.capacity for s in pools_status()}
    assert now == {"east/H100": 1024, "west/H200": 512, "central/A100": 256}
    west = Pool.objects.get(cluster="west")
    assert max_capacity(west.pk) > 512  # the scheduled arrival
    research = DivisionShare.objects.get(division__slug="research", pool__cluster="east")
    assert research.gpus == 614  # 60% of 1024


@pytest.mark.django_db
def test_demo_refused_outside_demo_mode(settings):
    settings.ALLOTMENT = {**settings.ALLOTMENT, "DEMO": False}
    with pytest.raises(CommandError, match="password"):
        call_command("seed_demo")
    assert get_user_model().objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_demo_shows_the_queue_at_work_on_central_a100(settings):
    """Small requests are allocated beside a big fixed one that cannot be placed, and the
    waiting requests say, in numbers, why and what serves them (issue 12)."""
    from allocator.waiting import when
    from notifications.models import Notification

    settings.ALLOTMENT = {**settings.ALLOTMENT, "DEMO": True}
    call_command("seed_demo")
    by_tag = {
        tag: ComputeRequest.objects.get(goal__startswith=f"[demo] {tag}:")
        for tag in ("waiting", "served-beside-8", "served-beside-16", "waiting-late")
    }
    # the big fixed 200 waits; the 8 and the 16 behind it are allocated from the idle GPUs
    assert by_tag["waiting"].status == Status.WAITING
    assert by_tag["served-beside-8"].status == Status.ALLOCATED
    assert by_tag["served-beside-16"].status == Status.ALLOCATED
    big = by_tag["waiting"]
    notice = Notification.objects.get(
        recipient__username="rita", kind="waiting", message__contains="200 GPUs"
    )
    assert f"Only 192 of the 200 GPUs are free on {when(big.start)}, 8 short." in notice.message
    assert "or with 192 GPUs now." in notice.message
    late = by_tag["waiting-late"]
    assert late.status == Status.WAITING
    late_notice = Notification.objects.get(
        recipient__username="rita", kind="waiting", message__contains="196 GPUs"
    )
    assert "18 days late: 6 of its 24 days" in late_notice.message


@pytest.mark.django_db(transaction=True)
def test_demo_rlead_researches_on_alignment_and_cannot_decide_her_own_request(settings):
    from requests_app.policies import can_decide
    from tests import factories

    settings.ALLOTMENT = {**settings.ALLOTMENT, "DEMO": True}
    call_command("seed_demo")
    rlead = get_user_model().objects.get(username="rlead")
    # she is a member of Alignment and leads Research
    assert Membership.objects.filter(user=rlead, team__slug="alignment").exists()
    # a request she files for an Alignment project waits for its division review...
    compass = Project.objects.get(name="Compass")
    mine = factories.ComputeRequestFactory(
        project=compass,
        pool=Pool.objects.get(cluster="central"),
        requester=rlead,
        status=Status.PENDING_DIVISION,
    )
    # ...which she may not decide
    verdict = can_decide(rlead, mine)
    assert not verdict
    assert "You filed this request" in str(verdict.reason)
