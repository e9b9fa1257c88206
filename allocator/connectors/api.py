"""/api/v1/connectors/ (compute ops): each pool's scheduler status and "sync now";
/api/v1/export/kueue.yaml (compute ops, executives): the Kueue export."""

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from allocator.policies import can_manage_pools
from org.visibility import sees_every_project

from .kueue import kueue_yaml
from .models import PoolConnector
from .services import connector_sync_request


class ConnectorSerializer(serializers.ModelSerializer):
    pool_name = serializers.CharField(source="pool.name", read_only=True)
    last_sync = serializers.DateTimeField(source="last_sync_at", read_only=True)
    drift = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = PoolConnector
        fields = [
            "id",
            "pool",
            "pool_name",
            "kind",
            "cluster",
            "partition",
            "gres",
            "last_sync",
            "status",
            "drift",
        ]
        read_only_fields = fields


class ConnectorViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ConnectorSerializer
    queryset = PoolConnector.objects.select_related("pool").order_by(
        "pool__cluster", "pool__gpu_model"
    )

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if not can_manage_pools(request.user):
            raise PermissionDenied("Only compute ops can see and sync scheduler connectors.")

    @extend_schema(request=None, responses={202: ConnectorSerializer})
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        connector = get_object_or_404(self.get_queryset(), pk=pk)
        connector_sync_request(connector=connector, actor=request.user)
        return Response(ConnectorSerializer(connector).data, status=status.HTTP_202_ACCEPTED)


class KueueExportView(APIView):
    @extend_schema(
        summary="Desired Kueue ResourceFlavors, ClusterQueues and LocalQueues (multi-document YAML)",
        responses={(200, "application/yaml"): OpenApiTypes.STR},
    )
    def get(self, request):
        if not sees_every_project(request.user):
            raise PermissionDenied("Only compute ops and executives can export the quotas.")
        return HttpResponse(kueue_yaml(), content_type="application/yaml; charset=utf-8")


router = SimpleRouter()
router.register("connectors", ConnectorViewSet, basename="connector")

urlpatterns = [
    *router.urls,
    path("export/kueue.yaml", KueueExportView.as_view(), name="export-kueue"),
]
