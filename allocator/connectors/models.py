"""What a pool's enforcing system must hold, and what it was seen holding.

- `PoolConnector`: which system enforces a pool, and where (for Slurm: cluster, partition, GRES).
- `SchedulerAccount`: an account of the organisation's tree on one cluster (division -> team ->
  project), its name derived once and stored, so renaming a project never orphans its account.
- `PoolAccount`: a project's account as seen by one pool: the limit applied last, the sequence
  it covers, and what the reconciler last read back.
- `EnforcementIntent`: the outbox. One row per ledger entry (and per instant at which a limit
  changes with no ledger event: an allocation's start and end), written in the ledger's own
  transaction; applied after commit by a task, exactly once in effect.
- `SyncRun`: one reconcile of one pool, with the drift it found, what it repaired and what failed.
"""

from django.db import models
from django.db.models import Q

from allocator.models import Allocation, LedgerEntry, Pool
from org.models import Division, Project, Team


class PoolConnector(models.Model):
    class Kind(models.TextChoices):
        SLURM = "slurm", "Slurm"

    class Status(models.TextChoices):
        NEVER = "never_synced", "Never synced"
        IN_SYNC = "in_sync", "In sync"
        DRIFT = "drift", "Drift remains"
        ERROR = "error", "Error"

    pool = models.OneToOneField(Pool, on_delete=models.PROTECT, related_name="connector")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    cluster = models.CharField(max_length=60)
    partition = models.CharField(max_length=60)
    gres = models.CharField(
        max_length=60, help_text="GRES name as in GrpTRES=gres/<name>: gpu, or gpu:h100."
    )
    slurm_conf = models.CharField(max_length=500, blank=True, help_text="SLURM_CONF for commands.")
    command_prefix = models.CharField(
        max_length=500,
        blank=True,
        help_text="Run the Slurm commands through this, e.g. `ssh slurm-head` (split like a shell).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_sync_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEVER)
    drift = models.JSONField(default=list, blank=True, help_text="Drift left after the last sync.")

    class Meta:
        ordering = ["pool__cluster", "pool__gpu_model"]
        constraints = [
            models.CheckConstraint(condition=Q(kind="slurm"), name="connector_kind_known"),
        ]

    def __str__(self):
        return f"{self.pool} → {self.get_kind_display()} {self.cluster}/{self.partition}"


class SchedulerAccount(models.Model):
    class Level(models.TextChoices):
        DIVISION = "division", "Division"
        TEAM = "team", "Team"
        PROJECT = "project", "Project"

    cluster = models.CharField(max_length=60)
    level = models.CharField(max_length=20, choices=Level.choices)
    name = models.CharField(max_length=64)
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True)
    division = models.ForeignKey(Division, on_delete=models.PROTECT, null=True, blank=True)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, null=True, blank=True)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["cluster", "name"]
        constraints = [
            models.UniqueConstraint(fields=["cluster", "name"], name="scheduleraccount_name"),
            models.UniqueConstraint(
                fields=["cluster", "division"],
                condition=Q(level="division"),
                name="scheduleraccount_one_per_division",
            ),
            models.UniqueConstraint(
                fields=["cluster", "team"],
                condition=Q(level="team"),
                name="scheduleraccount_one_per_team",
            ),
            models.UniqueConstraint(
                fields=["cluster", "project"],
                condition=Q(level="project"),
                name="scheduleraccount_one_per_project",
            ),
        ]

    def __str__(self):
        return f"{self.cluster}:{self.name}"


