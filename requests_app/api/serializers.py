"""Input and output shapes of /api/v1/requests/ (PRODUCT.md section 6). Input serializers only
parse types; the rules (own teams' projects, capacity, dates, justification) live in
services.request_clean so the form and the API give the same answers."""

from rest_framework import serializers

from ..models import JUSTIFICATION_MAX, ApprovalStep, ComputeRequest


class RequestInputSerializer(serializers.Serializer):
    """Unknown keys (status, requester, steps, ...) are ignored: they cannot be mass-assigned."""

    project = serializers.IntegerField()
    pool = serializers.IntegerField()
    gpus = serializers.IntegerField(required=False, allow_null=True)
    start = serializers.DateTimeField(required=False, allow_null=True)
    end = serializers.DateTimeField()
    kind = serializers.ChoiceField(choices=ComputeRequest.Kind.choices, default="new")
    target_allocation = serializers.IntegerField(required=False, allow_null=True)
    priority = serializers.ChoiceField(choices=ComputeRequest.Priority.choices, default="normal")
    flexible_start = serializers.BooleanField(default=False)
    goal = serializers.CharField(max_length=JUSTIFICATION_MAX)
    expected_outcome = serializers.CharField(max_length=JUSTIFICATION_MAX)
    size_rationale = serializers.CharField(max_length=JUSTIFICATION_MAX)
    impact_if_denied = serializers.CharField(max_length=JUSTIFICATION_MAX)


class DecisionInputSerializer(serializers.Serializer):
    comment = serializers.CharField(
        max_length=JUSTIFICATION_MAX, required=False, allow_blank=True, default=""
    )


class WithdrawInputSerializer(serializers.Serializer):
    comment = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class StepSerializer(serializers.ModelSerializer):
    time = serializers.DateTimeField(source="decided_at")
    decider_name = serializers.CharField(source="decider.get_username")

    class Meta:
        model = ApprovalStep
        fields = ["round", "stage", "decision", "decider", "decider_name", "comment", "time"]


class RequestOutputSerializer(serializers.ModelSerializer):
    steps = StepSerializer(many=True, read_only=True)
    allocation = serializers.SerializerMethodField()
    queue_position = serializers.SerializerMethodField()
    project_name = serializers.CharField(source="project.name")
    pool_name = serializers.CharField(source="pool.name")
    requester_name = serializers.CharField(source="requester.get_username")

    class Meta:
        model = ComputeRequest
        fields = [
            "id",
            "project",
            "project_name",
            "pool",
            "pool_name",
            "gpus",
            "start",
            "end",
            "kind",
            "target_allocation",
            "priority",
            "flexible_start",
            "goal",
            "expected_outcome",
            "size_rationale",
            "impact_if_denied",
            "status",
            "round",
            "steps",
            "executive_reasons",
            "allocation",
            "queue_position",
            "requester",
            "requester_name",
            "created_at",
            "submitted_at",
            "approved_at",
        ]
        read_only_fields = fields

    def get_allocation(self, obj) -> int | None:
        change = obj.change
        if change is None or change.status != "applied":
            return None
        return change.allocation_id

    def get_queue_position(self, obj) -> int | None:
        return self.context.get("queue_positions", {}).get(obj.pk)
