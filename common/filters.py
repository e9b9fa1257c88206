"""Strict query parameters on every API list (docs/api.md, "Filters"): a parameter the list
does not know, or a filter value it cannot read, answers 400 naming the parameter, rather than
being ignored (a script asking for `?project=4` on a list without that filter would otherwise get
every row and believe it filtered).

Known on a list: its FilterSet's filters, `search` (when it has search fields), `ordering` (when
it has ordering fields), the pagination's `cursor` and `page_size`, and `format`."""

from __future__ import annotations

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter, SearchFilter

ALWAYS_KNOWN = {"format"}
# What a boolean filter reads (django-filter's widgets read anything else as "no filter").
BOOLEAN_VALUES = {"true", "false", "1", "0", ""}


class FilterError(ValidationError):
    """A 400 whose `detail` names the parameter (common.api.exception_handler)."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        name, messages = next(iter(errors.items()))
        self.summary = f"Invalid query parameter “{name}”: {messages[0]}"


def _is_list(view) -> bool:
    return getattr(view, "action", "list") == "list"


def _known_params(request, view, filterset_names: set[str]) -> set[str]:
    known = set(ALWAYS_KNOWN) | filterset_names
    for backend in getattr(view, "filter_backends", ()):
        if issubclass(backend, SearchFilter) and getattr(view, "search_fields", None):
            known.add(backend.search_param)
        if issubclass(backend, OrderingFilter) and getattr(view, "ordering_fields", None):
            known.add(backend.ordering_param)
    paginator = getattr(view, "paginator", None)
    for attribute in ("cursor_query_param", "page_size_query_param", "page_query_param"):
        if getattr(paginator, attribute, None):
            known.add(getattr(paginator, attribute))
    return known


class StrictFilterBackend(DjangoFilterBackend):
    """django-filter's backend, refusing unknown parameters and unreadable boolean values; a
    value its filters cannot read (`?status=bogus`, `?pool=abc`) is its own 400 already."""

    def filter_queryset(self, request, queryset, view):
        if not _is_list(view):
            return super().filter_queryset(request, queryset, view)
        filterset_class = self.get_filterset_class(view, queryset)
        filters = filterset_class.base_filters if filterset_class is not None else {}
        known = _known_params(request, view, set(filters))
        errors: dict[str, list[str]] = {}
        for name in request.query_params:
            if name in known:
                continue
            listed = ", ".join(sorted(known - ALWAYS_KNOWN)) or "none"
            errors[name] = [f"Unknown filter. This list takes: {listed}."]
        for name, spec in filters.items():
            raw = request.query_params.get(name)
            boolean = isinstance(spec, django_filters.BooleanFilter)
            if boolean and raw is not None and raw.strip().lower() not in BOOLEAN_VALUES:
                errors[name] = ["Give true or false."]
        if errors:
            raise FilterError(errors)
        try:
            return super().filter_queryset(request, queryset, view)
        except ValidationError as invalid:
            if isinstance(invalid.detail, dict):
                raise FilterError(
                    {key: [str(m) for m in value] for key, value in invalid.detail.items()}
                ) from invalid
            raise


class StrictOrderingFilter(OrderingFilter):
    """DRF's ordering, refusing a field the list does not offer (DRF drops it silently)."""

    def get_ordering(self, request, queryset, view):
        params = request.query_params.get(self.ordering_param)
        if params and _is_list(view):
            terms = [term.strip() for term in params.split(",") if term.strip()]
            valid = {
                name for name, _label in self.get_valid_fields(queryset, view, {"request": request})
            }
            unknown = [term for term in terms if term.lstrip("-") not in valid]
            if unknown or not terms:
                offered = ", ".join(sorted(valid)) or "none"
                raise FilterError(
                    {
                        self.ordering_param: [
                            f"Order by one of: {offered} (“-” before for descending)."
                        ]
                    }
                )
        return super().get_ordering(request, queryset, view)
