"""The org API: teams, projects (team members create them) and the token endpoint; divisions,
with their shares, are allocator's (allocator/api/divisions.py). Views parse, call one service
or selector, and serialize (STYLE.md)."""

import django_filters
from django.contrib.auth import authenticate
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from common.idempotency import idempotent
from common.schema import ERRORS, IDEMPOTENCY_KEY, NOT_FOUND, ApiErrorSerializer
from org.models import Project, Team
from org.roles import roles_of
from org.visibility import visible_projects_q

from .serializers import (
    ProjectInputSerializer,
    ProjectSerializer,
    TeamSerializer,
    TokenInputSerializer,
    TokenSerializer,
)
from .services import project_create

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
    """The projects the user may see (org.visibility, the one confidentiality rule)."""
    return Project.objects.select_related("team").filter(visible_projects_q(user))


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
    # Cursor keys only: expected_end may be empty, so it is not offered for ordering.
    ordering_fields = ["name", "id", "created_at"]

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
