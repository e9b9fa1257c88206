"""From the browser to the ledger: rita files through the page, rlead approves, a real worker
applies the change, and the request follows it (change_settled) to allocated or waiting."""

import time

import pytest
from django.urls import reverse

from allocator.models import Allocation
from requests_app.models import ComputeRequest
from requests_app.workflow import Status
from tests import factories
from tests.requests_app.test_pages import _form

pytestmark = pytest.mark.worker


def _wait_for(predicate, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_filed_approved_applied_allocated(
    celery_worker_process, client, requester, division_lead, research, project, pool
):
    # given Research's share covers the request
    factories.DivisionShareFactory(division=research, pool=pool, gpus=32)

    # when rita files and submits, and rlead approves, through the pages
    client.force_login(requester)
    client.post(reverse("requests:create"), {**_form(project, pool), "then_submit": "1"})
    req = ComputeRequest.objects.get()
    client.force_login(division_lead)
    client.post(reverse("requests:decide", args=[req.pk]), {"action": "approve"})

    # then the worker applies it and the request is allocated
    assert _wait_for(lambda: ComputeRequest.objects.get(pk=req.pk).status == Status.ALLOCATED), (
        celery_worker_process.log_path.read_text()[-3000:]
    )
    req.refresh_from_db()
    allocation = Allocation.objects.get(change=req.change)
    assert allocation.gpus == 8
    body = client.get(f"/api/v1/requests/{req.pk}/").json()
    assert body["status"] == "allocated" and body["allocation"] == allocation.pk


def test_waiting_request_shows_its_queue_position(
    celery_worker_process, client, requester, division_lead, research, other_team, project, pool
):
    # given Applications fills the pool over the range; Research is within its share
    factories.DivisionShareFactory(division=research, pool=pool, gpus=32)
    other = factories.ProjectFactory(team=other_team)
    factories.AllocationFactory(
        pool=pool, project=other, gpus=60, start=factories.in_days(-1), end=factories.in_days(60)
    )

    # when a 8-GPU request is approved
    client.force_login(requester)
    client.post(reverse("requests:create"), {**_form(project, pool), "then_submit": "1"})
    req = ComputeRequest.objects.get()
    client.force_login(division_lead)
    client.post(reverse("requests:decide", args=[req.pk]), {"action": "approve"})

    # then it waits, first in the queue, on the page and in the API
    assert _wait_for(lambda: ComputeRequest.objects.get(pk=req.pk).status == Status.WAITING), (
        celery_worker_process.log_path.read_text()[-3000:]
    )
    page = client.get(reverse("requests:detail", args=[req.pk])).content.decode()
    assert "1 in the east/H100 waiting queue" in page
    assert client.get(f"/api/v1/requests/{req.pk}/").json()["queue_position"] == 1
