"""The GPU pool and its ledger (PRODUCT.md section 4).

Capacity and holdings are time-ranged: a pool's capacity at instant t is the sum of its capacity
changes effective at or before t; what it holds at t is the sum of allocations whose [start, end)
contains t. The invariant — held(t) <= capacity(t) for every t — is enforced by the apply engine
under a lock on the pool row (allocator/locks.py); the constraints here are the row-local
backstops the database can hold on its own.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from org.models import Division, Project


class Pool(models.Model):
    cluster = models.CharField(max_length=60)
    gpu_model = models.CharField(max_length=60)
    description = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)
    # Bumped by PostgreSQL triggers (migration 0008) in the same transaction as every write a
    # pool's forecast or summaries read: its allocations (so every ledger entry), waiting and
    # pending changes, capacity changes, scheduled reclaims, shares, and the names and divisions
    # its reasons mention. A cache keyed by it is stale exactly when it differs. Never set it
    # from Python: a save() of a stale Pool object would write an old value back.
    version = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["cluster", "gpu_model"]
        constraints = [
            models.UniqueConstraint(fields=["cluster", "gpu_model"], name="pool_unique_name"),
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        # A whole-row save of a pool read earlier (the admin renaming it) must not write back
        # an older version: a cache entry of that version would be taken for current.
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                f.name
                for f in self._meta.concrete_fields
                if not f.primary_key and f.name != "version"
            ]
        super().save(*args, **kwargs)

    @property
    def name(self) -> str:
        return f"{self.cluster}/{self.gpu_model}"


class CapacityChange(models.Model):
    class Kind(models.TextChoices):
        ARRIVAL = "arrival", "Arrival"
        DECOMMISSION = "decommission", "Decommission"
        REPAIR = "repair", "Repair (out or back)"

    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="capacity_changes")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    delta = models.IntegerField(help_text="GPUs added (positive) or removed (negative).")
    effective_at = models.DateTimeField()
    note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by the periodic task once the queue was served for this change taking effect.
    served_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["effective_at", "id"]
        indexes = [
            models.Index(fields=["pool", "effective_at"]),
            # The API list's cursor order, latest first (common/pagination.py).
            models.Index(fields=["-effective_at", "-id"], name="capacity_change_recent"),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(delta=0), name="capacitychange_delta_nonzero"),
            models.CheckConstraint(
                condition=Q(kind="arrival", delta__gt=0)
                | Q(kind="decommission", delta__lt=0)
                | Q(kind="repair"),
                name="capacitychange_sign_matches_kind",
            ),
        ]

    def __str__(self):
        sign = "+" if self.delta > 0 else ""
        return f"{self.pool} {sign}{self.delta} GPUs {self.get_kind_display().lower()} at {self.effective_at:%Y-%m-%d %H:%M}"


class DivisionShare(models.Model):
    """GPUs of a pool that executives have given a division (the cross-division balance)."""

    division = models.ForeignKey(Division, on_delete=models.PROTECT, related_name="shares")
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="shares")
    gpus = models.PositiveIntegerField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["pool", "division"]
        constraints = [
            models.UniqueConstraint(fields=["division", "pool"], name="divisionshare_unique"),
            models.CheckConstraint(condition=Q(gpus__gte=0), name="divisionshare_gpus_nonneg"),
        ]

    def __str__(self):
        return f"{self.division} holds {self.gpus} of {self.pool}"


# Far above any pool: bounds GPU counts in every form, serializer and service before they reach
# the database (the one definition; inputs import it).
MAX_GPUS = 1_000_000
MAX_NOTICE_HOURS = 24 * 365


class Priority(models.IntegerChoices):
    """Higher serves first. Stored as an integer so the queue orders in SQL."""

    LOW = 0, "low"
    NORMAL = 1, "normal"
    HIGH = 2, "high"
    URGENT = 3, "urgent"


class AllocationChange(models.Model):
    """What an approved request asks the engine to do: one per approved request, frozen at
    approval. The apply task works on this row alone (it takes only its id)."""

    class Kind(models.TextChoices):
        NEW = "new", "New allocation"
        INCREASE = "increase", "Increase"
        EXTENSION = "extension", "Extension"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (approved, not yet applied)"
        APPLIED = "applied", "Applied"
        WAITING = "waiting", "Waiting for capacity"
        NEEDS_REVIEW = "needs_review", "Sent to executive review"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="changes")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="changes")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.NEW)
    target_allocation = models.ForeignKey(
        "Allocation",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="For an extension: the allocation whose end moves.",
    )
    gpus = models.PositiveIntegerField()
    start = models.DateTimeField()
    end = models.DateTimeField()
    flexible_start = models.BooleanField(default=False)
    priority = models.SmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    # Executives already reviewed it: the share rule is not re-checked at apply time.
    executive_reviewed = models.BooleanField(default=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    approved_at = models.DateTimeField()
    dispatched_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    allocation = models.ForeignKey(
        "Allocation", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-priority", "approved_at", "id"]
        indexes = [
            models.Index(fields=["status", "dispatched_at"]),
            models.Index(
                fields=["pool", "-priority", "approved_at", "id"],
                condition=Q(status="waiting"),
                name="change_waiting_queue",
            ),
            # The overview's and pools page's waiting demand per pool, read from the index
            # alone (allocator.selectors.waiting_demand).
            models.Index(
                fields=["pool", "gpus"],
                condition=Q(status="waiting"),
                name="change_waiting_gpus",
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(gpus__gt=0), name="change_gpus_positive"),
            models.CheckConstraint(condition=Q(end__gt=F("start")), name="change_end_after_start"),
            models.CheckConstraint(
                condition=Q(status="applied", allocation__isnull=False, applied_at__isnull=False)
                | ~Q(status="applied"),
                name="change_applied_has_allocation",
            ),
        ]

    def __str__(self):
        return f"change #{self.pk}: {self.gpus} × {self.pool} for {self.project} ({self.status})"


class Allocation(models.Model):
    """GPUs of a pool held by a project over [start, end). Created only by the apply engine."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"  # held now or scheduled to start later
        ENDED = "ended", "Ended"
        RELEASED = "released", "Released early"
        RECLAIMED = "reclaimed", "Reclaimed"

    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="allocations")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="allocations")
    gpus = models.PositiveIntegerField()
    start = models.DateTimeField()
    end = models.DateTimeField()
    state = models.CharField(max_length=20, choices=State.choices, default=State.ACTIVE)
    change = models.ForeignKey(
        AllocationChange,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="allocations",
        help_text="The approved change that created it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    reminded_7d_at = models.DateTimeField(null=True, blank=True)
    reminded_1d_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["start", "id"]
        indexes = [
            models.Index(fields=["pool", "end", "start"]),
            models.Index(fields=["project", "end"]),
            models.Index(fields=["state", "end"]),
            # The API list's default order (newest start first), read from the index with a LIMIT.
            models.Index(fields=["-start", "-id"], name="allocation_recent"),
            # The API list's other cursor orders (common/pagination.py: the key, then id).
            models.Index(fields=["end", "id"], name="allocation_by_end"),
            models.Index(fields=["gpus", "id"], name="allocation_by_gpus"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(gpus__gt=0), name="allocation_gpus_positive"),
            models.CheckConstraint(
                condition=Q(end__gt=F("start")), name="allocation_end_after_start"
            ),
        ]

    def __str__(self):
        return (
            f"{self.project}: {self.gpus} × {self.pool} "
            f"{self.start:%Y-%m-%d %H:%M} → {self.end:%Y-%m-%d %H:%M}"
        )

    @property
    def not_started(self) -> bool:
        """Active but scheduled to start later: pages say "Starts <date>", not "Active"."""
        from django.utils import timezone

        return self.state == self.State.ACTIVE and self.start > timezone.now()


class Reclaim(models.Model):
    """Compute ops shrinking or shortening an allocation, effective after a notice period; or,
    with `transfer_to`, handing those GPUs to a named approved change."""

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        APPLIED = "applied", "Applied"
        CANCELLED = "cancelled", "Cancelled"

    allocation = models.ForeignKey(Allocation, on_delete=models.PROTECT, related_name="reclaims")
    new_gpus = models.PositiveIntegerField(help_text="GPUs the allocation keeps (0: all go back).")
    new_end = models.DateTimeField(null=True, blank=True, help_text="Shorten to this end.")
    effective_at = models.DateTimeField()
    reason = models.TextField(max_length=2000)
    transfer_to = models.ForeignKey(
        AllocationChange, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SCHEDULED)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["effective_at", "id"]
        indexes = [models.Index(fields=["status", "effective_at"])]

    def __str__(self):
        return f"reclaim of allocation #{self.allocation_id} at {self.effective_at:%Y-%m-%d %H:%M}"


class LedgerEntry(models.Model):
    """Append-only record of every change to allocations; an allocation can be rebuilt from its
    entries. At most one grant/extend entry per change: the database's guard against applying an
    approved change twice."""

    class Kind(models.TextChoices):
        GRANT = "grant", "Grant"
        EXTEND = "extend", "Extend"
        RELEASE = "release", "Release"
        RECLAIM = "reclaim", "Reclaim"
        TRANSFER = "transfer", "Transfer"
        EXPIRE = "expire", "Expire"

    allocation = models.ForeignKey(Allocation, on_delete=models.PROTECT, related_name="ledger")
    change = models.ForeignKey(
        AllocationChange, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # The allocation as it stands after this entry.
    gpus = models.PositiveIntegerField()
    start = models.DateTimeField()
    end = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["at", "id"]
        verbose_name_plural = "ledger entries"
        constraints = [
            models.UniqueConstraint(
                fields=["change"],
                condition=Q(kind__in=["grant", "extend"]),
                name="ledger_one_grant_per_change",
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} allocation #{self.allocation_id}: {self.gpus} GPUs"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("The ledger is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The ledger is append-only.")


class StoredForecast(models.Model):
    """A pool's stored forecast (allocator/forecast/stored.py): every waiting and approved
    change's outcome, computed from the pool at `version` as of `computed_at`. It stands until
    the pool's version moves or the clock reaches `stale_at`, the first instant at which the
    same rows would forecast something else. A cache: deleting rows loses nothing."""

    pool = models.OneToOneField(
        Pool, primary_key=True, on_delete=models.CASCADE, related_name="stored_forecast"
    )
    version = models.BigIntegerField()
    computed_at = models.DateTimeField()
    stale_at = models.DateTimeField(null=True, blank=True)  # None: only a write changes it
    # What else the result depends on: the stored format and the settings the simulation reads.
    key = models.CharField(max_length=100)
    outcomes = models.JSONField(default=list)

    def __str__(self):
        return f"forecast of pool {self.pool_id} at version {self.version}"
