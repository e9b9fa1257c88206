"""The org API: divisions (with shares and holdings; executives set shares), teams, projects
(team members create them) and the token endpoint. Views parse, call one service or selector,
and serialize (STYLE.md)."""

import django_filters
from django.contrib.auth import authenticate
from django.db.models import Q
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from allocator.shares import division_holdings, division_share_set
from common.idempotency import idempotent
from org.models import Division, Project, Team
from org.roles import roles_of

from .serializers import (
    ApiErrorSerializer,
    DivisionSerializer,
    ProjectInputSerializer,
    ProjectSerializer,
    ShareInputSerializer,
    ShareUpdateSerializer,
    TeamSerializer,
    TokenInputSerializer,
    TokenSerializer,
)
from .services import project_create

ERRORS = {
    400: OpenApiResponse(ApiErrorSerializer, description="Invalid input; nothing changed."),
    403: OpenApiResponse(ApiErrorSerializer, description="Not allowed, with the reason."),
}
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^\S(.*\S)?$"},
    OpenApiParameter.HEADER,
    required=False,
    description="1 to 255 characters. Send the same key again and the call has the effect of one.",
)
NOT_FOUND = {404: OpenApiResponse(ApiErrorSerializer, description="No such object for you.")}


# --- divisions ---


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
        # Shares and holdings of the page's divisions in every pool: four queries in all.
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


# --- teams ---


@extend_schema_view(
    retrieve=extend_schema(responses={200: TeamSerializer, **NOT_FOUND}),
)
class TeamViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Team.objects.select_related("division").prefetch_related("members")
    serializer_class = TeamSerializer
    filterset_fields = ["division"]
    search_fields = ["name"]
    ordering_fields = ["name", "id"]


# --- projects ---


class ProjectFilter(django_filters.FilterSet):
    division = django_filters.NumberFilter(field_name="team__division_id")
    mine = django_filters.BooleanFilter(method="filter_mine", label="Only my teams' projects")

    class Meta:
        model = Project
        fields = ["team", "state", "confidential"]

    def filter_mine(self, queryset, name, value):
        if value:
            return queryset.filter(team_id__in=roles_of(self.request.user).team_ids)
        return queryset


def projects_visible_to(user):
    """PRODUCT.md section 2: a confidential project is seen only by its team, its division's
    leads, executives and compute ops (and admins)."""
    roles = roles_of(user)
    queryset = Project.objects.select_related("team")
    if roles.is_executive or roles.is_compute_ops or roles.is_admin:
        return queryset
    return queryset.filter(
        Q(confidential=False)
        | Q(team_id__in=roles.team_ids)
        | Q(team__division_id__in=roles.lead_division_ids)
    )


@extend_schema_view(
    retrieve=extend_schema(responses={200: ProjectSerializer, **NOT_FOUND}),
)
class ProjectViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = ProjectSerializer
    filterset_class = ProjectFilter
    search_fields = ["name"]
    ordering_fields = ["name", "id", "expected_end", "created_at"]

    def get_queryset(self):
        return projects_visible_to(self.request.user).prefetch_related("scheduler_accounts")

    @extend_schema(
        summary="Create a project of one of your teams",
        request=ProjectInputSerializer,
        responses={201: ProjectSerializer, **ERRORS},
        parameters=[IDEMPOTENCY_KEY],
    )
    @idempotent
    def create(self, request, *args, **kwargs):
        data = ProjectInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        project = project_create(
            actor=request.user,
            team_id=v["team"],
            name=v["name"],
            description=v.get("description", ""),
            expected_end=v.get("expected_end"),
            confidential=v["confidential"],
        )
        return Response(ProjectSerializer(project).data, status=status.HTTP_201_CREATED)


# --- token ---


class TokenThrottle(SimpleRateThrottle):
    """Ten tries a minute per client address: slows password guessing through the API."""

    scope = "auth_token"
    rate = "10/min"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class TokenView(APIView):
    """POST username and password, get the user's API token (`Authorization: Token …`)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [TokenThrottle]

    @extend_schema(
        summary="Get an API token",
        request=TokenInputSerializer,
        responses={
            200: TokenSerializer,
            400: OpenApiResponse(ApiErrorSerializer, description="Wrong username or password."),
            429: OpenApiResponse(ApiErrorSerializer, description="Too many tries; wait."),
        },
        auth=[],
    )
    def post(self, request):
        data = TokenInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(
            request,
            username=data.validated_data["username"],
            password=data.validated_data["password"],
        )
        if getattr(request, "axes_locked_out", False):
            # django-axes refused the attempt: too many wrong passwords for this account from
            # this address. Say so, rather than "wrong password", as the sign-in page does.
            return Response(
                {
                    "detail": "Too many wrong passwords: sign-in for this account is locked for "
                    "a while. Try again later.",
                    "errors": {},
                },
                status=status.HTTP_429_TOO_MANY_REQUESTS,
            )
        if user is None or not user.is_active:
            raise ValidationError({"non_field_errors": ["Wrong username or password."]})
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})