class PoolAccount(models.Model):
    connector = models.ForeignKey(PoolConnector, on_delete=models.CASCADE, related_name="accounts")
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="+")
    project = models.ForeignKey(
        Project, on_delete=models.PROTECT, related_name="scheduler_accounts"
    )
    account = models.ForeignKey(SchedulerAccount, on_delete=models.PROTECT, related_name="+")
    account_name = models.CharField(max_length=64)
    # Bumped in the ledger's transaction for every intent: the order of intents per account.
    last_sequence = models.PositiveBigIntegerField(default=0)
    # The last apply read the ledger at `applied_as_of` after intent `applied_sequence` had
    # committed, and set the limit to `applied_gpus`: it covers every intent with a sequence
    # <= applied_sequence and an effective time <= applied_as_of.
    applied_sequence = models.PositiveBigIntegerField(default=0)
    applied_as_of = models.DateTimeField(null=True, blank=True)
    applied_gpus = models.IntegerField(null=True, blank=True)
    # What the reconciler last read from the scheduler.
    actual_gpus = models.IntegerField(null=True, blank=True, help_text="None: no limit set.")
    running_gpus = models.IntegerField(default=0)
    checked_at = models.DateTimeField(null=True, blank=True)
    over_limit_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["account_name"]
        constraints = [
            models.UniqueConstraint(fields=["connector", "project"], name="poolaccount_unique"),
        ]

    def __str__(self):
        return f"{self.account_name} on {self.pool}"


class EnforcementIntent(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPLIED = "applied", "Applied"
        SUPERSEDED = "superseded", "Covered by a later apply"

    pool_account = models.ForeignKey(PoolAccount, on_delete=models.CASCADE, related_name="intents")
    sequence = models.PositiveBigIntegerField()
    effective_at = models.DateTimeField()
    # What the ledger said the limit would be at effective_at when the intent was written (shown
    # to people); the apply recomputes from the ledger, so a stale value is never sent.
    gpus = models.IntegerField()
    ledger_entry = models.ForeignKey(
        LedgerEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    allocation = models.ForeignKey(
        Allocation,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="enforcement_intents",
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["effective_at", "sequence"]
        indexes = [
            models.Index(
                fields=["effective_at"], condition=Q(status="pending"), name="intent_pending_due"
            ),
            models.Index(fields=["allocation", "status"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["pool_account", "sequence"], name="intent_sequence_per_account"
            ),
        ]

    def __str__(self):
        return f"{self.pool_account.account_name} #{self.sequence}: {self.gpus} GPUs at {self.effective_at:%Y-%m-%d %H:%M}"


class SyncRun(models.Model):
    class Outcome(models.TextChoices):
        IN_SYNC = "in_sync", "Already in sync"
        REPAIRED = "repaired", "Drift repaired"
        DRIFT = "drift", "Drift remains"
        ERROR = "error", "Error"

    connector = models.ForeignKey(PoolConnector, on_delete=models.CASCADE, related_name="runs")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    trigger = models.CharField(max_length=40, default="periodic")
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    drift_found = models.JSONField(default=list, blank=True)
    repaired = models.JSONField(default=list, blank=True)
    remaining = models.JSONField(default=list, blank=True)
    over_limit = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    error_command = models.TextField(blank=True)
    error_output = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["connector", "-started_at"])]

    def __str__(self):
        return (
            f"sync of {self.connector.pool} at {self.started_at:%Y-%m-%d %H:%M:%S}: {self.outcome}"
        )


class AllocationUsage(models.Model):
    """GPU-hours an allocation's project used on the pool's cluster on one day (UTC), from the
    scheduler's accounting. A day's row is rewritten until the day is over."""

    allocation = models.ForeignKey(Allocation, on_delete=models.CASCADE, related_name="usage_days")
    day = models.DateField()
    gpu_hours = models.FloatField()
    measured_at = models.DateTimeField()

    class Meta:
        ordering = ["allocation", "day"]
        constraints = [
            models.UniqueConstraint(fields=["allocation", "day"], name="usage_one_row_per_day"),
            models.CheckConstraint(condition=Q(gpu_hours__gte=0), name="usage_nonnegative"),
        ]

    def __str__(self):
        return f"allocation #{self.allocation_id} used {self.gpu_hours:.1f} GPU-hours on {self.day}"
