"""The cross-division balance (PRODUCT.md sections 2 and 5, "Balance"): each division's share of
each pool against what it holds now and at its peak over the horizon, and the executive decision
that changes a share.

Reads here are bulk: `pool_forecasts` builds the capacity/holdings timelines of every pool (and of
every division inside each pool) from two queries, whatever the number of pools, so the overview,
the balance page and the divisions API stay at a bounded query count with 100 pools. The
timelines use the same rows as `selectors.pool_timeline` (allocations ending after the origin,
every capacity change), so a forecast and the apply engine never disagree about a pool.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from org.models import Division
from org.roles import roles_of

from .models import Allocation, CapacityChange, DivisionShare, Pool
from .selectors import holding_allocations, horizon
from .timeline import Span, Timeline

# --- bulk forecast --------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldRow:
    """One allocation as the forecast sees it (no model instance: cheap for 30,000 rows)."""

    id: int
    pool_id: int
    division_id: int
    project_id: int
    project_name: str
    confidential: bool
    team_id: int
    state: str
    start: datetime
    end: datetime
    gpus: int


@dataclass
class PoolForecast:
    pool: Pool
    origin: datetime
    until: datetime
    timeline: Timeline
    changes: list[tuple[datetime, int]]
    held: list[HeldRow]
    _division_timelines: dict[int, Timeline] = field(default_factory=dict)

    @property
    def capacity_now(self) -> int:
        return self.timeline.steps[0].capacity

    @property
    def held_now(self) -> int:
        return self.timeline.steps[0].held

    @property
    def max_capacity(self) -> int:
        """The most GPUs the pool will hold at once, counting every scheduled change (the same
        rule as `selectors.max_capacity`)."""
        return max(step.capacity for step in self.timeline.steps)

    def division_timeline(self, division_id: int) -> Timeline:
        if division_id not in self._division_timelines:
            self._division_timelines[division_id] = Timeline(
                self.origin,
                self.changes,
                [Span(r.start, r.end, r.gpus) for r in self.held if r.division_id == division_id],
            )
        return self._division_timelines[division_id]

    def division_held_now(self, division_id: int) -> int:
        return self.division_timeline(division_id).steps[0].held

    def division_peak(self, division_id: int) -> int:
        """The division's largest holding at any instant of [origin, until)."""
        return self.division_timeline(division_id).max_held(self.origin, self.until)

    def steps_until(self) -> list:
        """The pool's steps in force over [origin, until)."""
        return self.timeline.window(self.origin, self.until)


def pool_forecasts(
    pools=None, *, origin: datetime | None = None, until: datetime | None = None
) -> dict[int, PoolForecast]:
    """Timelines of the given pools (default all) over [origin, until) — default now and the
    horizon (90 days). Two queries: every capacity change of those pools, and every allocation
    overlapping the window, joined to its project's team for the division."""
    origin = origin or timezone.now()
    until = until or origin + horizon()
    pools = list(pools if pools is not None else Pool.objects.all())
    ids = [p.pk for p in pools]
    changes: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for pool_id, at, delta in CapacityChange.objects.filter(pool_id__in=ids).values_list(
        "pool_id", "effective_at", "delta"
    ):
        changes[pool_id].append((at, delta))
    held: dict[int, list[HeldRow]] = defaultdict(list)
    rows = (
        # Released and reclaimed allocations hold nothing any more (selectors.HOLDING_STATES).
        holding_allocations()
        .filter(pool_id__in=ids, end__gt=origin, start__lt=until)
        .order_by()
        .values_list(
            "id",
            "pool_id",
            "project__team__division_id",
            "project_id",
            "project__name",
            "project__confidential",
            "project__team_id",
            "state",
            "start",
            "end",
            "gpus",
        )
    )
    for row in rows:
        held[row[1]].append(HeldRow(*row))
    forecasts = {}
    for pool in pools:
        spans = [Span(r.start, r.end, r.gpus) for r in held[pool.pk]]
        forecasts[pool.pk] = PoolForecast(
            pool=pool,
            origin=origin,
            until=until,
            timeline=Timeline(origin, changes[pool.pk], spans),
            changes=changes[pool.pk],
            held=held[pool.pk],
        )
    return forecasts


