"""Bulk export for scripts and finance: `GET /api/v1/export/<what>.csv` and `.ndjson`, for
`requests`, `allocations`, `ledger` and `audit` (README, "Bulk export").

Each export is the matching list's rows — scoped by the same rule (requests_app.selectors,
allocator.selectors, org.visibility, front.audit_api), filtered by the same FilterSet — streamed
in id order. Memory stays flat whatever the row count: the rows come from one server-side
cursor (`QuerySet.iterator(chunk_size=...)`, one query in all), and each chunk of rows is
written to the client before the next is fetched. Outside a transaction Django declares that
cursor WITH HOLD: PostgreSQL keeps the result on its side, so the export is one consistent
snapshot and no transaction stays open while a slow client downloads.

A query parameter the export does not know, or a value its filter cannot read, answers 400
naming it, before anything is streamed. CSV cells that a spreadsheet would run as a formula
(starting with = + - @, a tab or a carriage return) are prefixed with an apostrophe.

It lives in the front app because it reads requests_app, allocator and audit together."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import django_filters
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.urls import path
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.views import APIView

from allocator.api.views import AllocationFilter
from allocator.models import Allocation, LedgerEntry
from common.filters import FilterError
from common.inputs import ZonedDateTimeFilter
from org.visibility import visible_projects_q
from requests_app.selectors import RequestFilter, requests_visible_to

from .audit_api import AuditEventFilter, audit_events_visible_to

# Rows fetched from the cursor, and written to the client, at a time.
CHUNK_ROWS = 2000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BOOLEAN_VALUES = {"true", "false", "1", "0", ""}
MEDIA_TYPES = {"csv": "text/csv", "ndjson": "application/x-ndjson"}


class LedgerFilter(django_filters.FilterSet):
    allocation = django_filters.NumberFilter(min_value=0, max_value=2**63 - 1)
    pool = django_filters.NumberFilter(
        field_name="allocation__pool", min_value=0, max_value=2**63 - 1
    )
    project = django_filters.NumberFilter(
        field_name="allocation__project", min_value=0, max_value=2**63 - 1
    )
    kind = django_filters.MultipleChoiceFilter(choices=LedgerEntry.Kind.choices)
    since = ZonedDateTimeFilter(field_name="at", lookup_expr="gte")
    until = ZonedDateTimeFilter(field_name="at", lookup_expr="lt")

    class Meta:
        model = LedgerEntry
        fields = ["allocation", "pool", "project", "kind", "since", "until"]


# --- What each export reads, and the row it writes ---


def _time(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with its zone, as the API writes times (common/db.py)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _pool_name(row: dict, prefix: str) -> str:
    return f"{row[prefix + 'cluster']}/{row[prefix + 'gpu_model']}"


def _request_row(r: dict) -> dict:
    applied = r["change__status"] == "applied"
    return {
        "id": r["id"],
        "project": r["project_id"],
        "project_name": r["project__name"],
        "team": r["project__team__name"],
        "division": r["project__team__division__name"],
        "pool": r["pool_id"],
        "pool_name": _pool_name(r, "pool__"),
        "gpus": r["gpus"],
        "start": _time(r["start"]),
        "end": _time(r["end"]),
        "kind": r["kind"],
        "target_allocation": r["target_allocation_id"],
        "priority": r["priority"],
        "flexible_start": r["flexible_start"],
        "goal": r["goal"],
        "expected_outcome": r["expected_outcome"],
        "size_rationale": r["size_rationale"],
        "impact_if_denied": r["impact_if_denied"],
        "status": r["status"],
        "round": r["round"],
        "executive_reasons": r["executive_reasons"],
        "allocation": r["change__allocation_id"] if applied else None,
        "requester": r["requester_id"],
        "requester_name": r["requester__username"],
        "created_at": _time(r["created_at"]),
        "submitted_at": _time(r["submitted_at"]),
        "approved_at": _time(r["approved_at"]),
    }


def _allocation_row(a: dict) -> dict:
    return {
        "id": a["id"],
        "project": a["project_id"],
        "project_name": a["project__name"],
        "team": a["project__team__name"],
        "division": a["project__team__division__name"],
        "pool": a["pool_id"],
        "pool_name": _pool_name(a, "pool__"),
        "gpus": a["gpus"],
        "start": _time(a["start"]),
        "end": _time(a["end"]),
        "state": a["state"],
        "request": a["change__request__id"],
        "created_at": _time(a["created_at"]),
    }


def _ledger_row(e: dict) -> dict:
    return {
        "id": e["id"],
        "at": _time(e["at"]),
        "kind": e["kind"],
        "allocation": e["allocation_id"],
        "request": e["change__request__id"],
        "project": e["allocation__project_id"],
        "project_name": e["allocation__project__name"],
        "pool": e["allocation__pool_id"],
        "pool_name": _pool_name(e, "allocation__pool__"),
        "gpus": e["gpus"],
        "start": _time(e["start"]),
        "end": _time(e["end"]),
        "actor": e["actor__username"],
        "note": e["note"],
    }


def _audit_row(e: dict) -> dict:
    return {
        "id": e["id"],
        "at": _time(e["at"]),
        "actor": e["actor__username"],
        "action": e["action"],
        "object_type": e["object_type"],
        "object_id": e["object_id"],
        "object_repr": e["object_repr"],
        "before": e["before"],
        "after": e["after"],
        "message": e["message"],
    }


@dataclass(frozen=True)
class Export:
    name: str
    filterset: type[django_filters.FilterSet]
    scoped: Callable[[Any], QuerySet]  # the rows the user may see, unfiltered
    paths: tuple[str, ...]  # the columns read (one SELECT, joins included)
    row: Callable[[dict], dict]
    summary: str
    description: str

    @property
    def columns(self) -> list[str]:
        return list(self.row(_Blank()).keys())


class _Blank(dict):
    """A row of Nones: the exports' column lists come from their row functions."""

    def __missing__(self, key):
        return None


