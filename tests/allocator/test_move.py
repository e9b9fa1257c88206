"""Compute ops move GPUs by picking (issue 14): the guided move, scheduled reclaims listed,
changed and cancelled until they take effect, a project wound down in one action, and the
team's partial release after a confirmation. Nobody reads or types an internal id."""

import re
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from allocator import services
from allocator.models import Allocation, LedgerEntry, Reclaim
from audit.models import AuditEvent
from notifications.models import Notification
from tests import factories
from tests.factories import in_days
from tests.support.navigation import walk


@pytest.fixture
def scene(make_change, pool, team, requester):
    """A full 64-GPU pool: Sunset (winding down) and Busy hold 32 each; request for 32 waits."""
    sunset = factories.ProjectFactory(team=team, name="Sunset", state="winding_down")
    busy = factories.ProjectFactory(team=team, name="Busy")
    winding = factories.AllocationFactory(pool=pool, project=sunset, gpus=32, end=in_days(60))
    other = factories.AllocationFactory(pool=pool, project=busy, gpus=32, end=in_days(60))
    change = make_change(gpus=32, start=in_days(1), end=in_days(20))
    services.allocation_change_apply(change_id=change.pk)
    change.refresh_from_db()
    assert change.status == "waiting"
    req = factories.ComputeRequestFactory(
        project=change.project, pool=pool, requester=requester, change=change, status="waiting"
    )
    return {"winding": winding, "other": other, "change": change, "request": req}


# --- services ---


def test_move_to_a_waiting_request_takes_effect_after_the_notice(scene, ops, requester, teammate):
    winding, change = scene["winding"], scene["change"]
    # when compute ops move Sunset's 32 GPUs to the waiting request
    [reclaim] = services.gpus_move(
        actor=ops, takes={winding.pk: 32}, to_change_id=change.pk, reason="Sunset ends."
    )
    # then the owners are told once each, in words with the request number, no change id
    notices = Notification.objects.filter(kind="reclaim")
    assert notices.count() == 2  # requester and teammate, one each
    text = notices.first().message
    assert f"request #{scene['request'].pk}" in text and "change #" not in text
    # and when the notice is over, the GPUs go to the request in the same run
    services.reclaims_apply_due(now=reclaim.effective_at + timedelta(seconds=1))
    change.refresh_from_db()
    winding.refresh_from_db()
    assert winding.state == "reclaimed" and change.status == "applied"
    assert LedgerEntry.objects.filter(allocation=winding, kind="transfer").count() == 1


def test_move_is_all_or_nothing(scene, ops):
    winding, other = scene["winding"], scene["other"]
    with pytest.raises(ValidationError) as caught:
        services.gpus_move(
            actor=ops, takes={winding.pk: 16, other.pk: 999}, to_change_id=None, reason="x"
        )
    assert "holds only 32 GPUs" in " ".join(caught.value.messages)
    assert not Reclaim.objects.exists()


def test_move_by_non_ops_is_refused(scene, requester):
    with pytest.raises(PermissionDenied):
        services.gpus_move(
            actor=requester, takes={scene["winding"].pk: 8}, to_change_id=None, reason="x"
        )


def test_cancel_a_scheduled_reclaim(scene, ops, requester):
    winding = scene["winding"]
    reclaim = services.allocation_reclaim(
        allocation_id=winding.pk, actor=ops, new_gpus=0, reason="Room for the launch."
    )
    # when compute ops cancel it before it takes effect
    services.reclaim_cancel(reclaim_id=reclaim.pk, actor=ops, reason="Launch moved.")
    reclaim.refresh_from_db()
    assert reclaim.status == "cancelled"
    event = AuditEvent.objects.get(action="reclaim.cancel")
    assert "Launch moved." in event.message
    assert Notification.objects.filter(
        recipient=requester, message__startswith="Reclaim called off"
    ).exists()
    # then it never takes effect
    assert services.reclaims_apply_due(now=reclaim.effective_at + timedelta(seconds=1)) == 0
    winding.refresh_from_db()
    assert winding.gpus == 32 and winding.state == "active"
    # and a second cancel says why it cannot
    with pytest.raises(ValidationError, match="already cancelled"):
        services.reclaim_cancel(reclaim_id=reclaim.pk, actor=ops)