def summed_timeline(forecasts: dict[int, PoolForecast], origin: datetime) -> Timeline:
    """All pools as one: capacity and holdings summed (a Timeline does not care about pools)."""
    changes = [c for f in forecasts.values() for c in f.changes]
    spans = [Span(r.start, r.end, r.gpus) for f in forecasts.values() for r in f.held]
    return Timeline(origin, changes, spans)


# --- summaries computed in PostgreSQL (the whole-lab pages) ---------------------------------
#
# The overview, the balance page and the divisions API need, for every pool, a handful of numbers
# (capacity now and at most, each division's holding now and at its peak over the horizon) and one
# chart series. Building 500 timelines in Python from ~15,000 rows took ~0.3-0.5 s at lab scale;
# the same sweep as `Timeline` (events at start/end instants, summed per instant, running sums in
# order) runs in PostgreSQL and returns a few hundred rows. tests/allocator/test_summaries.py
# checks every figure against the Timeline on generated pools.

_HOLDING = """
    SELECT a.id, a.pool_id, t.division_id, a.project_id, a.state,
           greatest(a.start, %(origin)s) AS s, a.start, a."end" AS e, a.gpus
    FROM allocator_allocation a
    JOIN org_project p ON p.id = a.project_id
    JOIN org_team t ON t.id = p.team_id
    WHERE a.pool_id = ANY(%(ids)s) AND a.state = ANY(%(states)s)
      AND a."end" > %(origin)s AND a.start < %(until)s
"""

_CAPACITY_SQL = """
    WITH c AS (
        SELECT pool_id, greatest(effective_at, %(origin)s) AS at, sum(delta) AS d
        FROM allocator_capacitychange WHERE pool_id = ANY(%(ids)s) GROUP BY 1, 2
    ), run AS (
        SELECT pool_id, at, sum(d) OVER (PARTITION BY pool_id ORDER BY at) AS cap FROM c
    )
    SELECT pool_id, max(cap) FILTER (WHERE at = %(origin)s), max(cap) FROM run GROUP BY pool_id
"""

_HOLDINGS_SQL = f"""
    WITH a AS ({_HOLDING}), ev AS (
        SELECT pool_id, division_id, at, sum(d) AS d FROM (
            SELECT pool_id, division_id, s AS at, gpus AS d FROM a
            UNION ALL
            SELECT pool_id, division_id, e, -gpus FROM a
        ) x GROUP BY 1, 2, 3
    ), run AS (
        SELECT pool_id, division_id, at,
               sum(d) OVER (PARTITION BY pool_id, division_id ORDER BY at) AS held
        FROM ev
    )
    SELECT pool_id, division_id,
           coalesce(max(held) FILTER (WHERE at = %(origin)s), 0),
           coalesce(max(held) FILTER (WHERE at < %(until)s), 0)
    FROM run GROUP BY 1, 2
"""

# reclaim_candidates in SQL, for the (pool, division) pairs above their share: the division's
# active allocations, largest first, then latest end, then highest id, while the GPUs taken so far
# do not cover the excess.
_RECLAIM_SQL = f"""
    WITH want AS (
        SELECT * FROM unnest(%(want_pool)s::bigint[], %(want_division)s::bigint[],
                             %(want_excess)s::bigint[]) AS w(pool_id, division_id, excess)
    ), a AS ({_HOLDING}), c AS (
        SELECT a.*, w.excess, sum(a.gpus) OVER (
            PARTITION BY a.pool_id, a.division_id ORDER BY a.gpus DESC, a.e DESC, a.id DESC
        ) AS covered
        FROM a JOIN want w ON w.pool_id = a.pool_id AND w.division_id = a.division_id
        WHERE a.state = 'active'
    )
    SELECT c.id, c.pool_id, c.division_id, c.project_id, p.name, p.confidential, p.team_id,
           c.state, c.start, c.e, c.gpus
    FROM c JOIN org_project p ON p.id = c.project_id
    WHERE c.covered - c.gpus < c.excess
    ORDER BY c.pool_id, c.division_id, c.gpus DESC, c.e DESC, c.id DESC
"""

