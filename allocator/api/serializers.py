"""Input and output shapes of /api/v1/pools/, /allocations/ and /capacity-changes/
(PRODUCT.md section 6). Output serializers only read; inputs only parse — services decide."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.inputs import ZonedDateTimeField

from ..models import MAX_GPUS, MAX_NOTICE_HOURS, Allocation, CapacityChange, Reclaim
from ..signals import request_ids_for_changes


class PoolConnectorSerializer(serializers.Serializer):
    """PRODUCT.md section 9: which scheduler enforces the pool, and how the last sync went."""

    kind = serializers.CharField()
    cluster = serializers.CharField()
    partition = serializers.CharField()
    gres = serializers.CharField()
    last_sync = serializers.DateTimeField(source="last_sync_at", allow_null=True)
    status = serializers.CharField()
    drift = serializers.ListField(child=serializers.CharField())


class PoolSerializer(serializers.Serializer):
    """Built from selectors.PoolStatus, so the whole list costs three aggregate queries."""

    id = serializers.IntegerField(source="pool.pk")
    name = serializers.CharField(source="pool.name")
    cluster = serializers.CharField(source="pool.cluster")
    gpu_model = serializers.CharField(source="pool.gpu_model")
    capacity = serializers.IntegerField()
    allocated = serializers.IntegerField()
    free = serializers.IntegerField()
    waiting = serializers.IntegerField()
    connector = serializers.SerializerMethodField()

    @extend_schema_field(PoolConnectorSerializer(allow_null=True))
    def get_connector(self, status) -> dict | None:
        # The reverse one-to-one of allocator.connectors (select_related by the views): read
        # by name, so this module never imports a connector.
        connector = getattr(status.pool, "connector", None)
        return None if connector is None else PoolConnectorSerializer(connector).data


class AllocationListSerializer(serializers.ListSerializer):
    def to_representation(self, data):
        items = list(data.all() if hasattr(data, "all") else data)
        # the requests behind the whole page's changes, in one query
        self.child.request_ids = request_ids_for_changes(
            {a.change_id for a in items if a.change_id}
        )
        self.child.pending = _pending_reclaims([a.pk for a in items])
        return super().to_representation(items)


def _pending_reclaims(allocation_ids) -> dict[int, list[dict]]:
    """Scheduled reclaims of these allocations, two queries whatever their number."""
    rows = list(
        Reclaim.objects.filter(
            allocation_id__in=allocation_ids, status=Reclaim.Status.SCHEDULED
        ).order_by("effective_at", "id")
    )
    requests = request_ids_for_changes({r.transfer_to_id for r in rows if r.transfer_to_id})
    found: dict[int, list[dict]] = {}
    for r in rows:
        found.setdefault(r.allocation_id, []).append(
            {
                "id": r.pk,
                "new_gpus": r.new_gpus,
                "new_end": r.new_end,
                "effective_at": r.effective_at,
                "reason": r.reason,
                "transfer_to": requests.get(r.transfer_to_id) if r.transfer_to_id else None,
            }
        )
    return found


class PendingReclaimOut(serializers.Serializer):
    id = serializers.IntegerField()
    new_gpus = serializers.IntegerField(help_text="GPUs the allocation keeps (0: all go back).")
    new_end = serializers.DateTimeField(allow_null=True, help_text="Shortened to this end.")
    effective_at = serializers.DateTimeField()
    reason = serializers.CharField()
    transfer_to = serializers.IntegerField(
        allow_null=True,
        help_text="The request (its number) the GPUs go to; null: back to the pool.",
    )


class AllocationSerializer(serializers.ModelSerializer):
    request = serializers.SerializerMethodField()
    pending_reclaims = serializers.SerializerMethodField(
        help_text="Reclaims and transfers scheduled on it that have not taken effect yet."
    )
    gpu_hours_used = serializers.SerializerMethodField()
    enforcement = serializers.SerializerMethodField()
    request_ids: dict[int, int] | None = None  # set by AllocationListSerializer
    pending: dict[int, list[dict]] | None = None  # set by AllocationListSerializer

    class Meta:
        model = Allocation
        fields = [
            "id",
            "project",
            "pool",
            "gpus",
            "start",
            "end",
            "state",
            "request",
            "pending_reclaims",
            "gpu_hours_used",
            "enforcement",
        ]
        read_only_fields = fields
        list_serializer_class = AllocationListSerializer

    # The next two read rows of allocator.connectors by their related names (prefetched by
    # the views), so this module never imports a connector.

    def get_gpu_hours_used(self, allocation) -> float | None:
        """PRODUCT.md section 9: GPU-hours its jobs used, from the scheduler's accounting;
        null until measured."""
        days = list(allocation.usage_days.all())
        return round(sum(d.gpu_hours for d in days), 3) if days else None

    @extend_schema_field(
        serializers.ChoiceField(
            choices=["enforced", "pending", "failing", "scheduled"], allow_null=True
        )
    )
    def get_enforcement(self, allocation) -> str | None:
        """Whether the pool's scheduler enforces it yet: null when the pool has no connector;
        `pending` or `failing` while a due limit change is not applied; `scheduled` before its
        start; else `enforced`."""
        if getattr(allocation.pool, "connector", None) is None:
            return None
        now = timezone.now()
        due = [
            i
            for i in allocation.enforcement_intents.all()
            if i.status == "pending" and i.effective_at <= now
        ]
        if due:
            return "failing" if any(i.last_error for i in due) else "pending"
        if allocation.state == Allocation.State.ACTIVE and allocation.start > now:
            return "scheduled"
        return "enforced"

    def get_request(self, allocation) -> int | None:
        if allocation.change_id is None:
            return None
        if self.request_ids is None:
            return request_ids_for_changes([allocation.change_id]).get(allocation.change_id)
        return self.request_ids.get(allocation.change_id)

    @extend_schema_field(PendingReclaimOut(many=True))
    def get_pending_reclaims(self, allocation) -> list[dict]:
        pending = self.pending if self.pending is not None else _pending_reclaims([allocation.pk])
        return list(PendingReclaimOut(pending.get(allocation.pk, []), many=True).data)


class ReclaimInputSerializer(serializers.Serializer):
    new_gpus = serializers.IntegerField(min_value=0, max_value=MAX_GPUS)
    new_end = ZonedDateTimeField(required=False, allow_null=True)
    reason = serializers.CharField(max_length=2000)
    notice = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_NOTICE_HOURS, help_text="Hours."
    )
    transfer_to = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=2**31 - 1,
        help_text="Give the GPUs to this request (its number): approved, pending or waiting, "
        "same pool. Omitted: back to the pool.",
    )


class ReclaimOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    allocation = serializers.IntegerField(source="allocation_id")
    new_gpus = serializers.IntegerField()
    new_end = serializers.DateTimeField()
    effective_at = serializers.DateTimeField()
    reason = serializers.CharField()
    transfer_to = serializers.SerializerMethodField(
        help_text="The request (its number) the GPUs go to; null: back to the pool."
    )
    status = serializers.CharField()

    def get_transfer_to(self, reclaim) -> int | None:
        if reclaim.transfer_to_id is None:
            return None
        return request_ids_for_changes([reclaim.transfer_to_id]).get(reclaim.transfer_to_id)


class ReleaseInputSerializer(serializers.Serializer):
    """Nothing: release all now. `gpus`: give back that many from now on. `end`: end earlier."""

    gpus = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_GPUS, help_text="GPUs to give back from now."
    )
    end = ZonedDateTimeField(
        required=False, help_text="End the allocation at this earlier time (with a time zone)."
    )


class CapacityChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = CapacityChange
        fields = ["id", "pool", "kind", "delta", "effective_at", "note", "created_at"]
        read_only_fields = fields


class CapacityChangeInputSerializer(serializers.Serializer):
    pool = serializers.IntegerField(min_value=1)
    kind = serializers.ChoiceField(choices=CapacityChange.Kind.choices)
    delta = serializers.IntegerField(min_value=-MAX_GPUS, max_value=MAX_GPUS)
    effective_at = ZonedDateTimeField()
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
