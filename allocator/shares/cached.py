"""The whole-lab summaries kept per pool in Django's cache (Redis: shared by every web process
on every machine, and allowed to vanish — ops/cache.py), so a page recomputes only the pools
that changed since they were cached.

A pool's entry is keyed by what its figures are derived from:
    - the pool's row: id, created_at and Pool.version, which moves in the transaction of every
      ledger row, capacity change, share change and scheduled reclaim of the pool
      (PostgreSQL triggers, allocator migration 0008);
    - the org mark: which team each project belongs to, each team's division, project and
      team names (a division's holdings and the reclaim lists read them; they change only in
      the admin);
    - the horizon setting;
and it holds from the origin it was computed at until its `valid_until` (the next instant at
which time alone changes a figure: summaries.PoolSummary.valid_until). One query reads the
marks of all pools; the pools that miss are recomputed together (summaries.pool_summaries:
two queries for any number of them). Reclaim lists are kept per pool the same way, keyed also
by the excess asked for (a share change asks a different one). The capacity chart sums pools,
which per-pool entries cannot give exactly; it is kept whole, per UTC calendar day and the
marks of the pools it sums.

The marks are read before the rows the figures come from (READ COMMITTED: each statement sees
what was committed when it began), so an entry stored under a version is never older than that
version."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from ..models import Pool
from ..selectors import horizon
from .reclaim import ReclaimRow, reclaim_lists
from .summaries import PoolSummary, daily_load, pool_summaries

# v1: the pickled values are _Entry / _Reclaims below; a new prefix if they change shape.
PREFIX = "summaries:v1"
MAX_SECONDS = 24 * 3600  # an entry nothing made stale is dropped after a day anyway

# One row per pool: its version and when it was made, with the org mark (the same for all).
_MARKS_SQL = """
    SELECT p.id, p.created_at, p.version, org.mark
    FROM allocator_pool p, (
        SELECT (SELECT coalesce(sum(hashtext(t.id || ':' || t.division_id)), 0) FROM org_team t)
               || '.' ||
               (SELECT coalesce(sum(hashtext(j.id || ':' || j.team_id || ':' || j.name
                                             || ':' || j.confidential)), 0)
                FROM org_project j) AS mark
    ) org
    WHERE p.id = ANY(%(ids)s)
