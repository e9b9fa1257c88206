"""Keyset (cursor) pagination for every API list (docs/api.md, "Lists").

A page is "the next `page_size` rows after this one in the list's order": the cursor carries the
sort key of the row it stops at, and the next page is read from the index at that key. Page 1,000
costs what page 1 costs (an offset would read and skip every earlier row), and rows filed during a
walk never shift it: each row is listed at most once, since the key only moves forward.

The order is the list's `ordering` (or the `ordering` query parameter) with `id` added as the
last key, so that it is unique. Only concrete, non-null columns can be keys: an order that cannot
be served by a cursor answers 400 naming `ordering`.

The total is capped: `count` counts at most COUNT_CAP rows (one bounded query, `SELECT count(*)
FROM (... LIMIT 1001)`), and `count_capped` says when there are more."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from .filters import FilterError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
COUNT_CAP = 1000
PAGE_SIZE_MESSAGE = f"Give a whole number of rows per page from 1 to {MAX_PAGE_SIZE}."
# `page=N` is kept for the scripts written against the page-numbered lists: read by offset (page N
# costs reading the N-1 pages before it), its `next` link a cursor. Bounded so an offset stays an
# integer PostgreSQL takes.
MAX_PAGE_NUMBER = 1_000_000
PAGE_MESSAGE = (
    f"Give a page number from 1 to {MAX_PAGE_NUMBER}, or better, follow `next` (a cursor); "
    "not both a page and a cursor."
)


def _bad(param: str, message: str) -> FilterError:
    return FilterError({param: [message]})


def _key_field(model, path: str):
    """The model field a sort key names (following `__` through forward, non-null relations),
    or None when the key cannot be a cursor key (unknown, nullable, a relation itself)."""
    parts = path.split("__")
    field = None
    for index, part in enumerate(parts):
        try:
            field = model._meta.get_field("id" if part == "pk" else part)
        except FieldDoesNotExist:
            return None
        if not getattr(field, "concrete", False) or getattr(field, "null", True):
            return None
        if field.is_relation:
            if index == len(parts) - 1 or field.many_to_many or field.one_to_many:
                return None
            model = field.related_model
    return field


def _value_of(instance, path: str):
    for part in path.split("__"):
        instance = getattr(instance, part)
    return instance


def _reversed(ordering: list[str]) -> list[str]:
    return [term[1:] if term.startswith("-") else f"-{term}" for term in ordering]


def _encode_value(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


class CursorPagination(BasePagination):
    cursor_query_param = "cursor"
    page_size_query_param = "page_size"
    page_query_param = "page"
    page_size = DEFAULT_PAGE_SIZE
    max_page_size = MAX_PAGE_SIZE
    count_cap = COUNT_CAP

    # --- request parsing ---

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw.strip())
        except ValueError:
            raise _bad(self.page_size_query_param, PAGE_SIZE_MESSAGE) from None
        if not 1 <= size <= self.max_page_size:
            raise _bad(self.page_size_query_param, PAGE_SIZE_MESSAGE)
        return size

    def get_page_number(self, request) -> int:
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        try:
            number = int(raw.strip())
        except ValueError:
            raise _bad(self.page_query_param, PAGE_MESSAGE) from None
        if not 1 <= number <= MAX_PAGE_NUMBER or self.cursor_query_param in request.query_params:
            raise _bad(self.page_query_param, PAGE_MESSAGE)
        return number

    def get_ordering(self, queryset, view) -> list[str]:
        """The list's order made unique (id last), each key checked to be a cursor key."""
        model = queryset.model
        requested = list(queryset.query.order_by or model._meta.ordering or [])
        ordering: list[str] = []
        for term in requested:
            if not isinstance(term, str):
                raise _bad("ordering", "This order cannot be paged by cursor.")
            name = term.lstrip("-")
            if _key_field(model, name) is None:
                raise _bad(
                    "ordering",
                    f"“{name}” cannot be paged by cursor (it may be empty or is not a column); "
                    "order by another field.",
                )
            ordering.append(term.replace("pk", "id") if name == "pk" else term)
            if name in ("id", "pk"):
                return ordering
        descending = bool(ordering) and ordering[0].startswith("-")
        return [*ordering, "-id" if descending else "id"]

    def decode_cursor(self, request, ordering: list[str]) -> tuple[list[Any], bool] | None:
        raw = request.query_params.get(self.cursor_query_param)
        if raw is None:
            return None
        try:
            padded = raw + "=" * (-len(raw) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            values, reverse, signature = data["p"], bool(data["r"]), data["o"]
            if not isinstance(values, list) or len(values) != len(ordering):
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error):
            raise _bad(
                self.cursor_query_param, "Not a cursor of this list: follow `next` or `previous`."
            ) from None
        if signature != ",".join(ordering):
            raise _bad(
                self.cursor_query_param,
                "This cursor belongs to another order of the list; start again without it.",
            )
        parsed = []
        for term, value in zip(ordering, values, strict=True):
            field = _key_field(self._model, term.lstrip("-"))
            try:
                parsed.append(field.to_python(value))
            except (DjangoValidationError, TypeError, ValueError, OverflowError):
                raise _bad(self.cursor_query_param, "Not a cursor of this list.") from None
        return parsed, reverse

    # --- the page ---

    @staticmethod
    def _after(ordering: list[str], values: list[Any], reverse: bool) -> Q:
        """Rows strictly after `values` in `ordering` (before them when `reverse`):
        (a > x) OR (a = x AND b > y) OR ..., and a redundant a >= x that PostgreSQL can use as
        the index bound (the OR alone would make it read the index from the start)."""
        clauses = Q()
        equal: dict[str, Any] = {}
        bound = None
        for term, value in zip(ordering, values, strict=True):
            name = term.lstrip("-")
            ascending = not term.startswith("-")
            if reverse:
                ascending = not ascending
            lookup = "gt" if ascending else "lt"
            clauses |= Q(**equal, **{f"{name}__{lookup}": value})
            equal[name] = value
            if bound is None:
                bound = Q(**{f"{name}__{'gte' if ascending else 'lte'}": value})
        assert bound is not None
        return bound & clauses

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self._model = queryset.model
        size = self.get_page_size(request)
        self.page_number = self.get_page_number(request)
        ordering = self.get_ordering(queryset, view)
        cursor = self.decode_cursor(request, ordering)
        self.ordering = ordering
        reverse = cursor is not None and cursor[1]

        # The capped total, on the filtered list without order or cursor: one bounded query.
        counted = queryset.order_by().values("pk")[: self.count_cap + 1].count()
        self.count = min(counted, self.count_cap)
        self.count_capped = counted > self.count_cap

        page = queryset.order_by(*(_reversed(ordering) if reverse else ordering))
        if cursor is not None:
            page = page.filter(self._after(ordering, cursor[0], reverse))
        offset = (self.page_number - 1) * size
        rows = list(page[offset : offset + size + 1])
        more = len(rows) > size
        rows = rows[:size]
        if reverse:
            rows.reverse()
            self.has_next, self.has_previous = True, more
        else:
            self.has_next, self.has_previous = more, cursor is not None or offset > 0
        self.rows = rows
        return rows

    def _link(self, row, reverse: bool) -> str:
        signature = ",".join(self.ordering)
        values = [_encode_value(_value_of(row, t.lstrip("-"))) for t in self.ordering]
        token = json.dumps({"p": values, "r": int(reverse), "o": signature}, separators=(",", ":"))
        encoded = base64.urlsafe_b64encode(token.encode()).decode("ascii").rstrip("=")
        here = remove_query_param(self.request.build_absolute_uri(), self.page_query_param)
        return replace_query_param(here, self.cursor_query_param, encoded)

    def get_next_link(self) -> str | None:
        if not self.has_next or not self.rows:
            return None
        return self._link(self.rows[-1], reverse=False)

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        if self.page_number > 1:
            # Reached by page number: the page before it, by number too.
            here = self.request.build_absolute_uri()
            if self.page_number == 2:
                return remove_query_param(here, self.page_query_param)
            return replace_query_param(here, self.page_query_param, self.page_number - 1)
        if not self.rows:
            # Past the end (rows went away): back to the first page.
            return remove_query_param(self.request.build_absolute_uri(), self.cursor_query_param)
        return self._link(self.rows[0], reverse=True)

    def get_paginated_response(self, data):
        return Response(
            {
                "count": self.count,
                "count_capped": self.count_capped,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    # --- OpenAPI ---

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["count", "count_capped", "next", "previous", "results"],
            "properties": {
                "count": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": self.count_cap,
                    "description": f"Rows in the whole filtered list, counted up to "
                    f"{self.count_cap}; see count_capped.",
                },
                "count_capped": {
                    "type": "boolean",
                    "description": f"True when the list holds more than {self.count_cap} rows "
                    f"(then count is {self.count_cap}): walk `next` to see them all.",
                },
                "next": {
                    "type": "string",
                    "nullable": True,
                    "format": "uri",
                    "description": "The next page, or null on the last one.",
                },
                "previous": {
                    "type": "string",
                    "nullable": True,
                    "format": "uri",
                    "description": "The page before, or null on the first one.",
                },
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Where the page starts: take it from `next` or `previous`, "
                "never build it.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_query_param,
                "required": False,
                "in": "query",
                "deprecated": True,
                "description": "A page number, for scripts written against page-numbered "
                "lists: read by offset, so deep pages cost more; its `next` is a cursor. "
                "Not with `cursor`.",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_NUMBER},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Rows per page, 1 to {self.max_page_size} (default "
                f"{self.page_size}); outside that range: 400.",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            },
        ]
