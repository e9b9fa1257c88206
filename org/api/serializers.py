"""Input and output shapes of the org API (teams, projects) and the token endpoint.
Inputs are plain serializers validated before any service runs; outputs never write."""

from typing import Any

from django.contrib.auth import get_user_model
from rest_framework import serializers

from org.models import Project, Team

ID_MAX = 2**63 - 1


# --- teams and projects ---


class TeamSerializer(serializers.ModelSerializer):
    division_name = serializers.CharField(source="division.name", read_only=True)
    members: "serializers.SlugRelatedField[Any]" = serializers.SlugRelatedField(
        many=True, read_only=True, slug_field=get_user_model().USERNAME_FIELD
    )

    class Meta:
        model = Team
        fields = ["id", "name", "slug", "division", "division_name", "members"]


class SchedulerAccountSerializer(serializers.Serializer):
    pool = serializers.IntegerField(source="pool_id")
    account = serializers.CharField(source="account_name")


class ProjectSerializer(serializers.ModelSerializer):
    division = serializers.IntegerField(source="team.division_id", read_only=True)
    team_name = serializers.CharField(source="team.name", read_only=True)
    # PRODUCT.md section 9: the project's account on each connected pool's scheduler (rows of
    # allocator.connectors, reached by their related name; prefetched by the views).
    scheduler_accounts = SchedulerAccountSerializer(many=True, read_only=True)

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
            "scheduler_accounts",
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
