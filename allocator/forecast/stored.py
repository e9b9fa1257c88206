"""The forecast stored per pool (StoredForecast), so pages and the API read it instead of
simulating the lab (issue 13 item 4; docs/performance.md, "The stored forecast").

A pool's stored forecast stands while both hold:
- the pool's `version` is the one it was computed from. PostgreSQL bumps the version in the
  same transaction as every write the simulation reads (migration 0006 lists them), so a write
  to one pool makes that pool's row, and only that one, stale;
- the clock is before `stale_at`: the first instant after `computed_at` at which anything in
  the pool's timeline happens (an allocation's start or end, a capacity change, a reclaim, a
  change's start, end or horizon, an instant where the engine acts, the horizon's far end
  reaching one of those). Between two such instants the same rows forecast the same outcomes;
  only "now" itself moves (a change that fits at once starts "now").

Who writes it: the worker, after an apply commits (allocator.tasks.refresh_forecast), the
periodic sweep (refresh_stale), and otherwise the first reader who finds it stale. Computing
takes the pool's StoredForecast row lock (FOR UPDATE, pools in pk order), so two readers of a
stale pool do not both compute: the second waits, then finds it fresh. The version is read
by the statement that takes the lock, before the rows the simulation loads, so a result is
never stored under a newer version than the rows it was computed from (at worst under an older
one: recomputed by the next reader). Nothing lives in process memory; rows are a cache and may be deleted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ..selectors import horizon
from ..waiting import LateStart
from .simulation import Forecast, ForecastOutcome, simulate
from .state import PoolState, load_pools

FORMAT = 1  # of the stored outcomes; a new one makes every stored row stale


def settings_key() -> str:
    """What a stored result depends on besides the pool's rows and the clock."""
    return f"f{FORMAT}:h{settings.ALLOTMENT['HORIZON_DAYS']}"


