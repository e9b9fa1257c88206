"""Input and output shapes of /api/v1/pools/, /allocations/ and /capacity-changes/
(PRODUCT.md section 6). Output serializers only read; inputs only parse — services decide."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..models import MAX_GPUS, MAX_NOTICE_HOURS, Allocation, CapacityChange
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
        return super().to_representation(items)


class AllocationSerializer(serializers.ModelSerializer):
    request = serializers.SerializerMethodField()
    gpu_hours_used = serializers.SerializerMethodField()
    enforcement = serializers.SerializerMethodField()
    request_ids: dict[int, int] | None = None  # set by AllocationListSerializer

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


class ReclaimInputSerializer(serializers.Serializer):
    new_gpus = serializers.IntegerField(min_value=0, max_value=MAX_GPUS)
    new_end = serializers.DateTimeField(required=False, allow_null=True)
    reason = serializers.CharField(max_length=2000)
    notice = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_NOTICE_HOURS, help_text="Hours."
    )
    transfer_to = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="An approved change's id."
    )


class ReclaimOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    allocation = serializers.IntegerField(source="allocation_id")
    new_gpus = serializers.IntegerField()
    new_end = serializers.DateTimeField()
    effective_at = serializers.DateTimeField()
    reason = serializers.CharField()
    transfer_to = serializers.IntegerField(source="transfer_to_id", allow_null=True)
    status = serializers.CharField()


class CapacityChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = CapacityChange
        fields = ["id", "pool", "kind", "delta", "effective_at", "note", "created_at"]
        read_only_fields = fields


class CapacityChangeInputSerializer(serializers.Serializer):
    pool = serializers.IntegerField(min_value=1)
    kind = serializers.ChoiceField(choices=CapacityChange.Kind.choices)
    delta = serializers.IntegerField(min_value=-MAX_GPUS, max_value=MAX_GPUS)
    effective_at = serializers.DateTimeField()
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
