"""Input and output shapes of /api/v1/pools/, /allocations/ and /capacity-changes/
(PRODUCT.md section 6). Output serializers only read; inputs only parse — services decide."""

from rest_framework import serializers

from ..models import MAX_GPUS, MAX_NOTICE_HOURS, Allocation, CapacityChange
from ..signals import request_ids_for_changes


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
    request_ids: dict[int, int] | None = None  # set by AllocationListSerializer

    class Meta:
        model = Allocation
        fields = ["id", "project", "pool", "gpus", "start", "end", "state", "request"]
        read_only_fields = fields
        list_serializer_class = AllocationListSerializer

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
