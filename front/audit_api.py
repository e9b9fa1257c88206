"""GET /api/v1/audit/: the audit trail, read-only (nobody edits it, PRODUCT.md section 2).

Who sees what: executives and compute ops see every event (they see every project,
org.visibility). Everyone else, Django admins included, sees the events of the compute requests
they may view (requests_app.policies.can_view, as SQL through requests_app.selectors) and nothing
else: events of pools, shares, projects and allocations carry figures of other teams. Admins read
the whole trail in the Django admin.

It lives in the front app, above requests_app, because its scope is request visibility."""

from typing import Any

import django_filters
from django.db.models import Subquery
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.routers import SimpleRouter

from audit.models import AuditEvent
from common.inputs import ZonedDateTimeFilter
from org.visibility import sees_every_project
from requests_app.selectors import requests_visible_to

REQUEST_TYPE = "requests_app.computerequest"


class AuditEventSerializer(serializers.ModelSerializer):
    actor: "serializers.SlugRelatedField[Any]" = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    before = serializers.JSONField(read_only=True)
    after = serializers.JSONField(read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "at",
            "actor",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "before",
            "after",
            "message",
        ]
        read_only_fields = fields


class AuditEventFilter(django_filters.FilterSet):
    object_type = django_filters.CharFilter(help_text="e.g. requests_app.computerequest")
    object_id = django_filters.NumberFilter(min_value=0, max_value=2**63 - 1)
    action = django_filters.CharFilter()
    actor = django_filters.CharFilter(field_name="actor__username")
    since = ZonedDateTimeFilter(field_name="at", lookup_expr="gte")
    until = ZonedDateTimeFilter(field_name="at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["object_type", "object_id", "action", "actor", "since", "until"]


def audit_events_visible_to(user):
    queryset = AuditEvent.objects.select_related("actor")
    if sees_every_project(user):
        return queryset
    return queryset.filter(
        object_type=REQUEST_TYPE,
        object_id__in=Subquery(requests_visible_to(user).values("pk")),
    )


@extend_schema_view(
    list=extend_schema(
        summary="The audit trail",
        description="Executives and compute ops see every event; others see the events of "
        "the requests they may view.",
    ),
    retrieve=extend_schema(summary="One audit event"),
)
class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    search_fields = ["object_repr", "message"]
    ordering_fields = ["at", "id"]

    def get_queryset(self):
        return audit_events_visible_to(self.request.user)


router = SimpleRouter()
router.register("audit", AuditEventViewSet, basename="audit")
urlpatterns = router.urls
