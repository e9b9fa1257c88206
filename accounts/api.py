"""GET /api/v1/me/ (PRODUCT.md section 9) and /api/v1/delegations/ (out of office)."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from common.idempotency import idempotent
from org.models import Division, Membership, RoleGrant

from .delegations import (
    delegation_create,
    delegation_end,
    delegations_listed_for,
    delegations_of,
)
from .models import Delegation

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="The same key sent twice has the effect of one call.",
)


class RoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=RoleGrant.Role.choices)
    division = serializers.CharField(allow_null=True, help_text="Division name for a lead.")


class DelegationSerializer(serializers.ModelSerializer):
    delegator = serializers.CharField(source="delegator.username", read_only=True)
    delegate = serializers.CharField(source="delegate.username", read_only=True)
    division = serializers.SerializerMethodField()
    start = serializers.DateTimeField(source="starts_at", read_only=True)
    end = serializers.DateTimeField(source="ends_at", read_only=True)
    ended_early = serializers.DateTimeField(source="revoked_at", read_only=True)

    class Meta:
        model = Delegation
        fields = ["id", "delegator", "delegate", "role", "division", "start", "end", "ended_early"]

    def get_division(self, d) -> str | None:
        return d.division.name if d.division_id else None


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    teams = serializers.ListField(child=serializers.CharField(), help_text="Team names.")
    roles = RoleSerializer(many=True)
    delegations = DelegationSerializer(
        many=True, help_text="Active delegations this user gave or received."
    )


class MeView(APIView):
    @extend_schema(summary="Who am I: teams, roles and active delegations", responses=MeSerializer)
    def get(self, request):
        user = request.user
        # Four queries: teams, roles, delegations (with their people and division).
        teams = list(
            Membership.objects.filter(user=user)
            .order_by("team__name")
            .values_list("team__name", flat=True)
        )
        roles = [
            {"role": role, "division": division}
            for role, division in RoleGrant.objects.filter(user=user)
            .order_by("role", "division__name")
            .values_list("role", "division__name")
        ]
        data = {
            "username": user.get_username(),
            "teams": teams,
            "roles": roles,
            "delegations": DelegationSerializer(delegations_of(user), many=True).data,
        }
        return Response(data)


class DelegationInputSerializer(serializers.Serializer):
    delegate = serializers.CharField(max_length=150, help_text="The delegate's username.")
    role = serializers.ChoiceField(choices=Delegation.Role.choices)
    division = serializers.PrimaryKeyRelatedField(
        queryset=Division.objects.all(),
        required=False,
        allow_null=True,
        help_text="For a division lead: the division whose review is delegated.",
    )
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class DelegationListView(APIView):
    @extend_schema(
        summary="Delegations I gave or received (current and past)",
        responses=DelegationSerializer(many=True),
    )
    def get(self, request):
        rows = delegations_listed_for(request.user)[:200]
        return Response(DelegationSerializer(rows, many=True).data)

    @extend_schema(
        summary="Name a delegate for my stage over a time range",
        request=DelegationInputSerializer,
        responses={201: DelegationSerializer},
        parameters=[IDEMPOTENCY_KEY],
    )
    @idempotent
    def post(self, request):
        data = DelegationInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        delegation = delegation_create(
            actor=request.user,
            delegate_username=v["delegate"],
            role=v["role"],
            division=v.get("division"),
            starts_at=v["start"],
            ends_at=v["end"],
        )
        return Response(DelegationSerializer(delegation).data, status=status.HTTP_201_CREATED)


class DelegationEndView(APIView):
    @extend_schema(
        summary="End a delegation I gave, now",
        request=None,
        responses={
            200: DelegationSerializer,
            403: OpenApiResponse(description="Only the delegator may end it."),
        },
    )
    def post(self, request, pk: int):
        delegation = delegation_end(actor=request.user, delegation_id=pk)
        return Response(DelegationSerializer(delegation).data)


urlpatterns = [
    path("me/", MeView.as_view(), name="api-me"),
    path("delegations/", DelegationListView.as_view(), name="api-delegations"),
    path("delegations/<int:pk>/end/", DelegationEndView.as_view(), name="api-delegation-end"),
]
