"""/api/v1/requests/: thin views that parse input, call one service, serialize the result."""

from collections.abc import Mapping

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from common.api import WriteThrottle, conflict
from common.idempotency import idempotent

from .. import forecasts, policies, selectors, services, validation
from ..workflow import Action
from .serializers import (
    DecisionInputSerializer,
    RequestInputSerializer,
    RequestOutputSerializer,
    WithdrawInputSerializer,
    parsed_values,
)


class ComputeRequestViewSet(viewsets.GenericViewSet):
    serializer_class = RequestOutputSerializer
    filterset_class = selectors.RequestFilter
    search_fields = ["project__name", "goal", "expected_outcome"]
    # Cursor keys only: columns that are never empty (submitted_at may be, so it is not offered).
    ordering_fields = ["created_at", "gpus", "start", "id"]
    ordering = ["-created_at", "-id"]
    # Filing and deciding are rate-limited per user: a burst answers 429 with Retry-After.
    throttled_actions = {"create", "approve", "reject", "request_changes"}

    def get_throttles(self):
        throttles = super().get_throttles()
        if self.action in self.throttled_actions:
            throttles.append(WriteThrottle())
        return throttles

    def get_queryset(self):
        return selectors.with_steps(selectors.requests_visible_to(self.request.user))

    def get_object(self):
        return selectors.request_get_for_user(self.request.user, self.kwargs["pk"])

    def _output(self, req, status_code=status.HTTP_200_OK):
        req = selectors.request_get_for_user(self.request.user, req.pk)
        context = {**self.get_serializer_context(), **self._positions([req])}
        return Response(RequestOutputSerializer(req, context=context).data, status=status_code)

    @staticmethod
    def _positions(requests):
        return {
            "queue_positions": selectors.queue_positions_for(requests),
            "forecasts": forecasts.forecasts_for(requests),
        }

    def handle_exception(self, exc):
        # A service's Conflict (the request's state moved on) is a 409; NotAllowed is a
        # PermissionDenied (403) and bad input a ValidationError (400), see common/api.py.
        if isinstance(exc, services.Conflict):
            return conflict(exc.message)
        return super().handle_exception(exc)

    def _input(self, request, *, partial: bool, current: dict | None = None) -> dict:
        """The parsed body, or one 400 with every field's problem: a field that does not parse
        (a priority not offered, a missing goal) does not hide the rules' answers on the others
        (gpus=0, an end before the start), as the form does (views._all_errors)."""
        data = RequestInputSerializer(data=request.data, partial=partial)
        if data.is_valid():
            return data.validated_data
        errors = {field: [str(m) for m in messages] for field, messages in data.errors.items()}
        if not isinstance(request.data, Mapping):
            raise ValidationError(errors)  # not an object: nothing more to check
        try:
            validation.request_clean(
                user=request.user, data={**(current or {}), **parsed_values(data)}
            )
        except DjangoValidationError as rules:
            for field, messages in rules.message_dict.items():
                errors.setdefault(field, messages)
        raise ValidationError(errors)

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        context = {**self.get_serializer_context(), **self._positions(page)}
        data = RequestOutputSerializer(page, many=True, context=context).data
        return self.get_paginated_response(data)

    def retrieve(self, request, *args, **kwargs):
        return self._output(self.get_object())

    @extend_schema(request=RequestInputSerializer, responses={201: RequestOutputSerializer})
    @idempotent
    def create(self, request, *args, **kwargs):
        values = self._input(request, partial=False)
        req = services.request_create(user=request.user, data=values)
        return self._output(req, status.HTTP_201_CREATED)

    def _update(self, request, partial: bool):
        # 404 if hidden, then 403/409 if it may not be edited, and only then look at the body.
        target = self.get_object()
        services.check(policies.can_edit(request.user, target))
        values = self._input(
            request, partial=partial, current=services.request_values(target) if partial else None
        )
        req = services.request_update(user=request.user, request_id=target.pk, data=values)
        return self._output(req)

    @extend_schema(request=RequestInputSerializer, responses=RequestOutputSerializer)
    def update(self, request, *args, **kwargs):
        return self._update(request, partial=False)

    @extend_schema(request=RequestInputSerializer, responses=RequestOutputSerializer)
    def partial_update(self, request, *args, **kwargs):
        return self._update(request, partial=True)

    @extend_schema(request=None, responses=RequestOutputSerializer)
    @action(detail=True, methods=["post"])
    @idempotent
    def submit(self, request, pk=None):
        req = services.request_submit(user=request.user, request_id=int(self.get_object().pk))
        return self._output(req)

    @extend_schema(request=WithdrawInputSerializer, responses=RequestOutputSerializer)
    @action(detail=True, methods=["post"])
    @idempotent
    def withdraw(self, request, pk=None):
        target = self.get_object()
        data = WithdrawInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        req = services.request_withdraw(
            user=request.user, request_id=target.pk, comment=data.validated_data["comment"]
        )
        return self._output(req)

    def _decide(self, request, decision: str):
        target = self.get_object()
        data = DecisionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        req = services.request_decide(
            user=request.user,
            request_id=target.pk,
            action=decision,
            comment=data.validated_data["comment"],
        )
        return self._output(req)

    @extend_schema(request=DecisionInputSerializer, responses=RequestOutputSerializer)
    @action(detail=True, methods=["post"])
    @idempotent
    def approve(self, request, pk=None):
        return self._decide(request, Action.APPROVE)

    @extend_schema(request=DecisionInputSerializer, responses=RequestOutputSerializer)
    @action(detail=True, methods=["post"])
    @idempotent
    def reject(self, request, pk=None):
        return self._decide(request, Action.REJECT)

    @extend_schema(request=DecisionInputSerializer, responses=RequestOutputSerializer)
    @action(detail=True, methods=["post"], url_path="request-changes")
    @idempotent
    def request_changes(self, request, pk=None):
        return self._decide(request, Action.REQUEST_CHANGES)
