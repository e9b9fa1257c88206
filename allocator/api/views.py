"""/api/v1/pools/, /api/v1/allocations/ and /api/v1/capacity-changes/: thin views that parse
input, call one service and serialize the result. Scoping happens in the selectors."""

import django_filters
from django.core.exceptions import PermissionDenied
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.exceptions import PermissionDenied as DRFPermissionDenied
from rest_framework.response import Response

from common.idempotency import idempotent
from common.inputs import ZonedDateTimeFilter

from .. import selectors, services
from ..models import Allocation, CapacityChange, Pool
from ..policies import can_manage_pools, can_release
from ..signals import change_ids_for_requests
from .serializers import (
    AllocationSerializer,
    CapacityChangeInputSerializer,
    CapacityChangeSerializer,
    PoolSerializer,
    ReclaimInputSerializer,
    ReclaimOutputSerializer,
    ReleaseInputSerializer,
)


class PoolFilter(django_filters.FilterSet):
    cluster = django_filters.CharFilter(lookup_expr="iexact")
    gpu_model = django_filters.CharFilter(lookup_expr="iexact")

    class Meta:
        model = Pool
        fields = ["cluster", "gpu_model"]


@extend_schema_view(
    list=extend_schema(
        summary="List pools",
        description="Every pool with its capacity, allocated, free and waiting GPUs as of now.",
    ),
    retrieve=extend_schema(
        summary="Get a pool", description="One pool's capacity, allocated, free and waiting now."
    ),
)
class PoolViewSet(viewsets.GenericViewSet):
    """Pools with capacity, allocated, free and waiting GPUs as of now."""

    serializer_class = PoolSerializer
    filterset_class = PoolFilter
    search_fields = ["cluster", "gpu_model"]
    ordering_fields = ["cluster", "gpu_model", "id"]
    ordering = ["cluster", "gpu_model"]

    def get_queryset(self):
        return Pool.objects.select_related("connector")

    def list(self, request):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(
            PoolSerializer(selectors.pools_status(page), many=True).data
        )

    def retrieve(self, request, pk=None):
        pool = self.get_object()
        return Response(PoolSerializer(selectors.pools_status([pool])[0]).data)


class AllocationFilter(django_filters.FilterSet):
    active_at = ZonedDateTimeFilter(method="filter_active_at", label="Active at")

    class Meta:
        model = Allocation
        fields = ["pool", "project", "state"]

    def filter_active_at(self, queryset, name, value):
        return queryset.filter(start__lte=value, end__gt=value)