# One row per day of the window that has events: the lowest capacity and the highest holding
# among its steps, the first step's instant and the values in force at the end of the day.
_DAILY_SQL = f"""
    WITH a AS ({_HOLDING}), ev AS (
        SELECT at, sum(dc) AS dc, sum(dh) AS dh FROM (
            SELECT greatest(effective_at, %(origin)s) AS at, delta AS dc, 0 AS dh
            FROM allocator_capacitychange
            WHERE pool_id = ANY(%(ids)s) AND effective_at < %(until)s
            UNION ALL SELECT s, 0, gpus FROM a
            UNION ALL SELECT e, 0, -gpus FROM a WHERE e < %(until)s
        ) x GROUP BY at
    ), run AS (
        SELECT at, sum(dc) OVER w AS cap, sum(dh) OVER w AS held FROM ev WINDOW w AS (ORDER BY at)
    )
    SELECT floor(extract(epoch FROM at - %(origin)s) / 86400)::int AS day,
           min(at), min(cap), max(held),
           (array_agg(cap ORDER BY at DESC))[1], (array_agg(held ORDER BY at DESC))[1]
    FROM run GROUP BY 1 ORDER BY 1
"""


def _params(ids, origin: datetime, until: datetime, **extra) -> dict:
    from .selectors import HOLDING_STATES

    return {
        "ids": list(ids),
        "origin": origin,
        "until": until,
        "states": [str(s) for s in HOLDING_STATES],
        **extra,
    }


def _rows(sql: str, params: dict) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


@dataclass
class PoolSummary:
    """What a pool's forecast says about now and the horizon, without its timeline: the same
    numbers as PoolForecast (capacity_now, held_now, max_capacity, division_held_now,
    division_peak), from PostgreSQL."""

    pool: Pool
    origin: datetime
    until: datetime
    capacity_now: int
    max_capacity: int
    division_now: dict[int, int]
    division_peaks: dict[int, int]

    @property
    def held_now(self) -> int:
        return sum(self.division_now.values())

    def division_held_now(self, division_id: int) -> int:
        return self.division_now.get(division_id, 0)

    def division_peak(self, division_id: int) -> int:
        return self.division_peaks.get(division_id, 0)


def pool_summaries(
    pools=None, *, origin: datetime | None = None, until: datetime | None = None
) -> dict[int, PoolSummary]:
    """Capacity now and at most, and each division's holding now and peak over [origin, until)
    (default now and the horizon), of the given pools (default all). Two queries."""
    origin = origin or timezone.now()
    until = until or origin + horizon()
    pools = list(pools if pools is not None else Pool.objects.all())
    params = _params([p.pk for p in pools], origin, until)
    capacity = {pid: (now or 0, most or 0) for pid, now, most in _rows(_CAPACITY_SQL, params)}
    now_of: dict[int, dict[int, int]] = defaultdict(dict)
    peak_of: dict[int, dict[int, int]] = defaultdict(dict)
    for pool_id, division_id, now, peak in _rows(_HOLDINGS_SQL, params):
        now_of[pool_id][division_id] = int(now)
        peak_of[pool_id][division_id] = int(peak)
    result = {}
    for pool in pools:
        now, most = capacity.get(pool.pk, (0, 0))
        result[pool.pk] = PoolSummary(
            pool=pool,
            origin=origin,
            until=until,
            capacity_now=int(now),
            # Steps from the origin on: the capacity now, or any later one.
            max_capacity=int(max(now, most)),
            division_now=now_of[pool.pk],
            division_peaks=peak_of[pool.pk],
        )
    return result


