"""Capacity changes + holdings -> Timeline: the one loader behind every reader of a pool's
future (the engine's fit and share checks, the pool chart, the whole-lab forecasts, the
requests' share effects, the reclaim suggestions), so they all see the same rows.

Two queries whatever the number of pools: every capacity change of the pools (those before the
origin make its starting capacity), and the allocations holding GPUs that end after the origin
(and start before `until`, when given).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from django.db.models import QuerySet

from .models import Allocation, CapacityChange
from .timeline import Span, Timeline

# Allocations that hold GPUs over their [start, end). A released or fully reclaimed allocation
# gives its GPUs back: its end is cut to the moment it was given back when it had started, and
# it is left out of every holding from then on (one that never started never held anything).
HOLDING_STATES = (Allocation.State.ACTIVE, Allocation.State.ENDED)


def holding_allocations() -> QuerySet[Allocation]:
    return Allocation.objects.filter(state__in=HOLDING_STATES)


class Held(Protocol):
    """Anything that holds GPUs over [start, end): a Span, an allocation, a row of one."""

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...

    @property
    def gpus(self) -> int: ...


def timeline_of(
    origin: datetime, changes: Iterable[tuple[datetime, int]], held: Iterable[Held]
) -> Timeline:
    return Timeline(origin, changes, [Span(h.start, h.end, h.gpus) for h in held])


R = TypeVar("R", bound=Held)


@dataclass(frozen=True)
class PoolRows(Generic[R]):
    """What `load_pool_rows` read: each pool's capacity changes and holding rows."""

    changes: dict[int, list[tuple[datetime, int]]]
    held: dict[int, list[R]]

    def timeline(
        self, pool_id: int, origin: datetime, held: Iterable[Held] | None = None
    ) -> Timeline:
        """The pool from `origin` on, holding `held` (default: every row read for it)."""
        return timeline_of(
            origin, self.changes[pool_id], self.held[pool_id] if held is None else held
        )


def _span(pool_id: int, start: datetime, end: datetime, gpus: int) -> Span:
    return Span(start, end, gpus)


SPAN_FIELDS = ("pool_id", "start", "end", "gpus")


def load_pool_rows(
    pool_ids: Iterable[int],
    *,
    origin: datetime,
    until: datetime | None = None,
    holdings: QuerySet[Allocation] | None = None,
    fields: Sequence[str] | None = SPAN_FIELDS,
    row: Callable[..., Any] = _span,
) -> PoolRows[Any]:
    """The pools' capacity changes and holdings from `origin` (up to `until`), in two queries.

    `holdings` narrows the allocations read (default `holding_allocations()`: a division's, say);
    each is read as `row(*values of fields)` — `fields` must include pool_id, the key — or, with
    `fields=None`, as the model instance, in the queryset's own order (for pages that show them).
    """
    ids = list(pool_ids)
    changes: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for pool_id, at, delta in read_rows(
        CapacityChange.objects.filter(pool_id__in=ids).values_list(
            "pool_id", "effective_at", "delta"
        )
    ):
        changes[pool_id].append((at, delta))
    allocations = (holdings if holdings is not None else holding_allocations()).filter(
        pool_id__in=ids, end__gt=origin
    )
    if until is not None:
        allocations = allocations.filter(start__lt=until)
    held: dict[int, list[Any]] = defaultdict(list)
    if fields is None:
        for allocation in allocations:
            held[allocation.pool_id].append(allocation)
    else:
        key = list(fields).index("pool_id")
        for values in read_rows(allocations.order_by().values_list(*fields)):
            held[values[key]].append(row(*values))
    return PoolRows(changes=changes, held=held)


_C_TIMESTAMPTZ = None


def read_rows(queryset: QuerySet[Any, Any]) -> list[tuple[Any, ...]]:
    """The rows of a values_list queryset, as the ORM would give them, read with psycopg's own
    (C) timestamptz loader where Django's would be used: Django's is pure Python (about 4 µs a
    timestamp, most of the load time at lab scale: ~90,000 timestamps). Both give aware
    datetimes in the session time zone, which Django sets to its database TIME_ZONE; only for
    UTC (the setting here) is the tzinfo object the same, so other zones keep Django's."""
    global _C_TIMESTAMPTZ
    from django.core.exceptions import EmptyResultSet
    from django.db import connections

    connection = connections[queryset.db]
    try:
        sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    except EmptyResultSet:
        return []
    with connection.cursor() as cursor:
        raw = getattr(cursor, "cursor", None)
        if connection.vendor == "postgresql" and connection.timezone_name == "UTC" and raw:
            if _C_TIMESTAMPTZ is None:
                import psycopg

                oid = psycopg.postgres.types["timestamptz"].oid
                _C_TIMESTAMPTZ = psycopg.adapters.get_loader(oid, psycopg.pq.Format.TEXT)
            raw.adapters.register_loader("timestamptz", _C_TIMESTAMPTZ)  # this cursor only
        cursor.execute(sql, params)
        return cursor.fetchall()
