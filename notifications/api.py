"""/api/v1/notifications/: my notifications, the unread count, and marking them read."""

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from .models import Notification
from .services import notifications_mark_read


@extend_schema_field(
    {
        "type": "string",
        "description": "What it is about, one of: " + ", ".join(Notification.Kind.values) + ".",
    }
)
class NotificationKindField(serializers.CharField):
    """A plain string in the schema: an enum named `KindEnum` would collide with the request
    kinds' enum (drf-spectacular names enums by field name)."""


class NotificationSerializer(serializers.ModelSerializer):
    kind = NotificationKindField(read_only=True)
    read = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "kind", "message", "link", "created_at", "read_at", "read"]
        read_only_fields = fields

    def get_read(self, note) -> bool:
        return note.read_at is not None


class UnreadCountSerializer(serializers.Serializer):
    unread = serializers.IntegerField()


class MarkReadInputSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        required=False,
        max_length=500,
        help_text="The notifications to mark read; leave out to mark all of mine read.",
    )


class MarkReadSerializer(serializers.Serializer):
    marked = serializers.IntegerField(help_text="How many were unread and are now read.")
    unread = serializers.IntegerField()


class NotificationFilter(django_filters.FilterSet):
    unread = django_filters.BooleanFilter(field_name="read_at", lookup_expr="isnull")

    class Meta:
        model = Notification
        fields = ["kind", "unread"]


def _unread(user) -> int:
    return Notification.objects.filter(recipient=user, read_at__isnull=True).count()


@extend_schema_view(
    list=extend_schema(summary="My notifications, newest first"),
    retrieve=extend_schema(summary="One of my notifications"),
)
class NotificationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = NotificationSerializer
    filterset_class = NotificationFilter
    search_fields = ["message"]
    ordering_fields = ["created_at", "id"]

    queryset = Notification.objects.none()  # for the schema; get_queryset scopes it

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Notification.objects.none()
        # Only mine: another person's notification is a 404, never a 403.
        return Notification.objects.filter(recipient=self.request.user)

    @extend_schema(
        summary="How many of my notifications are unread", responses=UnreadCountSerializer
    )
    @action(
        detail=False,
        methods=["get"],
        url_path="unread-count",
        filter_backends=[],
        pagination_class=None,
    )
    def unread_count(self, request):
        return Response({"unread": _unread(request.user)})

    @extend_schema(
        summary="Mark my notifications read (the given ones, or all)",
        request=MarkReadInputSerializer,
        responses=MarkReadSerializer,
    )
    @action(detail=False, methods=["post"], url_path="mark-read", filter_backends=[])
    def mark_read(self, request):
        data = MarkReadInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        marked = notifications_mark_read(user=request.user, ids=data.validated_data.get("ids"))
        return Response({"marked": marked, "unread": _unread(request.user)})


router = SimpleRouter()
router.register("notifications", NotificationViewSet, basename="notification")
urlpatterns = router.urls