def reclaim_lists(
    wanted: dict[tuple[int, int], int], *, origin: datetime, until: datetime
) -> dict[tuple[int, int], list[HeldRow]]:
    """{(pool id, division id): excess GPUs} -> the allocations compute ops would reclaim to
    cover each excess (`reclaim_candidates`' rule), in one query."""
    result: dict[tuple[int, int], list[HeldRow]] = defaultdict(list)
    if not wanted:
        return result
    # Asked even when no division is above its share (the answer is then empty at once): the
    # pages' query count does not depend on the data.
    keys = [k for k, v in wanted.items() if v > 0]
    params = _params(
        sorted({p for p, _ in keys}),
        origin,
        until,
        want_pool=[p for p, _ in keys],
        want_division=[d for _, d in keys],
        want_excess=[wanted[k] for k in keys],
    )
    for row in _rows(_RECLAIM_SQL, params):
        result[(row[1], row[2])].append(HeldRow(*row))
    return result


def daily_load(pools, *, origin: datetime, days: int) -> list[tuple[datetime, int, int]]:
    """(day start, lowest capacity, highest holding) for each of `days` days from `origin`, the
    given pools summed — what `common.charts.daily_points` draws from a (summed) timeline, in one
    query."""
    until = origin + timedelta(days=days)
    params = _params([p.pk for p in pools], origin, until)
    by_day = {row[0]: row[1:] for row in _rows(_DAILY_SQL, params)}
    capacity, held = 0, 0  # in force before the first event
    out = []
    for d in range(days):
        start = origin + timedelta(days=d)
        if d in by_day:
            first_at, low, high, last_capacity, last_held = by_day[d]
            if first_at > start:  # the step in force at the day's start counts too
                low, high = min(low, capacity), max(high, held)
            out.append((start, int(low), int(high)))
            capacity, held = last_capacity, last_held
        else:
            out.append((start, int(capacity), int(held)))
    return out


# --- balance --------------------------------------------------------------------------------


def _percent(part: int, whole: int) -> int | None:
    return round(100 * part / whole) if whole > 0 else None


@dataclass(frozen=True)
class ShareRow:
    division: Division
    pool: Pool
    share: int  # GPUs; 0 when no share row exists
    share_percent: int | None  # of the pool's current capacity
    held_now: int
    peak: int  # largest holding over the horizon
    reclaim: list[HeldRow]  # what compute ops would take back to bring the peak under the share

    @property
    def over(self) -> bool:
        return self.peak > self.share

    @property
    def excess(self) -> int:
        return max(self.peak - self.share, 0)


@dataclass(frozen=True)
class PoolBalance:
    forecast: PoolSummary  # capacity now and at most
    rows: list[ShareRow]

    @property
    def pool(self) -> Pool:
        return self.forecast.pool

    @property
    def shares_total(self) -> int:
        return sum(r.share for r in self.rows)

    @property
    def overcommitted(self) -> bool:
        """Shares promise more GPUs than the pool has now (allowed, but warned about)."""
        return self.shares_total > self.forecast.capacity_now


def reclaim_candidates(held: list[HeldRow], *, division_id: int, excess: int) -> list[HeldRow]:
    """The division's allocations compute ops would reclaim to cover `excess` GPUs: active ones
    (now or later), largest first and, among equals, the latest-ending first — fewest moves, and
    the longest commitments go before short ones that end on their own soon."""
    if excess <= 0:
        return []
    mine = sorted(
        (r for r in held if r.division_id == division_id and r.state == Allocation.State.ACTIVE),
        key=lambda r: (-r.gpus, -r.end.timestamp(), -r.id),
    )
    chosen, covered = [], 0
    for row in mine:
        if covered >= excess:
            break
        chosen.append(row)
        covered += row.gpus
    return chosen


def _share_row(forecast: PoolForecast, division: Division, share: int) -> ShareRow:
    peak = forecast.division_peak(division.pk)
    return ShareRow(
        division=division,
        pool=forecast.pool,
        share=share,
        share_percent=_percent(share, forecast.capacity_now),
        held_now=forecast.division_held_now(division.pk),
        peak=peak,
        reclaim=reclaim_candidates(forecast.held, division_id=division.pk, excess=peak - share),
    )