def test_change_a_scheduled_reclaim(scene, ops):
    winding = scene["winding"]
    old = services.allocation_reclaim(
        allocation_id=winding.pk, actor=ops, new_gpus=0, reason="Room."
    )
    new = services.reclaim_change(
        reclaim_id=old.pk, actor=ops, new_gpus=16, notice_hours=24, reason="Half is enough."
    )
    old.refresh_from_db()
    assert old.status == "cancelled" and new.status == "scheduled" and new.new_gpus == 16
    assert AuditEvent.objects.filter(action="reclaim.change", object_id=old.pk).exists()
    # bad new terms change nothing
    with pytest.raises(ValidationError):
        services.reclaim_change(reclaim_id=new.pk, actor=ops, new_gpus=99, reason="x")
    new.refresh_from_db()
    assert new.status == "scheduled"


def test_wind_down_reclaims_everything_and_tells_the_team_once(pool, team, ops, requester):
    sunset = factories.ProjectFactory(team=team, name="Sunset", expected_end=in_days(10).date())
    for _ in range(3):
        factories.AllocationFactory(pool=pool, project=sunset, gpus=8, end=in_days(40))
    reclaims = services.project_wind_down(
        project_id=sunset.pk, actor=ops, reason="Project over.", at_expected_end=True
    )
    assert len(reclaims) == 3 and {r.new_gpus for r in reclaims} == {0}
    assert all(r.effective_at.date() == sunset.expected_end for r in reclaims)
    assert Notification.objects.filter(recipient=requester, kind="reclaim").count() == 1


def test_partial_release(pool, project, requester, research):
    factories.DivisionShareFactory(division=research, pool=pool, gpus=64)
    allocation = factories.AllocationFactory(pool=pool, project=project, gpus=32, end=in_days(30))
    services.allocation_release(allocation_id=allocation.pk, actor=requester, gpus=16)
    allocation.refresh_from_db()
    assert allocation.gpus == 16 and allocation.state == "active"
    end = in_days(5)
    services.allocation_release(allocation_id=allocation.pk, actor=requester, end=end)
    allocation.refresh_from_db()
    assert allocation.end == end and allocation.state == "active"
    assert LedgerEntry.objects.filter(allocation=allocation, kind="release").count() == 2
    with pytest.raises(ValidationError) as caught:
        services.allocation_release(
            allocation_id=allocation.pk, actor=requester, gpus=17, end=in_days(9)
        )
    assert set(caught.value.message_dict) == {"gpus", "end"}


# --- pages ---


def _ids_in(text: str) -> list[str]:
    """Internal numbers a person would have to read: "allocation #N" or "change #N"."""
    return re.findall(r"(?:allocation|change) #\d+", text, flags=re.I)