"""


def pool_marks(pool_ids: Iterable[int]) -> dict[int, str]:
    """{pool id: the part of its cache keys that any write of what it is derived from
    changes}. One query for any number of pools."""
    ids = sorted(set(pool_ids))
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_MARKS_SQL, {"ids": ids})
        rows = cursor.fetchall()
    span = int(horizon().total_seconds())
    return {
        pid: f"{pid}:{created.timestamp():.6f}:{version}:{mark}:{span}"
        for pid, created, version, mark in rows
    }


class _Timed:
    computed_at: datetime
    valid_until: datetime | None

    def holds_at(self, origin: datetime) -> bool:
        """Computed at or before `origin`, and nothing on record changes it by then."""
        return self.computed_at <= origin and (
            self.valid_until is None or origin < self.valid_until
        )


@dataclass(frozen=True)
class _Entry(_Timed):
    computed_at: datetime
    valid_until: datetime | None
    capacity_now: int
    max_capacity: int
    division_now: dict[int, int]
    division_peaks: dict[int, int]


@dataclass(frozen=True)
class _Reclaims(_Timed):
    computed_at: datetime
    valid_until: datetime | None
    lists: dict[int, list[ReclaimRow]]  # by division


def _seconds(origin: datetime, valid_until: datetime | None) -> int:
    if valid_until is None:
        return MAX_SECONDS
    return max(1, min(MAX_SECONDS, int((valid_until - origin).total_seconds()) + 1))


def cached_pool_summaries(
    pools: Iterable[Pool], *, origin: datetime | None = None
) -> dict[int, PoolSummary]:
    """pool_summaries(pools, origin=origin) over the horizon, from the cache where a pool did
    not change: one query for the marks, two more for all the pools that missed."""
    origin = origin or timezone.now()
    until = origin + horizon()
    pools = list(pools)
    marks = pool_marks(p.pk for p in pools)
    keys = {p.pk: f"{PREFIX}:pool:{marks[p.pk]}" for p in pools if p.pk in marks}
    got = cache.get_many(list(keys.values()))
    entries: dict[int, _Entry] = {}
    for pid, key in keys.items():
        entry = got.get(key)
        if isinstance(entry, _Entry) and entry.holds_at(origin):
            entries[pid] = entry
    stale = [p for p in pools if p.pk not in entries]
    if stale:
        fresh = pool_summaries(stale, origin=origin, until=until)
        new = {
            pid: _Entry(
                computed_at=origin,
                valid_until=s.valid_until,
                capacity_now=s.capacity_now,
                max_capacity=s.max_capacity,
                division_now=s.division_now,
                division_peaks=s.division_peaks,
            )
            for pid, s in fresh.items()
        }
        entries.update(new)
        _store({keys[pid]: e for pid, e in new.items() if pid in keys}, origin)
    return {
        p.pk: PoolSummary(
            pool=p,
            origin=origin,
            until=until,
            capacity_now=entries[p.pk].capacity_now,
            max_capacity=entries[p.pk].max_capacity,
            division_now=dict(entries[p.pk].division_now),
            division_peaks=dict(entries[p.pk].division_peaks),
            valid_until=entries[p.pk].valid_until,
            cache_mark=marks.get(p.pk),
        )
        for p in pools
    }


def _store(values: dict, origin: datetime) -> None:
    """set_many per timeout (entries of one timeout are one round trip)."""
    by_seconds: dict[int, dict] = {}
    for key, value in values.items():
        by_seconds.setdefault(_seconds(origin, value.valid_until), {})[key] = value
    for seconds, batch in by_seconds.items():
        cache.set_many(batch, seconds)


def cached_reclaim_lists(
    wanted: dict[tuple[int, int], int], summaries: dict[int, PoolSummary]
) -> dict[tuple[int, int], list[ReclaimRow]]:
    """reclaim_lists(wanted) over the summaries' window, kept per pool under its mark (from
    cached_pool_summaries) and the excesses asked of it: no query when every pool hits, one
    for all the pools that missed. Summaries that did not come from the cache are answered
    uncached."""
    by_pool: dict[int, dict[int, int]] = {}
    for (pid, did), excess in wanted.items():
        by_pool.setdefault(pid, {})[did] = excess
    if not by_pool:
        return {}
    any_summary = next(iter(summaries.values()))
    origin, until = any_summary.origin, any_summary.until
    marks = {pid: summaries[pid].cache_mark for pid in by_pool}
    if any(m is None for m in marks.values()):
        return reclaim_lists(wanted, origin=origin, until=until)
    keys = {}
    for pid, asked_of in by_pool.items():
        asked = ",".join(f"{d}:{x}" for d, x in sorted(asked_of.items()) if x > 0)
        digest = hashlib.sha1(asked.encode()).hexdigest()[:16]
        keys[pid] = f"{PREFIX}:reclaim:{marks.get(pid)}:{digest}"
    got = cache.get_many(list(keys.values()))
    lists: dict[int, dict[int, list[ReclaimRow]]] = {}
    for pid, key in keys.items():
        entry = got.get(key)
        if isinstance(entry, _Reclaims) and entry.holds_at(origin):
            lists[pid] = entry.lists
    missing = [pid for pid in by_pool if pid not in lists]
    if missing:
        fresh = reclaim_lists(
            {(pid, d): x for pid in missing for d, x in by_pool[pid].items()},
            origin=origin,
            until=until,
        )
        new = {}
        for pid in missing:
            mine = {d: rows for (p, d), rows in fresh.items() if p == pid}
            lists[pid] = mine
            new[pid] = _Reclaims(
                computed_at=origin, valid_until=summaries[pid].valid_until, lists=mine
            )
        _store({keys[pid]: e for pid, e in new.items()}, origin)
    return {
        (pid, did): list(lists[pid].get(did, []))
        for pid, excess in by_pool.items()
        for did in excess
    }


def day_start(at: datetime) -> datetime:
    """00:00 UTC of `at`'s day: the capacity chart's days are UTC calendar days."""
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def cached_daily_load(
    pools: Iterable[Pool],
    *,
    days: int,
    now: datetime | None = None,
    summaries: dict[int, PoolSummary] | None = None,
) -> list[tuple[datetime, int, int]]:
    """daily_load of the given pools summed, over `days` UTC calendar days from today's: one
    entry for the whole chart, under the marks of the pools it sums and the day. Its figures
    read no clock (a calendar day's lowest capacity and highest holding are fixed by what is on
    record), so it holds until a pool changes or the day ends. One query for the marks (none
    when `summaries` from cached_pool_summaries carry them); on a miss, one more."""
    now = now or timezone.now()
    pools = list(pools)
    first = day_start(now)
    known = {pid: s.cache_mark for pid, s in (summaries or {}).items() if s.cache_mark}
    marks = known if all(p.pk in known for p in pools) else pool_marks(p.pk for p in pools)
    digest = hashlib.sha1("|".join(marks[p.pk] for p in pools if p.pk in marks).encode())
    key = f"{PREFIX}:daily:{first.timestamp():.0f}:{days}:{digest.hexdigest()}"
    points = cache.get(key)
    if points is None:
        points = daily_load(pools, origin=first, days=days) if pools else []
        seconds = int((first + timedelta(days=1) - now).total_seconds()) + 1
        cache.set(key, points, max(1, seconds))
    return points