# --- the stored form of an outcome --------------------------------------------------------


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _instant(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s is not None else None


def dump_outcome(o: ForecastOutcome) -> list:
    late = [_iso(o.late.start), _iso(o.late.asked_start), _iso(o.late.end)] if o.late else None
    return [
        o.change_id,
        o.kind,
        _iso(o.decided_at),
        _iso(o.start),
        _iso(o.end),
        o.reason,
        late,
        o.detail,
    ]


def load_outcome(row: list) -> ForecastOutcome:
    change_id, kind, decided_at, start, end, reason, late, detail = row
    return ForecastOutcome(
        change_id=change_id,
        kind=kind,
        decided_at=_instant(decided_at),
        start=_instant(start),
        end=_instant(end),
        reason=reason,
        late=LateStart(*(datetime.fromisoformat(t) for t in late)) if late else None,
        detail=detail,
    )


def _decode(outcomes) -> dict[int, ForecastOutcome]:
    rows = json.loads(outcomes) if isinstance(outcomes, str | bytes) else outcomes
    return {row[0]: load_outcome(row) for row in rows}


# --- when a result goes stale by itself ----------------------------------------------------


def stale_at(state: PoolState, result: Forecast) -> datetime | None:
    """The first instant after the forecast's `now` at which the pool's timeline or the engine's
    plan has an event, or the horizon's far end (now + horizon) reaches one: from then on the
    same rows may forecast something else. None when nothing is ahead."""
    now, span = result.now, horizon()
    instants: list[datetime] = [at for at, _, _ in state.capacity_changes]
    for a in (*state.allocations, *result.allocations):
        instants += (a.start, a.end)
    for c in state.changes:
        instants += (c.start, c.end)
        if c.flexible_start:
            instants.append(c.start + span)  # its window closes
    instants += (r.effective_at for r in state.reclaims)
    instants += result.instants
    ahead = [t for t in instants if t > now]
    ahead += (t - span for t in instants if t - span > now)
    return min(ahead, default=None)


# --- reading and writing -------------------------------------------------------------------

_READ = """
    SELECT p.id, p.version, f.version, f.key, f.stale_at, f.computed_at, {outcomes}
    FROM allocator_pool p LEFT JOIN allocator_storedforecast f ON f.pool_id = p.id
    WHERE p.id = ANY(%s)
"""


def _rows(ids: list[int], *, with_outcomes: bool) -> list[tuple]:
    sql = _READ.format(outcomes="f.outcomes::text" if with_outcomes else "NULL")
    with connection.cursor() as cursor:
        cursor.execute(sql, [ids])
        return cursor.fetchall()


def _fresh(row: tuple, now: datetime, key: str) -> bool:
    _, pool_version, version, stored_key, stale, _, _ = row
    return version == pool_version and stored_key == key and (stale is None or now < stale)


def outcomes_for_pools(
    pool_ids: Iterable[int], *, now: datetime | None = None
) -> dict[int, dict[int, ForecastOutcome]]:
    """{pool id: {change id: ForecastOutcome}}: the stored forecasts, one query for any number
    of pools while they are fresh; the stale ones are computed and stored first (refresh)."""
    now = now or timezone.now()
    ids = sorted(set(pool_ids))
    if not ids:
        return {}
    key = settings_key()
    result: dict[int, dict[int, ForecastOutcome]] = {}
    stale = []
    for row in _rows(ids, with_outcomes=True):
        if _fresh(row, now, key):
            result[row[0]] = _decode(row[6])
        else:
            stale.append(row[0])
    if stale:
        result.update(refresh(stale, now=now))
    return result


def tokens(pool_ids: Iterable[int], *, now: datetime | None = None) -> dict[int, str]:
    """A token per pool that changes whenever what its stored forecast stands on does: its
    version, the instant it goes stale by itself (`stale_at`) and the settings key. A key for
    what-ifs cached beside it (requests_app/previews.py): a recomputation that finds the same
    rows and the same next event keeps the token. One query while fresh; stale pools are
    refreshed first."""
    now = now or timezone.now()
    ids = sorted(set(pool_ids))
    if not ids:
        return {}
    key = settings_key()
    rows = _rows(ids, with_outcomes=False)
    stale = [row[0] for row in rows if not _fresh(row, now, key)]
    if stale:
        refresh(stale, now=now)
        rows = _rows(ids, with_outcomes=False)
    return {row[0]: f"{row[2]}|{_iso(row[4])}|{row[3]}" for row in rows}


def refresh(pool_ids: Iterable[int], *, now: datetime | None = None) -> dict[int, dict]:
    """Compute and store the forecasts of the given pools that are stale, under their
    StoredForecast row locks; return every asked-for pool's outcomes. Idempotent: a pool found
    fresh once its lock is held (another process just computed it) is read, not computed."""
    now = now or timezone.now()
    ids = sorted(set(pool_ids))
    if not ids:
        return {}
    key = settings_key()
    result: dict[int, dict[int, ForecastOutcome]] = {}
    # No savepoint of our own: an error here is the caller's (readers run in autocommit).
    with transaction.atomic(savepoint=False):
        with connection.cursor() as cursor:
            # One statement locks every pool's row in pk order, creating the missing ones (an
            # empty row never reads as fresh: version -1), and returns each row as it stands
            # once locked: a second reader that waited here finds what the first one stored.
            # The pool's version comes from the statement's snapshot, taken before any wait:
            # never newer than the rows the simulation loads next.
            cursor.execute(
                """INSERT INTO allocator_storedforecast AS f
                       (pool_id, version, computed_at, stale_at, key, outcomes)
                   SELECT id, -1, %s, NULL, '', '[]'::jsonb FROM allocator_pool
                   WHERE id = ANY(%s) ORDER BY id
                   ON CONFLICT (pool_id) DO UPDATE SET key = f.key
                   RETURNING f.pool_id,
                       (SELECT p.version FROM allocator_pool p WHERE p.id = f.pool_id),
                       f.version, f.key, f.stale_at, f.computed_at, f.outcomes::text""",
                [now, ids],
            )
            rows = cursor.fetchall()
        todo: dict[int, int] = {}
        for row in rows:
            if _fresh(row, now, key):
                result[row[0]] = _decode(row[6])
            else:
                todo[row[0]] = row[1]
        if todo:
            states = load_pools(todo, now=now)
            updates: list[Any] = []
            for pool_id, state in states.items():
                forecast = simulate(state, now=now)
                result[pool_id] = forecast.outcomes
                updates.append(
                    [
                        todo[pool_id],
                        now,
                        stale_at(state, forecast),
                        key,
                        json.dumps([dump_outcome(o) for o in forecast.outcomes.values()]),
                        pool_id,
                    ]
                )
            with connection.cursor() as cursor:
                cursor.executemany(
                    """UPDATE allocator_storedforecast SET version = %s, computed_at = %s,
                       stale_at = %s, key = %s, outcomes = %s::jsonb WHERE pool_id = %s""",
                    updates,
                )
    return result


def stale_pools(*, now: datetime | None = None) -> list[int]:
    """Pools with waiting or approved changes whose stored forecast is missing or stale."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT p.id FROM allocator_pool p
               LEFT JOIN allocator_storedforecast f ON f.pool_id = p.id
               WHERE (f.pool_id IS NULL OR f.version <> p.version OR f.key <> %s
                      OR f.stale_at <= %s)
                 AND EXISTS (SELECT 1 FROM allocator_allocationchange c
                             WHERE c.pool_id = p.id AND c.status IN ('waiting', 'pending'))
               ORDER BY p.id""",
            [settings_key(), now],
        )
        return [row[0] for row in cursor.fetchall()]


def refresh_stale(*, now: datetime | None = None) -> int:
    """The periodic sweep: bring every stale stored forecast up to date, one pool per
    transaction (so a reader waits for one pool's computation at most). Returns how many."""
    pools = stale_pools(now=now)
    for pool_id in pools:
        refresh([pool_id], now=now)
    return len(pools)