EXPORTS = [
    Export(
        name="requests",
        filterset=RequestFilter,
        scoped=requests_visible_to,
        paths=(
            "id",
            "project_id",
            "project__name",
            "project__team__name",
            "project__team__division__name",
            "pool_id",
            "pool__cluster",
            "pool__gpu_model",
            "gpus",
            "start",
            "end",
            "kind",
            "target_allocation_id",
            "priority",
            "flexible_start",
            "goal",
            "expected_outcome",
            "size_rationale",
            "impact_if_denied",
            "status",
            "round",
            "executive_reasons",
            "change__status",
            "change__allocation_id",
            "requester_id",
            "requester__username",
            "created_at",
            "submitted_at",
            "approved_at",
        ),
        row=_request_row,
        summary="Export compute requests (CSV or NDJSON, streamed)",
        description="Every request you may see (the list's rule: confidential projects' "
        "requests only to their circle, drafts only to their team), in id order, with the "
        "list's filters (`status`, `division`, `team`, `pool`, `mine`, `q`). The fields of "
        "the request representation, without `steps` and the forecast (the audit export has "
        "every decision).",
    ),
    Export(
        name="allocations",
        filterset=AllocationFilter,
        scoped=lambda user: Allocation.objects.filter(visible_projects_q(user, "project__")),
        paths=(
            "id",
            "project_id",
            "project__name",
            "project__team__name",
            "project__team__division__name",
            "pool_id",
            "pool__cluster",
            "pool__gpu_model",
            "gpus",
            "start",
            "end",
            "state",
            "change__request__id",
            "created_at",
        ),
        row=_allocation_row,
        summary="Export allocations (CSV or NDJSON, streamed)",
        description="Every allocation you may see (confidential projects' ones only to their "
        "circle), in id order, with the list's filters (`pool`, `project`, `state`, "
        "`active_at`).",
    ),
    Export(
        name="ledger",
        filterset=LedgerFilter,
        scoped=lambda user: LedgerEntry.objects.filter(
            visible_projects_q(user, "allocation__project__")
        ),
        paths=(
            "id",
            "at",
            "kind",
            "allocation_id",
            "change__request__id",
            "allocation__project_id",
            "allocation__project__name",
            "allocation__pool_id",
            "allocation__pool__cluster",
            "allocation__pool__gpu_model",
            "gpus",
            "start",
            "end",
            "actor__username",
            "note",
        ),
        row=_ledger_row,
        summary="Export the allocation ledger (CSV or NDJSON, streamed)",
        description="Every ledger entry (grant, extend, release, reclaim, transfer, expire) of "
        "the allocations you may see, in id order: the allocation as it stood after the "
        "entry. Filters: `allocation`, `pool`, `project` (ids), `kind` (repeatable), `since` "
        "and `until` (times with a zone).",
    ),
    Export(
        name="audit",
        filterset=AuditEventFilter,
        scoped=audit_events_visible_to,
        paths=(
            "id",
            "at",
            "actor__username",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "before",
            "after",
            "message",
        ),
        row=_audit_row,
        summary="Export the audit trail (CSV or NDJSON, streamed)",
        description="The audit events you may see (executives and compute ops: all; others: "
        "the events of the requests they may view), in id order, with the audit list's "
        "filters (`object_type`, `object_id`, `action`, `actor`, `since`, `until`).",
    ),
]


# --- Writing ---


