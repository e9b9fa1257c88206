"""Pagination for the HTML lists without a full COUNT(*) (docs/performance.md, "HTML lists").

Two kinds, chosen per list:

- `keyset_page`: "newer / older" on an indexed, unique ordering (say `-created_at, -id`). A page
  is read from the index after the last row seen (`WHERE key < cursor ORDER BY key LIMIT n+1`),
  so page 1,000 costs what page 1 costs, and rows written meanwhile neither repeat nor vanish.
  No total is shown.
- `CappedPaginator`: page numbers with a total counted up to a cap ("1,000+"): for lists with
  sort orders a keyset cannot follow (joined or nullable columns, orders made in Python).

The cursor is opaque text in the address (base64 of the key values as JSON); a cursor that does
not parse, or names values of the wrong type, reads as the first page — it came from a link.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from typing import Any

from django.core.exceptions import ValidationError
from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db.models import DateTimeField, Field, Model, Q, QuerySet
from django.utils.dateparse import parse_date, parse_datetime

OLDER = "older"
NEWER = "newer"


def _encode(values: Sequence[Any]) -> str:
    def plain(v: Any) -> Any:
        if isinstance(v, datetime | date):
            return {"t": v.isoformat()}
        return v

    raw = json.dumps([plain(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, count: int) -> list[Any] | None:
    if not cursor or len(cursor) > 1000:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(values, list) or len(values) != count:
        return None
    out: list[Any] = []
    for v in values:
        if isinstance(v, dict) and isinstance(v.get("t"), str) and len(v) == 1:
            text = v["t"]
            try:
                parsed = parse_datetime(text) if "T" in text else parse_date(text)
            except ValueError:
                return None
            if parsed is None:
                return None
            if isinstance(parsed, datetime):
                if parsed.tzinfo is None:
                    return None
                try:  # PostgreSQL's range, in UTC (common/db.py sends it so)
                    parsed = parsed.astimezone(UTC)
                except OverflowError:
                    return None
            out.append(parsed)
        elif isinstance(v, int | str) and not isinstance(v, bool):
            out.append(v)
        else:
            return None
    return out


def _typed(model: type[Model], names: Sequence[str], values: list[Any]) -> list[Any] | None:
    """The cursor's values as the key fields take them, or None when one does not fit (a string
    for a date, an id out of range): that cursor was not made by this list."""
    out = []
    for name, value in zip(names, values, strict=True):
        target = model._meta.pk if name in ("pk", "id") else model._meta.get_field(name)
        if not isinstance(target, Field):  # a relation's reverse side is never a key here
            return None
        try:
            typed = target.to_python(value)
            if isinstance(typed, int) and not -(2**63) <= typed < 2**63:
                return None
        except ValidationError:
            return None
        if isinstance(target, DateTimeField) and not isinstance(typed, datetime):
            return None
        out.append(typed)
    return out


def _after(ordering: Sequence[str], values: Sequence[Any]) -> Q:
    """Rows after `values` in `ordering` (each field "name" or "-name"): the first key no
    further than the cursor (a range the index can seek to), then the lexicographic rest."""
    names = [f.lstrip("-") for f in ordering]
    beyond = ["lt" if f.startswith("-") else "gt" for f in ordering]
    first = "lte" if beyond[0] == "lt" else "gte"
    rest = Q(pk__in=[])
    for i in range(len(names)):
        step = Q(**{f"{names[j]}": values[j] for j in range(i)})
        step &= Q(**{f"{names[i]}__{beyond[i]}": values[i]})
        rest |= step
    return Q(**{f"{names[0]}__{first}": values[0]}) & rest


def _reverse(ordering: Sequence[str]) -> list[str]:
    return [f[1:] if f.startswith("-") else f"-{f}" for f in ordering]


@dataclass
class KeysetPage:
    """One page of a keyset list: its rows, and the cursors of the pages either side (None at
    an end). `older` follows the list's order (further down), `newer` goes back up."""

    object_list: list[Any]
    older: str | None = None
    newer: str | None = None
    first: bool = True
    param: str = "cursor"
    extra: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.object_list)

    def __len__(self) -> int:
        return len(self.object_list)

    @property
    def has_other_pages(self) -> bool:
        return bool(self.older or self.newer)


