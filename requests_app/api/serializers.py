"""Input and output shapes of /api/v1/requests/ (PRODUCT.md section 6). Input serializers only
parse types; the rules (own teams' projects, capacity, dates, justification) live in
validation.request_clean so the form and the API give the same answers."""

from collections.abc import Mapping

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField

from common.inputs import ZonedDateTimeField

from ..models import JUSTIFICATION_MAX, ApprovalStep, ComputeRequest


class RequestInputSerializer(serializers.Serializer):
    """Unknown keys (status, requester, steps, ...) are ignored: they cannot be mass-assigned."""

    project = serializers.IntegerField()
    pool = serializers.IntegerField()
    gpus = serializers.IntegerField(required=False, allow_null=True)
    start = ZonedDateTimeField(required=False, allow_null=True)
    end = ZonedDateTimeField()
    kind = serializers.ChoiceField(choices=ComputeRequest.Kind.choices, default="new")
    target_allocation = serializers.IntegerField(required=False, allow_null=True)
    priority = serializers.ChoiceField(choices=ComputeRequest.Priority.choices, default="normal")
    flexible_start = serializers.BooleanField(default=False)
    goal = serializers.CharField(max_length=JUSTIFICATION_MAX)
    expected_outcome = serializers.CharField(max_length=JUSTIFICATION_MAX)
    size_rationale = serializers.CharField(max_length=JUSTIFICATION_MAX)
    impact_if_denied = serializers.CharField(max_length=JUSTIFICATION_MAX)


def parsed_values(serializer: serializers.Serializer) -> dict:
    """The fields of an input that failed is_valid() which did parse (with their defaults), so
    the rules can still be checked on them: one answer names every problem."""
    values: dict = {}
    if not isinstance(serializer.initial_data, Mapping):
        return values  # not an object at all: the one error is already said
    for name, field in serializer.fields.items():
        if name in serializer.errors:
            continue
        try:
            values[name] = field.run_validation(field.get_value(serializer.initial_data))
        except (SkipField, serializers.ValidationError):
            continue
    return values


class DecisionInputSerializer(serializers.Serializer):
    comment = serializers.CharField(
        max_length=JUSTIFICATION_MAX, required=False, allow_blank=True, default=""
    )


class WithdrawInputSerializer(serializers.Serializer):
    comment = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class StepSerializer(serializers.ModelSerializer):
    time = serializers.DateTimeField(source="decided_at")
    decider_name = serializers.CharField(source="decider.get_username")
    on_behalf_of_name = serializers.SerializerMethodField(
        help_text="Set when a delegate decided: the person they decided for."
    )
    decided_by = serializers.CharField(
        read_only=True, help_text='"alead", or "alead on behalf of rlead".'
    )

    class Meta:
        model = ApprovalStep
        fields = [
            "round",
            "stage",
            "decision",
            "decider",
            "decider_name",
            "on_behalf_of",
            "on_behalf_of_name",
            "decided_by",
            "comment",
            "time",
        ]

    def get_on_behalf_of_name(self, step) -> str | None:
        return step.on_behalf_of.get_username() if step.on_behalf_of_id else None


class RequestOutputSerializer(serializers.ModelSerializer):
    steps = StepSerializer(many=True, read_only=True)
    allocation = serializers.SerializerMethodField()
    queue_position = serializers.SerializerMethodField()
    forecast_start = serializers.SerializerMethodField()
    forecast_reason = serializers.SerializerMethodField()
    forecast_days_served = serializers.SerializerMethodField()
    forecast_days_asked = serializers.SerializerMethodField()
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
            "forecast_start",
            "forecast_reason",
            "forecast_days_served",
            "forecast_days_asked",
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

    @extend_schema_field(
        {
            "type": "string",
            "format": "date-time",
            "nullable": True,
            "description": "When the request is expected to get its GPUs: for a waiting or "
            "approved request, the start the engine's own rules give it (allocator/forecast.py), "
            "assuming no new approvals and no early releases; for an allocated one whose "
            "allocation starts later, that start. Null otherwise, or when it will not be served "
            "within the horizon (see forecast_reason).",
        }
    )
    def get_forecast_start(self, obj):
        forecast = self.context.get("forecasts", {}).get(obj.pk)
        if forecast is None or forecast.start is None:
            return None
        return serializers.DateTimeField().to_representation(forecast.start)

    @extend_schema_field(
        {
            "type": "string",
            "nullable": True,
            "description": "The forecast in words: the event that makes it fit (an allocation "
            "ending, an arrival, a reclaim), or why it will not be served within the horizon, "
            "or that it would be sent to executive review. Null when there is nothing to "
            "forecast (drafts, decided or finished requests).",
        }
    )
    def get_forecast_reason(self, obj) -> str | None:
        forecast = self.context.get("forecasts", {}).get(obj.pk)
        if forecast is None:
            return None
        return f"{forecast.reason} {forecast.assumptions}"

    @extend_schema_field(
        {
            "type": "number",
            "nullable": True,
            "description": "The late-start effect: a fixed-start request forecast to start "
            "after its requested start runs only to its end; this is the number of days it "
            "would get (of forecast_days_asked). Null when it is forecast to start on time, "
            "or there is no forecast.",
        }
    )
    def get_forecast_days_served(self, obj) -> float | None:
        forecast = self.context.get("forecasts", {}).get(obj.pk)
        return forecast.days_served if forecast is not None else None

    @extend_schema_field(
        {
            "type": "number",
            "nullable": True,
            "description": "With forecast_days_served: the days of its requested period. Null "
            "when it is forecast to start on time, or there is no forecast.",
        }
    )
    def get_forecast_days_asked(self, obj) -> float | None:
        forecast = self.context.get("forecasts", {}).get(obj.pk)
        return forecast.days_asked if forecast is not None else None