def test_move_page_picks_preview_then_confirm(client, scene, ops):
    winding, req = scene["winding"], scene["request"]
    client.force_login(ops)
    # the destination is offered by its request number
    page = client.get(reverse("allocator:ops-move")).content.decode()
    assert f"Request #{req.pk}" in page and not _ids_in(page)
    # choosing it lists the sources of its pool, the winding-down project first
    page = client.get(reverse("allocator:ops-move"), {"to": req.pk}).content.decode()
    assert page.index("Sunset") < page.index("Busy")
    form = {"to": req.pk, f"take-{winding.pk}": "32", "reason": "Sunset ends.", "notice_hours": ""}
    # preview: the effect on both sides, nothing happens yet
    response = client.post(reverse("allocator:ops-move"), form)
    text = response.content.decode()
    assert response.status_code == 200 and "nothing has happened yet" in text
    assert "gives 32 of its 32 GPUs, keeps 0" in text and "enough to start" in text
    assert not Reclaim.objects.exists()
    # confirm
    response = client.post(reverse("allocator:ops-move"), {**form, "confirm": "1"}, follow=True)
    text = response.content.decode()
    assert f"32 GPUs move to request #{req.pk}" in text and not _ids_in(text)
    assert Reclaim.objects.get().transfer_to_id == scene["change"].pk
    # the console lists it, in words
    assert "Scheduled reclaims and transfers" in text and "all 32 GPUs go back" in text


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"reason": "x"}, "Choose at least one allocation"),
        ({"take-W": "-3", "reason": "x"}, "cannot be negative"),
        ({"take-W": "abc", "reason": "x"}, "whole numbers"),
        ({"take-W": "8", "reason": ""}, "Reason"),
        ({"take-W": "8", "reason": "x", "notice_hours": "99999999"}, "Notice"),
        ({"take-W": "8", "reason": "x", "to": "987654"}, "Choose a waiting or approved request"),
        ({"take-W": "999", "reason": "x"}, "holds only 32 GPUs"),
    ],
)
def test_move_page_bad_input_says_why_and_changes_nothing(client, scene, ops, form, error):
    client.force_login(ops)
    form = {k.replace("W", str(scene["winding"].pk)): v for k, v in form.items()}
    for extra in ({}, {"confirm": "1"}):
        response = client.post(reverse("allocator:ops-move"), {**form, **extra})
        assert response.status_code == 400
        assert error in response.content.decode()
    assert not Reclaim.objects.exists()


def test_move_page_is_for_compute_ops_only(client, scene, requester):
    client.force_login(requester)
    assert client.get(reverse("allocator:ops-move")).status_code == 404
    assert client.post(reverse("allocator:ops-move"), {"reason": "x"}).status_code == 404


def test_scheduled_reclaim_listed_everywhere_and_cancelled(client, scene, ops, requester):
    winding = scene["winding"]
    reclaim = services.allocation_reclaim(
        allocation_id=winding.pk, actor=ops, new_gpus=8, reason="Room for the launch."
    )
    client.force_login(requester)
    project_page = client.get(reverse("org:project-detail", args=[winding.project_id])).content
    assert b"24 of its 32 GPUs go back" in project_page
    pool_page = client.get(reverse("allocator:pool-detail", args=[winding.pool_id])).content
    assert b"24 of its 32 GPUs go back" in pool_page and b"Reclaim scheduled" in pool_page
    assert b"Cancel" not in pool_page  # the team sees it, only compute ops change it
    client.force_login(ops)
    response = client.post(
        reverse("allocator:reclaim-cancel", args=[reclaim.pk]), {"next": "/ops/"}, follow=True
    )
    assert b"Reclaim cancelled" in response.content
    reclaim.refresh_from_db()
    assert reclaim.status == "cancelled"
    # the team cannot cancel
    client.force_login(requester)
    assert client.post(reverse("allocator:reclaim-cancel", args=[reclaim.pk])).status_code == 404


def test_reclaim_edit_page(client, scene, ops):
    reclaim = services.allocation_reclaim(
        allocation_id=scene["winding"].pk, actor=ops, new_gpus=0, reason="Room."
    )
    client.force_login(ops)
    url = reverse("allocator:reclaim-edit", args=[reclaim.pk])
    assert b"all 32 GPUs go back" in client.get(url).content
    response = client.post(url, {"new_gpus": "99", "reason": "x", "notice_hours": "1"})
    assert response.status_code == 400 and b"Enter a number from 0 to 32" in response.content
    response = client.post(url, {"new_gpus": "16", "reason": "Half.", "notice_hours": "1"})
    assert response.status_code == 302
    assert Reclaim.objects.get(status="scheduled").new_gpus == 16


