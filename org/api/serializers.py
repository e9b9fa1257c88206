"""Input and output shapes of the org API (divisions, teams, projects) and the token endpoint.
Inputs are plain serializers validated before any service runs; outputs never write."""

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from allocator.shares import MAX_SHARE_INPUT
from org.models import Division, Project, Team

ID_MAX = 2**63 - 1


class ApiErrorSerializer(serializers.Serializer):
    """The JSON error shape of every endpoint (common/api.py)."""

    detail = serializers.CharField()
    # A declared field, not Serializer.errors: DRF's metaclass moves fields out of the class body.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField())
    )


# --- divisions and shares ---


class ShareRowSerializer(serializers.Serializer):
    pool = serializers.IntegerField(source="pool.pk")
    pool_name = serializers.CharField(source="pool.name")
    share = serializers.IntegerField(help_text="GPUs of the pool given to the division.")
    share_percent = serializers.IntegerField(
        allow_null=True, help_text="The share as a percentage of the pool's capacity now."
    )
    held_now = serializers.IntegerField(help_text="GPUs the division's projects hold now.")
    peak = serializers.IntegerField(
        help_text="The division's largest holding over the horizon (scheduled allocations "
        "included)."
    )
    over = serializers.BooleanField(help_text="The peak is above the share.")


class DivisionSerializer(serializers.ModelSerializer):
    shares = serializers.SerializerMethodField()

    class Meta:
        model = Division
        fields = ["id", "name", "slug", "description", "shares"]

    @extend_schema_field(ShareRowSerializer(many=True))
    def get_shares(self, division):
        rows = self.context["holdings"].get(division.pk, [])
        return ShareRowSerializer(rows, many=True).data


class ShareInputSerializer(serializers.Serializer):
    pool = serializers.IntegerField(min_value=1, max_value=ID_MAX)
    gpus = serializers.IntegerField(
        min_value=0,
        max_value=MAX_SHARE_INPUT,
        help_text="The division's new share of the pool, in GPUs; at most the most GPUs the "
        "pool will hold.",
    )


class ReclaimCandidateSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="Allocation id.")
    project = serializers.IntegerField(source="project_id")
    project_name = serializers.CharField()
    gpus = serializers.IntegerField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class ShareUpdateSerializer(serializers.Serializer):
    division = serializers.IntegerField(source="share.division_id")
    pool = serializers.IntegerField(source="share.pool_id")
    before = serializers.IntegerField()
    after = serializers.IntegerField()
    changed = serializers.BooleanField(help_text="False when the share already had that value.")
    capacity_now = serializers.IntegerField()
    shares_total = serializers.IntegerField(help_text="All divisions' shares of the pool.")
    overcommitted = serializers.BooleanField(help_text="The shares add up above capacity.")
    peak = serializers.IntegerField(source="row.peak")
    over = serializers.BooleanField(source="row.over")
    reclaim = ReclaimCandidateSerializer(
        source="row.reclaim",
        many=True,
        help_text="When the division holds more than its new share: the allocations compute "
        "ops would reclaim to bring it back.",
    )
    warnings = serializers.ListField(child=serializers.CharField())


# --- teams and projects ---


class TeamSerializer(serializers.ModelSerializer):
    division_name = serializers.CharField(source="division.name", read_only=True)
    members: "serializers.SlugRelatedField[Any]" = serializers.SlugRelatedField(
        many=True, read_only=True, slug_field=get_user_model().USERNAME_FIELD
    )

    class Meta:
        model = Team
        fields = ["id", "name", "slug", "division", "division_name", "members"]


class ProjectSerializer(serializers.ModelSerializer):
    division = serializers.IntegerField(source="team.division_id", read_only=True)
    team_name = serializers.CharField(source="team.name", read_only=True)

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "description",
            "team",
            "team_name",
            "division",
            "expected_end",
            "state",
            "confidential",
            "created_at",
        ]
        read_only_fields = fields


class ProjectInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=120, trim_whitespace=True)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    team = serializers.IntegerField(min_value=1, max_value=ID_MAX)
    expected_end = serializers.DateField(required=False, allow_null=True)
    confidential = serializers.BooleanField(required=False, default=False)


# --- token ---


class TokenInputSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()