def _rows_of(
    summaries: dict[int, PoolSummary],
    pairs: list[tuple[Pool, Division]],
    shares: dict[tuple[int, int], int],
    *,
    with_reclaim: bool = True,
) -> dict[tuple[int, int], ShareRow]:
    """ShareRows of (pool, division) pairs from the pools' summaries: one more query for the
    allocations to reclaim where a division stands above its share (unless `with_reclaim` is
    false: then `reclaim` is left empty)."""
    excess = {}
    for pool, division in pairs:
        summary = summaries[pool.pk]
        excess[(pool.pk, division.pk)] = summary.division_peak(division.pk) - shares.get(
            (division.pk, pool.pk), 0
        )
    any_summary = next(iter(summaries.values()), None)
    reclaims = (
        reclaim_lists(excess, origin=any_summary.origin, until=any_summary.until)
        if any_summary is not None and with_reclaim
        else {}
    )
    rows = {}
    for pool, division in pairs:
        summary = summaries[pool.pk]
        share = shares.get((division.pk, pool.pk), 0)
        rows[(pool.pk, division.pk)] = ShareRow(
            division=division,
            pool=pool,
            share=share,
            share_percent=_percent(share, summary.capacity_now),
            held_now=summary.division_held_now(division.pk),
            peak=summary.division_peak(division.pk),
            reclaim=reclaims.get((pool.pk, division.pk), []),
        )
    return rows


def balance(
    *,
    origin: datetime | None = None,
    pools=None,
    summaries: dict[int, PoolSummary] | None = None,
    with_reclaim: bool = True,
) -> list[PoolBalance]:
    """Every pool (or the given ones) with every division's share, holding now and peak over
    the horizon. Six queries at most: pools, divisions, shares, the pools' summaries (2), the
    allocations to reclaim where a division is above its share — three when the caller already
    has the pools and their summaries and needs no reclaim lists (`with_reclaim=False`)."""
    origin = origin or timezone.now()
    pools = list(pools if pools is not None else Pool.objects.all())
    divisions = list(Division.objects.all())
    shares = {
        (d, p): g
        for d, p, g in DivisionShare.objects.filter(pool__in=pools).values_list(
            "division_id", "pool_id", "gpus"
        )
    }
    if summaries is None:
        summaries = pool_summaries(pools, origin=origin)
    rows = _rows_of(
        summaries, [(p, d) for p in pools for d in divisions], shares, with_reclaim=with_reclaim
    )
    return [
        PoolBalance(forecast=summaries[pool.pk], rows=[rows[(pool.pk, d.pk)] for d in divisions])
        for pool in pools
    ]


def division_holdings(divisions, *, origin: datetime | None = None) -> dict[int, list[ShareRow]]:
    """Shares, holdings now and peaks of the given divisions in every pool (for the API).
    Five queries at most: pools, shares, the pools' summaries (2), the allocations to reclaim."""
    origin = origin or timezone.now()
    divisions = list(divisions)
    pools = list(Pool.objects.all())
    shares = {
        (d, p): g
        for d, p, g in DivisionShare.objects.filter(
            division_id__in=[d.pk for d in divisions]
        ).values_list("division_id", "pool_id", "gpus")
    }
    summaries = pool_summaries(pools, origin=origin)
    rows = _rows_of(summaries, [(p, d) for d in divisions for p in pools], shares)
    return {d.pk: [rows[(p.pk, d.pk)] for p in pools] for d in divisions}


# --- the executive decision -----------------------------------------------------------------

MAX_SHARE_INPUT = 10**9  # anything above is nonsense input, refused before any arithmetic


@dataclass(frozen=True)
class ShareUpdate:
    share: DivisionShare
    before: int
    after: int
    changed: bool
    capacity_now: int
    shares_total: int  # of the pool, after the change
    row: ShareRow  # the division's standing in the pool after the change

    @property
    def overcommitted(self) -> bool:
        return self.shares_total > self.capacity_now

    @property
    def warnings(self) -> list[str]:
        pool, division = self.share.pool, self.share.division
        out = []
        if self.overcommitted:
            out.append(
                f"The shares of {pool.name} now add up to {self.shares_total} GPUs, more than its "
                f"capacity of {self.capacity_now}."
            )
        if self.row.over:
            listed = "; ".join(
                f"allocation #{r.id} ({r.project_name}, {r.gpus} GPUs until "
                f"{timezone.localtime(r.end):%Y-%m-%d %H:%M})"
                for r in self.row.reclaim
            )
            out.append(
                f"{division.name} holds up to {self.row.peak} GPUs of {pool.name} over the next "
                f"{horizon().days} days, {self.row.excess} above its new "
                f"share of {self.after}. To bring it back, compute ops would reclaim: {listed}."
            )
        return out