def keyset_page(
    queryset: QuerySet,
    *,
    ordering: Sequence[str],
    cursor: str | None,
    size: int,
    param: str = "cursor",
) -> KeysetPage:
    """A page of `queryset` in `ordering` (unique: end it with the primary key) after or before
    the cursor. `cursor` is "older.<token>" or "newer.<token>" as made by the page's links;
    anything else is the first page. One query (size + 1 rows)."""
    names = [f.lstrip("-") for f in ordering]
    direction, _, token = (cursor or "").partition(".")
    values = _decode(token, len(names)) if direction in (OLDER, NEWER) else None
    if values is not None:
        values = _typed(queryset.model, names, values)
    if values is None:
        rows = list(queryset.order_by(*ordering)[: size + 1])
        more = len(rows) > size
        rows = rows[:size]
        return KeysetPage(
            rows, older=_cursor(OLDER, rows[-1], names) if more else None, param=param
        )
    if direction == OLDER:
        rows = list(queryset.filter(_after(ordering, values)).order_by(*ordering)[: size + 1])
        more = len(rows) > size
        rows = rows[:size]
        return KeysetPage(
            rows,
            older=_cursor(OLDER, rows[-1], names) if more else None,
            newer=_cursor(NEWER, rows[0], names) if rows else None,
            first=False,
            param=param,
        )
    back = _reverse(ordering)
    rows = list(queryset.filter(_after(back, values)).order_by(*back)[: size + 1])
    more = len(rows) > size
    rows = list(reversed(rows[:size]))
    return KeysetPage(
        rows,
        older=_cursor(OLDER, rows[-1], names) if rows else None,
        newer=_cursor(NEWER, rows[0], names) if more else None,
        first=not more,
        param=param,
    )


def _value(row: Any, name: str) -> Any:
    value: Any = row
    for part in name.split("__"):
        value = value.pk if part == "pk" and isinstance(value, Model) else getattr(value, part)
    return value


def _cursor(direction: str, row: Any, names: Sequence[str]) -> str:
    return f"{direction}.{_encode([_value(row, n) for n in names])}"


class CappedPaginator(Paginator):
    """Page numbers with the total counted only up to `cap` rows (`SELECT count(*) FROM (...
    LIMIT cap + 1)`): "1,000+" when there are more. Pages past the cap are still served; whether
    one follows is read with one row more than the page."""

    def __init__(self, object_list, per_page, *, cap: int = 1000, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        self.cap = cap

    @cached_property
    def count(self) -> int:
        sliced = self.object_list[: self.cap + 1]
        return sliced.count() if isinstance(sliced, QuerySet) else len(sliced)

    @property
    def capped(self) -> bool:
        return self.count > self.cap

    @property
    def count_label(self) -> str:
        return f"{self.cap:,}+" if self.capped else f"{self.count:,}"

    def validate_number(self, number):
        if self.capped:
            try:
                number = int(number)
            except (TypeError, ValueError):
                return 1
            return max(1, min(number, 10_000))
        return super().validate_number(number)

    def get_page(self, number):
        try:
            number = self.validate_number(number)
        except PageNotAnInteger:
            number = 1
        except EmptyPage:
            number = self.num_pages
        return self.page(number)

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page + 1])
        return CappedPage(rows[: self.per_page], number, self, more=len(rows) > self.per_page)


class CappedPage(Page):
    def __init__(self, object_list, number, paginator, *, more: bool):
        super().__init__(object_list, number, paginator)
        self.more = more

    def has_next(self) -> bool:
        return self.more

    @property
    def of_label(self) -> str:
        """ "of 12" or, past the cap, "of 40+"."""
        paginator = self.paginator
        if paginator.capped:  # type: ignore[attr-defined]
            known = -(-paginator.cap // paginator.per_page)  # type: ignore[attr-defined]
            return f"of {max(known, self.number):,}+"
        return f"of {paginator.num_pages:,}"


def capped_count_label(queryset: QuerySet, *, cap: int = 1000) -> str:
    """How many rows, counted up to `cap`: "12", "1,000" or "1,000+" (one query that stops
    after cap + 1 rows)."""
    count = queryset.order_by()[: cap + 1].count()
    return f"{cap:,}+" if count > cap else f"{count:,}"
