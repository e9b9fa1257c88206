"""Shared pieces of the security proofs (PROOFS.md sections 2.4-2.7): a fingerprint of every
business table, API clients per persona, a world with one request in any state, and a recorder
of 5xx answers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from org.models import RoleGrant
from requests_app.models import ApprovalStep, ComputeRequest
from requests_app.workflow import Stage, Status
from tests import factories
from tests.support import figures

# Every table whose rows are the product's state. Sessions, tokens and the sign-in log of
# django-axes are not business state.
BUSINESS_TABLES = [
    "org_division",
    "org_team",
    "org_membership",
    "org_project",
    "org_rolegrant",
    "allocator_pool",
    "allocator_capacitychange",
    "allocator_divisionshare",
    "allocator_allocationchange",
    "allocator_allocation",
    "allocator_reclaim",
    "allocator_ledgerentry",
    "requests_app_computerequest",
    "requests_app_approvalstep",
    "audit_auditevent",
    "notifications_notification",
    "common_idempotencyrecord",
]


# Reported even when nothing was found: a zero is a result.
REPORTED = [
    "bad inputs tried",
    "state changes caused by rejected input",
    "errors without a field-specific message",
    "unescaped XSS reflections",
    "HTML pages without CSP",
    "authorization cells checked",
    "unexpected allows",
    "unexpected denies",
    "SoD / stage-skip violations",
    "BOLA leaks",
    "mass-assignment fields accepted",
    "CSRF bypasses",
    "transitions without exactly one audit row",
    "audit tamper attempts that succeeded",
    "secrets found in logs",
    "schemathesis unique failures",
    "5xx responses",
]


@pytest.fixture(autouse=True)
def _report_zeros():
    for name in REPORTED:
        figures.add(name, 0)


def business_state() -> dict[str, tuple[int, str]]:
    """Row count and an md5 of the ordered rows of each business table."""
    parts = [
        f"SELECT '{t}', count(*), coalesce(md5(string_agg(md5(x::text), '' ORDER BY x.id)), '') "
        f"FROM {t} x"
        for t in BUSINESS_TABLES
    ]
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts))
        return {name: (count, digest) for name, count, digest in cursor.fetchall()}


def state_diff(before: dict, after: dict) -> list[str]:
    return [t for t in BUSINESS_TABLES if before[t] != after[t]]


def count_5xx(response) -> None:
    """Count a 5xx answer unless the test settings' recorder middleware already does."""
    from django.conf import settings

    recorded = any("Count5xx" in m for m in settings.MIDDLEWARE)
    if response.status_code >= 500 and not recorded:
        figures.add("5xx responses")


@pytest.fixture
def api():
    def client(user=None):
        c = APIClient()
        if user is not None:
            c.force_authenticate(user)
        return c

    return client


@pytest.fixture
def second_lead(research):
    user = factories.UserFactory(username="rlead2")
    factories.RoleGrantFactory(user=user, role=RoleGrant.Role.DIVISION_LEAD, division=research)
    return user


@pytest.fixture
def second_exec(db):
    user = factories.UserFactory(username="exec2")
    factories.RoleGrantFactory(user=user, role=RoleGrant.Role.EXECUTIVE)
    return user


def build_request(status, *, requester, project, pool, division_decider, **fields):
    """A request in `status` as the workflow would have left it (steps, change, allocation)."""
    needs_executive = status == Status.PENDING_EXECUTIVE
    req = factories.ComputeRequestFactory(
        status=status,
        requester=requester,
        project=project,
        pool=pool,
        round=0 if status == Status.DRAFT else 1,
        needs_executive=needs_executive,
        executive_reasons=["is marked urgent"] if needs_executive else [],
        submitted_at=None if status == Status.DRAFT else timezone.now() - timedelta(hours=3),
        **fields,
    )

    def step(stage, decision):
        ApprovalStep.objects.create(
            request=req, round=1, stage=stage, decision=decision, decider=division_decider
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


def valid_request_body(project, pool, **overrides):
    start = factories.in_days(2)
    body = {
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
    body.update(overrides)
    return body