class _Line:
    """csv.writer's file: hands back the line it was given."""

    def write(self, text: str) -> str:
        return text


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_lines(columns: list[str], rows: Iterable[dict]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(columns)
    for row in rows:
        yield writer.writerow([_cell(row[c]) for c in columns])


def _ndjson_lines(columns: list[str], rows: Iterable[dict]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


def _chunks(lines: Iterator[str]) -> Iterator[bytes]:
    """One write per CHUNK_ROWS lines: the client gets each chunk before the next is read."""
    buffer: list[str] = []
    for line in lines:
        buffer.append(line)
        if len(buffer) >= CHUNK_ROWS:
            yield "".join(buffer).encode()
            buffer.clear()
    if buffer:
        yield "".join(buffer).encode()


def export_rows(export: Export, *, user, params, request=None) -> Iterator[dict]:
    """The export's rows for `user`, filtered by `params` (a QueryDict); lazy: nothing is read
    until the first row is asked for. Raises FilterError (400) for an unknown parameter or
    a value its filter cannot read."""
    filters = export.filterset.base_filters
    errors: dict[str, list[str]] = {}
    for name in params:
        if name not in filters:
            errors[name] = [f"Unknown filter. This export takes: {', '.join(sorted(filters))}."]
        elif (
            isinstance(filters[name], django_filters.BooleanFilter)
            and params[name].strip().lower() not in BOOLEAN_VALUES
        ):
            errors[name] = ["Give true or false."]
    if errors:
        raise FilterError(errors)
    filterset = export.filterset(params, queryset=export.scoped(user), request=request)
    if not filterset.is_valid():
        raise FilterError({k: [str(m) for m in v] for k, v in filterset.errors.items()})
    queryset = filterset.qs.order_by("id").values(*export.paths)
    return (export.row(r) for r in queryset.iterator(chunk_size=CHUNK_ROWS))


class _FirstRenderer(BaseContentNegotiation):
    """Errors are JSON whatever the Accept header says (the export itself is not rendered)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


def _parameter(name: str, spec: django_filters.Filter) -> OpenApiParameter:
    kind: Any = OpenApiTypes.STR
    enum = None
    many = False
    if isinstance(spec, django_filters.ModelChoiceFilter | django_filters.NumberFilter):
        kind = OpenApiTypes.INT  # (a ModelChoiceFilter is a ChoiceFilter: ask this first)
    elif isinstance(spec, django_filters.MultipleChoiceFilter | django_filters.ChoiceFilter):
        choices = spec.extra.get("choices") or getattr(spec.field, "choices", [])
        enum = [value for value, _label in choices if value != ""]
        many = isinstance(spec, django_filters.MultipleChoiceFilter)
    elif isinstance(spec, django_filters.BooleanFilter):
        kind = OpenApiTypes.BOOL
    elif isinstance(spec, django_filters.IsoDateTimeFilter):
        kind = OpenApiTypes.DATETIME
    return OpenApiParameter(
        name,
        kind,
        OpenApiParameter.QUERY,
        description=str(spec.label or spec.extra.get("help_text") or name),
        enum=enum,
        many=many,
        explode=True if many else None,
    )


def _view(export: Export, fmt: str) -> type[APIView]:
    media_type = MEDIA_TYPES[fmt]
    lines = _csv_lines if fmt == "csv" else _ndjson_lines
    body = "a header row, then one line per row" if fmt == "csv" else "one JSON object per line"

    class ExportView(APIView):
        content_negotiation_class = _FirstRenderer

        @extend_schema(
            operation_id=f"export_{export.name}_{fmt}",
            summary=export.summary.replace("CSV or NDJSON", fmt.upper()),
            description=f"{export.description} The body is {body}; times are ISO 8601 "
            "with a zone. An unknown parameter or a bad value answers 400 naming it.",
            parameters=[_parameter(n, f) for n, f in export.filterset.base_filters.items()],
            responses={
                (200, media_type): OpenApiTypes.STR,
            },
        )
        def get(self, request):
            rows = export_rows(export, user=request.user, params=request.GET, request=request)
            response = StreamingHttpResponse(
                _chunks(lines(export.columns, rows)), content_type=f"{media_type}; charset=utf-8"
            )
            day = timezone.now().astimezone(UTC).date().isoformat()
            filename = f"allotment-{export.name}-{day}.{fmt}"
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
            response["X-Content-Type-Options"] = "nosniff"
            return response

    ExportView.__name__ = ExportView.__qualname__ = f"{export.name.title()}{fmt.title()}Export"
    return ExportView


urlpatterns = [
    path(
        f"export/{export.name}.{fmt}",
        _view(export, fmt).as_view(),
        name=f"export-{export.name}-{fmt}",
    )
    for export in EXPORTS
    for fmt in MEDIA_TYPES
]