def _parse_gpus(value) -> int:
    if isinstance(value, bool):
        raise ValidationError({"gpus": ["Enter a whole number of GPUs."]})
    if isinstance(value, int):
        gpus = value
    else:
        text = str(value).strip()
        if not text or len(text) > 12 or not text.lstrip("-").isdigit():
            raise ValidationError({"gpus": ["Enter a whole number of GPUs."]})
        gpus = int(text)
    if gpus < 0:
        raise ValidationError({"gpus": ["A share cannot be negative."]})
    if gpus > MAX_SHARE_INPUT:
        raise ValidationError({"gpus": ["That is more GPUs than any pool holds."]})
    return gpus


@transaction.atomic
def division_share_set(*, actor, division_id: int, pool_id: int, gpus) -> ShareUpdate:
    """Set a division's share of a pool: an executive decision, audited with before and after.

    Refused: a non-executive actor (PermissionDenied), an unknown division or pool, a share that
    is not a whole number, negative, or above the most GPUs the pool will ever hold
    (ValidationError, nothing changes). Allowed but reported in `warnings`: shares of the pool
    adding up to more than its capacity, and a cut below what the division holds — with the
    allocations compute ops would have to reclaim.
    """
    if not roles_of(actor).is_executive:
        raise PermissionDenied("Only executives set division shares.")
    gpus = _parse_gpus(gpus)
    division = Division.objects.filter(pk=division_id).first()
    pool = Pool.objects.filter(pk=pool_id).first()
    errors = {}
    if division is None:
        errors["division"] = ["No such division."]
    if pool is None:
        errors["pool"] = ["No such pool."]
    if errors:
        raise ValidationError(errors)

    origin = timezone.now()
    forecast = pool_forecasts([pool], origin=origin)[pool.pk]
    if gpus > forecast.max_capacity:
        raise ValidationError(
            {
                "gpus": [
                    f"{pool.name} will never hold more than {forecast.max_capacity} GPUs; "
                    f"a share of {gpus} is out of range."
                ]
            }
        )

    # The row lock serialises two executives editing the same share: the second one reads the
    # first one's value as its `before`, so the audit trail chains without gaps.
    share, _ = DivisionShare.objects.get_or_create(
        division=division, pool=pool, defaults={"gpus": 0, "updated_by": actor}
    )
    share = (
        DivisionShare.objects.select_for_update()
        .select_related("division", "pool")
        .get(pk=share.pk)
    )
    before = share.gpus
    changed = before != gpus
    if changed:
        share.gpus = gpus
        share.updated_by = actor
        share.save(update_fields=["gpus", "updated_by", "updated_at"])
        audit_record(
            actor=actor,
            action="share.update",
            obj=share,
            before={"gpus": before, "division": division.pk, "pool": pool.pk},
            after={"gpus": gpus, "division": division.pk, "pool": pool.pk},
            message=f"Share of {division.name} in {pool.name}: {before} → {gpus} GPUs.",
        )

    shares_total = sum(DivisionShare.objects.filter(pool=pool).values_list("gpus", flat=True))
    return ShareUpdate(
        share=share,
        before=before,
        after=gpus,
        changed=changed,
        capacity_now=forecast.capacity_now,
        shares_total=shares_total,
        row=_share_row(forecast, division, gpus),
    )


# --- what-if: candidate shares, nothing saved -----------------------------------------------


@dataclass(frozen=True)
class StartChange:
    change_id: int
    request_id: int | None
    label: str
    gpus: int
    before: str  # the forecast in words, with the shares as they are
    after: str  # ... with the candidate shares
    shift_days: float | None  # + later, - earlier; None when the kind of outcome changes