def test_wind_down_page(client, scene, ops):
    project = scene["winding"].project
    client.force_login(ops)
    url = reverse("allocator:project-wind-down", args=[project.pk])
    assert b"Reclaim all of Sunset" in client.get(url).content
    assert client.post(url, {"when": "notice", "reason": ""}).status_code == 400
    response = client.post(url, {"when": "notice", "reason": "Over.", "notice_hours": "48"})
    assert response.status_code == 302
    assert Reclaim.objects.get().allocation == scene["winding"]


def test_release_asks_for_confirmation_then_gives_back_half(client, pool, project, requester):
    allocation = factories.AllocationFactory(pool=pool, project=project, gpus=32, end=in_days(30))
    client.force_login(requester)
    page = client.get(reverse("org:project-detail", args=[project.pk])).content.decode()
    url = reverse("allocator:allocation-release", args=[allocation.pk])
    assert f'href="{url}"' in page  # a link to the confirmation, not a one-click button
    confirm = client.get(url).content.decode()
    assert "Confirm the release" in confirm and "32 GPUs of east/H100" in confirm
    response = client.post(url, {"how": "gpus", "gpus": "99"})
    assert (
        response.status_code == 400 and "Give back from 1 to 32 GPUs" in response.content.decode()
    )
    response = client.post(url, {"how": "gpus", "gpus": "16"}, follow=True)
    assert "16 GPUs given back" in response.content.decode()
    allocation.refresh_from_db()
    assert allocation.gpus == 16 and allocation.state == "active"


def test_project_page_sums_all_allocations_and_pages_them(client, pool, project, requester):
    now = timezone.now()
    factories.AllocationFactory.create_batch(
        120, pool=pool, project=project, gpus=1, start=now - timedelta(days=1)
    )
    client.force_login(requester)
    page = client.get(reverse("org:project-detail", args=[project.pk])).content.decode()
    assert re.search(r'class="stat">120<', page)
    # the 120 allocations, 50 a page, walked through "Earlier ends": each once, latest end first
    seen = walk(
        client,
        reverse("org:project-detail", args=[project.pk]),
        lambda r: [a.pk for a in r.context["allocations"]],
        param="allocations",
    )
    assert len(seen) == 120 and set(seen) == set(
        Allocation.objects.filter(project=project).values_list("pk", flat=True)
    )
    ends = list(
        Allocation.objects.filter(pk__in=seen).order_by("-end", "-pk").values_list("pk", flat=True)
    )
    assert seen == ends


# --- API ---


def test_api_allocation_shows_pending_reclaims_and_transfer_by_request_number(client, scene, ops):
    winding, req = scene["winding"], scene["request"]
    client.force_login(ops)
    response = client.post(
        f"/api/v1/allocations/{winding.pk}/reclaim/",
        {"new_gpus": 0, "reason": "Sunset ends.", "transfer_to": req.pk},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["transfer_to"] == req.pk
    body = client.get(f"/api/v1/allocations/{winding.pk}/").json()
    [pending] = body["pending_reclaims"]
    assert pending["new_gpus"] == 0 and pending["transfer_to"] == req.pk
    listed = client.get("/api/v1/allocations/", {"project": winding.project_id}).json()
    assert listed["results"][0]["pending_reclaims"][0]["reason"] == "Sunset ends."


def test_api_partial_release(client, pool, project, requester):
    allocation = factories.AllocationFactory(pool=pool, project=project, gpus=32, end=in_days(30))
    client.force_login(requester)
    url = f"/api/v1/allocations/{allocation.pk}/release/"
    response = client.post(url, {"gpus": 40}, content_type="application/json")
    assert response.status_code == 400 and "gpus" in response.json()["errors"]
    response = client.post(url, {"gpus": 16}, content_type="application/json")
    assert response.status_code == 200 and response.json()["gpus"] == 16
    end = (timezone.now() + timedelta(days=3)).isoformat()
    response = client.post(url, {"end": end}, content_type="application/json")
    assert response.status_code == 200 and response.json()["state"] == "active"
    assert Allocation.objects.get(pk=allocation.pk).end.date() == in_days(3).date()