@extend_schema_view(
    list=extend_schema(
        summary="List allocations",
        description="Allocations you may see (confidential projects' ones only to their circle), "
        "newest start first; filter by pool, project, state or `active_at` (a time with a zone). "
        "Each lists its `pending_reclaims`: reclaims and transfers not yet in effect.",
    ),
    retrieve=extend_schema(
        summary="Get an allocation",
        description="One allocation, with the request that made it and its pending reclaims.",
    ),
)
class AllocationViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = AllocationSerializer
    filterset_class = AllocationFilter
    search_fields = ["project__name"]
    ordering_fields = ["start", "end", "gpus", "id"]
    ordering = ["-start", "-id"]

    # Rows of allocator.connectors by their related names, for gpu_hours_used and enforcement.
    CONNECTOR_ROWS = ("usage_days", "enforcement_intents")

    def get_queryset(self):
        return (
            selectors.allocations_for_user(self.request.user)
            .select_related("pool__connector")
            .prefetch_related(*self.CONNECTOR_ROWS)
        )

    def get_object(self):
        try:
            return self.get_queryset().get(pk=int(self.kwargs["pk"]))
        except (Allocation.DoesNotExist, ValueError) as missing:
            raise NotFound() from missing

    def _fresh(self, pk):
        return AllocationSerializer(selectors.allocation_get_for_user(self.request.user, pk)).data

    @extend_schema(
        summary="Release GPUs early (the project's team)",
        description="With no body, all the allocation's GPUs go back to the pool now. With "
        "`gpus`, that many go back from now on and the rest stay; with `end`, the allocation "
        "ends at that earlier time (ISO 8601 with a time zone). Both may be given. Freed GPUs "
        "serve the pool's waiting queue at once.",
        request=ReleaseInputSerializer,
        responses={200: AllocationSerializer},
    )
    @action(detail=True, methods=["post"])
    @idempotent
    def release(self, request, pk=None):
        allocation = self.get_object()
        if not can_release(request.user, allocation):
            raise DRFPermissionDenied("Only members of the project's team can release its GPUs.")
        data = ReleaseInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.allocation_release(
            allocation_id=allocation.pk,
            actor=request.user,
            gpus=data.validated_data.get("gpus"),
            end=data.validated_data.get("end"),
        )
        return Response(self._fresh(allocation.pk))

    @extend_schema(
        summary="Reclaim or transfer GPUs (compute ops)",
        description="Shrink the allocation to `new_gpus` (0: all go back) and/or shorten it to "
        "`new_end`, after `notice` hours (default: the installation's notice; 0: now). The "
        "owners are told at once. With `transfer_to` (a request number), the GPUs go to that "
        "approved request when the reclaim takes effect; otherwise back to the pool. The "
        "allocation lists it in `pending_reclaims` until then.",
        request=ReclaimInputSerializer,
        responses={201: ReclaimOutputSerializer},
    )
    @action(detail=True, methods=["post"])
    @idempotent
    def reclaim(self, request, pk=None):
        allocation = self.get_object()
        if not can_manage_pools(request.user):
            raise DRFPermissionDenied("Only compute ops can reclaim GPUs.")
        data = ReclaimInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        to_change = None
        if values.get("transfer_to") is not None:
            to_change = change_ids_for_requests([values["transfer_to"]]).get(values["transfer_to"])
            if to_change is None:
                raise ValidationError({"transfer_to": ["Unknown approved request."]})
        try:
            reclaim = services.allocation_reclaim(
                allocation_id=allocation.pk,
                actor=request.user,
                new_gpus=values["new_gpus"],
                new_end=values.get("new_end"),
                reason=values["reason"],
                notice_hours=values.get("notice"),
                transfer_to_id=to_change,
            )
        except PermissionDenied as denied:
            raise DRFPermissionDenied(str(denied)) from denied
        return Response(ReclaimOutputSerializer(reclaim).data, status=status.HTTP_201_CREATED)


class CapacityChangeFilter(django_filters.FilterSet):
    effective_after = ZonedDateTimeFilter(field_name="effective_at", lookup_expr="gte")
    effective_before = ZonedDateTimeFilter(field_name="effective_at", lookup_expr="lt")

    class Meta:
        model = CapacityChange
        fields = ["pool", "kind"]


@extend_schema_view(
    list=extend_schema(
        summary="List capacity changes",
        description="Arrivals, decommissions and repairs, latest first; filter by pool, kind, "
        "`effective_after` and `effective_before` (times with a zone).",
    )
)
class CapacityChangeViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = CapacityChangeSerializer
    filterset_class = CapacityChangeFilter
    ordering_fields = ["effective_at", "id"]
    ordering = ["-effective_at", "-id"]

    def get_queryset(self):
        return CapacityChange.objects.all()

    @extend_schema(
        summary="Record a capacity change (compute ops)",
        description="An arrival (positive), decommission (negative) or repair, effective at a "
        "time with a zone. A decrease that would leave fewer GPUs than are allocated at some "
        "instant is refused with 400, naming the allocations in the way.",
        request=CapacityChangeInputSerializer,
        responses={201: CapacityChangeSerializer},
    )
    @idempotent
    def create(self, request):
        if not can_manage_pools(request.user):
            raise DRFPermissionDenied("Only compute ops record capacity changes.")
        data = CapacityChangeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        change = services.capacity_change_create(
            pool_id=values["pool"],
            kind=values["kind"],
            delta=values["delta"],
            effective_at=values["effective_at"],
            note=values["note"],
            actor=request.user,
        )
        return Response(CapacityChangeSerializer(change).data, status=status.HTTP_201_CREATED)