@dataclass(frozen=True)
class WhatIfRow:
    division: Division
    share: int
    candidate: int
    held_now: int
    peak: int
    reclaim: list[HeldRow]  # allocations standing above the candidate share

    @property
    def over(self) -> bool:
        return self.peak > self.candidate

    @property
    def excess(self) -> int:
        return max(self.peak - self.candidate, 0)


@dataclass(frozen=True)
class ShareWhatIf:
    pool: Pool
    rows: list[WhatIfRow]
    moved: list[StartChange]
    capacity_now: int = 0

    assumptions = "Assumes no new approvals and no early releases."

    @property
    def shares_total(self) -> int:
        return sum(r.candidate for r in self.rows)

    @property
    def warnings(self) -> list[str]:
        """The same warning saving gives (ShareUpdate.warnings), before anyone saves."""
        if self.shares_total > self.capacity_now:
            return [
                f"The tried shares of {self.pool.name} add up to {self.shares_total} GPUs, more "
                f"than its capacity of {self.capacity_now}: saving them would overcommit it."
            ]
        return []


def _outcome_words(o) -> str:
    from .forecast import when

    if o is None:
        return "—"
    if o.kind == "allocated":
        return f"starts {when(o.start)}"
    if o.kind == "review":
        return "sent to executive review at apply time"
    return "not within the horizon"


def share_whatif(
    *, pool: Pool, candidate: dict[int, int], now: datetime | None = None
) -> ShareWhatIf:
    """What candidate shares of one pool would do, before anyone saves them: each division's
    holding (now, peak over the horizon) against its candidate share with the allocations that
    would stand above it, and which waiting requests would start earlier or later — the share
    rule decides at apply time who is sent to executive review, so the queue is simulated
    (allocator/forecast.py) with the shares as they are and with the candidates."""
    from .forecast import load_pools, simulate

    now = now or timezone.now()
    divisions = list(Division.objects.all())
    state = load_pools([pool.pk], now=now)[pool.pk]
    shares = {d.pk: state.shares.get(d.pk, 0) for d in divisions}
    proposed = {d.pk: candidate.get(d.pk, shares[d.pk]) for d in divisions}
    forecast = pool_forecasts([pool], origin=now)[pool.pk]
    rows = []
    for d in divisions:
        peak = forecast.division_peak(d.pk)
        rows.append(
            WhatIfRow(
                division=d,
                share=shares[d.pk],
                candidate=proposed[d.pk],
                held_now=forecast.division_held_now(d.pk),
                peak=peak,
                reclaim=reclaim_candidates(
                    forecast.held, division_id=d.pk, excess=peak - proposed[d.pk]
                ),
            )
        )
    before = simulate(state, now=now).outcomes
    after = simulate(state.with_changes(shares=proposed), now=now).outcomes
    labels = {c.pk: (c.label, c.gpus) for c in state.changes}
    moved_ids = []
    for change_id, b in before.items():
        a = after.get(change_id)
        if a is None or (b.kind, b.start) == (a.kind, a.start):
            continue
        moved_ids.append(change_id)
    from .signals import request_ids_for_changes

    request_of = request_ids_for_changes(moved_ids)
    moved = []
    for change_id in moved_ids:
        b, a = before[change_id], after[change_id]
        shift = None
        if b.kind == a.kind == "allocated":
            shift = round((a.start - b.start).total_seconds() / 86400, 1)
        label, gpus = labels.get(change_id, ("a request", 0))
        moved.append(
            StartChange(
                change_id=change_id,
                request_id=request_of.get(change_id),
                label=label,
                gpus=gpus,
                before=_outcome_words(b),
                after=_outcome_words(a),
                shift_days=shift,
            )
        )
    moved.sort(key=lambda m: (m.shift_days is None, m.shift_days or 0))
    from .selectors import pools_status

    return ShareWhatIf(
        pool=pool, rows=rows, moved=moved, capacity_now=pools_status([pool])[0].capacity
    )
