"""Compute requests and their approval steps (PRODUCT.md sections 2 and 3)."""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from allocator.models import Allocation, AllocationChange, Pool
from org.models import Project

from . import workflow
from .workflow import Stage, Status

JUSTIFICATION_MAX = 4000


class ComputeRequest(models.Model):
    class Kind(models.TextChoices):
        NEW = "new", "New allocation"
        INCREASE = "increase", "Increase of an existing allocation"
        EXTENSION = "extension", "Extension of an existing allocation"

    class Priority(models.TextChoices):
        LOW = "low", "Low"
        NORMAL = "normal", "Normal"
        HIGH = "high", "High"
        URGENT = "urgent", "Urgent"

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="requests")
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="requests")
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="compute_requests"
    )
    gpus = models.PositiveIntegerField()
    start = models.DateTimeField()
    end = models.DateTimeField()
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.NEW)
    target_allocation = models.ForeignKey(
        Allocation,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="For an increase or extension: the project's allocation it grows.",
    )
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    flexible_start = models.BooleanField(
        default=False, help_text="A later start is acceptable if the GPUs are not free at once."
    )

    # The structured justification.
    goal = models.TextField(max_length=JUSTIFICATION_MAX)
    expected_outcome = models.TextField(max_length=JUSTIFICATION_MAX)
    size_rationale = models.TextField(
        max_length=JUSTIFICATION_MAX, help_text="Why this size and duration."
    )
    impact_if_denied = models.TextField(
        max_length=JUSTIFICATION_MAX, help_text="What happens if it is not granted."
    )

    status = models.CharField(max_length=24, choices=Status.choices, default=Status.DRAFT)
    # Which submission round the steps belong to: resubmitting after changes starts a new one.
    round = models.PositiveSmallIntegerField(default=0)
    needs_executive = models.BooleanField(default=False)
    executive_reasons = models.JSONField(default=list, blank=True)
    change = models.OneToOneField(
        AllocationChange,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="request",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    # When the request entered the review stage it waits in (set by the workflow on every move to
    # pending_division or pending_executive): the approvals inbox lists the oldest first.
    stage_entered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "submitted_at"]),
            models.Index(fields=["requester", "-created_at"]),
            models.Index(fields=["pool", "status"]),
            models.Index(fields=["project", "status"]),
            # The list page and the API list: newest first, read from the index with a LIMIT.
            models.Index(fields=["-created_at", "-id"], name="request_recent"),
            # The API list's other cursor orders (common/pagination.py: the key, then id).
            models.Index(fields=["gpus", "id"], name="request_by_gpus"),
            models.Index(fields=["start", "id"], name="request_by_start"),
            # The approvals inbox: the requests of one review stage, oldest first.
            models.Index(fields=["status", "stage_entered_at", "id"], name="request_stage_age"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(gpus__gt=0), name="request_gpus_positive"),
            models.CheckConstraint(condition=Q(end__gt=F("start")), name="request_end_after_start"),
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in Status]), name="request_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(kind="new") | Q(target_allocation__isnull=False),
                name="request_increase_extension_has_target",
            ),
        ]

    def __str__(self):
        return f"#{self.pk} {self.gpus} × {self.pool} for {self.project} ({self.status})"


class ApprovalStep(models.Model):
    Decision = workflow.Decision

    request = models.ForeignKey(ComputeRequest, on_delete=models.CASCADE, related_name="steps")
    round = models.PositiveSmallIntegerField()
    stage = models.CharField(max_length=20, choices=Stage.choices)
    decision = models.CharField(max_length=20, choices=Decision.choices)
    decider = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    # Set when the decider acted as someone's delegate (accounts.Delegation): "X on behalf of Y".
    on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    comment = models.TextField(blank=True, max_length=JUSTIFICATION_MAX)
    decided_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["round", "decided_at", "id"]
        constraints = [
            # One decision per request, stage and submission round.
            models.UniqueConstraint(
                fields=["request", "round", "stage"], name="approvalstep_one_per_stage"
            ),
        ]

    def __str__(self):
        return f"#{self.request_id} {self.stage}: {self.decision} by {self.decided_by}"

    @property
    def decided_by(self) -> str:
        """'rlead', or 'alead on behalf of rlead' for a delegate's decision."""
        if self.on_behalf_of is not None:
            return f"{self.decider.get_username()} on behalf of {self.on_behalf_of.get_username()}"
        return self.decider.get_username()


class StageEscalation(models.Model):
    """A reminder or an escalation of one stage of one round, sent once (requests_app/sla.py):
    the unique row is what makes a repeated or concurrent sweep harmless."""

    class Level(models.TextChoices):
        REMINDER = "reminder", "Reminder before due"
        OVERDUE = "overdue", "Overdue: the stage's deciders"
        EXECUTIVES = "executives", "Overdue: escalated to the executives"

    request = models.ForeignKey(ComputeRequest, on_delete=models.CASCADE, related_name="+")
    round = models.PositiveSmallIntegerField()
    stage = models.CharField(max_length=20, choices=Stage.choices)
    level = models.CharField(max_length=20, choices=Level.choices)
    at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["request", "round", "stage", "level"], name="stage_escalation_once"
            ),
        ]

    def __str__(self):
        return f"#{self.request_id} {self.stage} round {self.round}: {self.level}"
