"""/api/v1/divisions/: divisions with their shares and holdings in every pool; executives set a
division's share. Thin views over allocator.shares, which owns the share rule."""

from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from common.idempotency import idempotent
from common.schema import ERRORS, IDEMPOTENCY_KEY, NOT_FOUND
from org.models import Division
from org.roles import roles_of

from ..shares import MAX_SHARE_INPUT, division_holdings, division_share_set

ID_MAX = 2**63 - 1


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


@extend_schema_view(
    list=extend_schema(summary="Divisions with their shares and holdings in every pool"),
    retrieve=extend_schema(
        summary="A division with its shares and holdings",
        responses={200: DivisionSerializer, **NOT_FOUND},
    ),
)
class DivisionViewSet(viewsets.ReadOnlyModelViewSet):
    """Every signed-in user sees the divisions and the balance between them."""

    queryset = Division.objects.all()
    serializer_class = DivisionSerializer
    filterset_fields = ["slug"]
    search_fields = ["name"]
    ordering_fields = ["name", "id"]

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["holdings"] = getattr(self, "_holdings", {})
        return context

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        # Shares and holdings of the page's divisions in every pool, from the per-pool cache
        # (allocator/shares/cached.py): three queries when no pool changed.
        self._holdings = division_holdings(page)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, *args, **kwargs):
        division = self.get_object()
        self._holdings = division_holdings([division])
        return Response(self.get_serializer(division).data)

    @extend_schema(
        summary="Set the division's share of a pool (executives)",
        description="An audited executive decision. Allowed but reported in `warnings`: shares "
        "adding up to more than the pool's capacity, and a cut below what the division holds "
        "(then `reclaim` lists the allocations compute ops would take back).",
        request=ShareInputSerializer,
        responses={200: ShareUpdateSerializer, **ERRORS, **NOT_FOUND},
        parameters=[IDEMPOTENCY_KEY],
    )
    @action(detail=True, methods=["post", "patch"], url_path="share")
    @idempotent
    def share(self, request, pk=None):
        division = self.get_object()
        if not roles_of(request.user).is_executive:
            # Said before looking at the input; the service checks again under its lock.
            raise PermissionDenied("Only executives set division shares.")
        data = ShareInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = division_share_set(
            actor=request.user,
            division_id=division.pk,
            pool_id=data.validated_data["pool"],
            gpus=data.validated_data["gpus"],
        )
        return Response(ShareUpdateSerializer(result).data)
