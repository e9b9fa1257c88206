"""Fixtures for requests_app: requests built in any state, with the steps and change rows that
state implies (the engine's allocator.services is the real one)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from requests_app.models import ApprovalStep, ComputeRequest
from requests_app.workflow import Stage, Status
from tests import factories


@pytest.fixture
def api():
    def client(user=None):
        c = APIClient()
        if user is not None:
            c.force_authenticate(user)
        return c

    return client


@pytest.fixture
def web(client):
    def login(user):
        client.force_login(user)
        return client

    return login


@pytest.fixture
def second_lead(research):
    """Another Research lead: decides the division stage where the tested lead must not."""
    from org.models import RoleGrant

    user = factories.UserFactory(username="rlead2")
    factories.RoleGrantFactory(user=user, role=RoleGrant.Role.DIVISION_LEAD, division=research)
    return user


@pytest.fixture
def make_request(requester, project, pool, second_lead):
    """Build a request in `status`, as the workflow would have left it."""

    def build(status=Status.DRAFT, *, division_decider=None, needs_executive=None, **fields):
        fields.setdefault("requester", requester)
        fields.setdefault("project", project)
        fields.setdefault("pool", pool)
        if needs_executive is None:
            needs_executive = status == Status.PENDING_EXECUTIVE
        submitted_at = None if status == Status.DRAFT else timezone.now() - timedelta(hours=3)
        fields.setdefault(
            "stage_entered_at",
            submitted_at if status in (Status.PENDING_DIVISION, Status.PENDING_EXECUTIVE) else None,
        )
        req = factories.ComputeRequestFactory(
            status=status,
            round=0 if status == Status.DRAFT else 1,
            needs_executive=needs_executive,
            executive_reasons=["is marked urgent"] if needs_executive else [],
            submitted_at=submitted_at,
            **fields,
        )
        decider = division_decider or second_lead

        def step(stage, decision, who=decider):
            ApprovalStep.objects.create(
                request=req, round=1, stage=stage, decision=decision, decider=who
            )

        if status in (
            Status.PENDING_EXECUTIVE,
            Status.APPROVED,
            Status.ALLOCATED,
            Status.WAITING,
            Status.FAILED,
        ):
            step(Stage.DIVISION, ApprovalStep.Decision.APPROVED)
        elif status == Status.REJECTED:
            step(Stage.DIVISION, ApprovalStep.Decision.REJECTED)
        elif status == Status.CHANGES_REQUESTED:
            step(Stage.DIVISION, ApprovalStep.Decision.CHANGES_REQUESTED)
        change_status = {
            Status.APPROVED: "pending",
            Status.ALLOCATED: "applied",
            Status.WAITING: "waiting",
            Status.FAILED: "failed",
        }.get(status)
        if change_status:
            change = factories.AllocationChangeFactory(
                pool=req.pool,
                project=req.project,
                gpus=req.gpus,
                start=req.start,
                end=req.end,
                status="pending" if change_status == "applied" else change_status,
                requested_by=req.requester,
            )
            if change_status == "applied":
                allocation = factories.AllocationFactory(
                    pool=req.pool,
                    project=req.project,
                    gpus=req.gpus,
                    start=req.start,
                    end=req.end,
                    change=change,
                )
                change.status, change.allocation, change.applied_at = (
                    "applied",
                    allocation,
                    timezone.now(),
                )
                change.save()
            req.change = change
            req.approved_at = timezone.now()
            req.save(update_fields=["change", "approved_at"])
        return ComputeRequest.objects.get(pk=req.pk)

    return build


def request_data(project, pool, **overrides):
    """A valid body for the API and the service."""
    start = factories.in_days(2)
    data = {
        "project": project.pk,
        "pool": pool.pk,
        "gpus": 8,
        "start": start.isoformat(),
        "end": (start + timedelta(days=14)).isoformat(),
        "kind": "new",
        "priority": "normal",
        "flexible_start": False,
        "goal": "Train the next model.",
        "expected_outcome": "A checkpoint that beats the baseline.",
        "size_rationale": "Eight GPUs for two weeks fits the data.",
        "impact_if_denied": "The milestone slips a month.",
    }
    data.update(overrides)
    return data
