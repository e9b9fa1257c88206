"""Requests built in any state, as the workflow would have left them (steps, change, allocation):
shared by the requests tests and the security proofs."""

from datetime import timedelta

from django.utils import timezone

from requests_app.models import ApprovalStep, ComputeRequest
from requests_app.workflow import Stage, Status
from tests import factories


def build_request(
    status=Status.DRAFT,
    *,
    requester,
    project,
    pool,
    division_decider,
    needs_executive=None,
    **fields,
):
    """A request in `status` as the workflow would have left it (steps, change, allocation)."""
    if needs_executive is None:
        needs_executive = status == Status.PENDING_EXECUTIVE
    submitted_at = None if status == Status.DRAFT else timezone.now() - timedelta(hours=3)
    fields.setdefault(
        "stage_entered_at",
        submitted_at if status in (Status.PENDING_DIVISION, Status.PENDING_EXECUTIVE) else None,
    )
    req = factories.ComputeRequestFactory(
        status=status,
        requester=requester,
        project=project,
        pool=pool,
        round=0 if status == Status.DRAFT else 1,
        needs_executive=needs_executive,
        executive_reasons=["is marked urgent"] if needs_executive else [],
        submitted_at=submitted_at,
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
    """A valid body for the request API and the services."""
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
