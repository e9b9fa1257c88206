"""What a decider sees before deciding, scoped to the user who asks: how approving moves its
division against its share, and what approving would do to the pool's queue (the requests it
would delay, the pending requests competing with it)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, cast

from django.utils import timezone

from allocator.models import DivisionShare

from .forecasts import sentence
from .selectors import requests_visible_to
from .workflow import Status


@dataclass(frozen=True)
class ShareEffect:
    division: str
    pool: str
    share: int
    capacity: int  # the pool's capacity at the instant of the peak
    peak_now: int  # the division's peak holding over the request's range, without it
    peak_after: int  # ... and with it
    peak_at: datetime | None = None  # the instant of the peak: the percentages are of its capacity

    @staticmethod
    def _pct(part: int, whole: int) -> int | None:
        return round(100 * part / whole) if whole > 0 else None

    @property
    def share_percent(self):
        return self._pct(self.share, self.capacity)

    @property
    def now_percent(self):
        return self._pct(self.peak_now, self.capacity)

    @property
    def after_percent(self):
        return self._pct(self.peak_after, self.capacity)

    @property
    def exceeds(self) -> bool:
        return self.peak_after > self.share

    @property
    def words(self) -> str:
        """The effect in words, every percentage of the capacity at the instant it is about:
        "On 3 Dec 2026 09:00 UTC, when west/H200 has 768 GPUs, Research holds 364 (47%) against
        a share of 300 (39%); after approving, 664 (86%)"."""
        from allocator.waiting import when

        def pct(n):
            p = self._pct(n, self.capacity)
            return f" ({p}%)" if p is not None else ""

        at = f"On {when(self.peak_at)}, its peak, when" if self.peak_at else "At its peak, when"
        return (
            f"{at} {self.pool} has {self.capacity} GPUs, {self.division} holds {self.peak_now}"
            f"{pct(self.peak_now)} against a share of {self.share}{pct(self.share)}; after "
            f"approving, {self.peak_after}{pct(self.peak_after)}"
        )


class _DivisionHeld(NamedTuple):
    pool_id: int
    division_id: int
    start: datetime
    end: datetime
    gpus: int


def share_effects(requests, *, now: datetime | None = None) -> dict[int, ShareEffect]:
    """What approving each request would do to its division's holding of its pool, in three
    queries for any number of requests. The rule is allocator.selectors.share_check_on — the one
    the engine applies — over the same holdings (allocations that hold GPUs: not released or
    reclaimed ones)."""
    from allocator.loaders import holding_allocations, load_pool_rows
    from allocator.selectors import share_check_on

    requests = list(requests)
    if not requests:
        return {}
    now = now or timezone.now()
    pool_ids = {r.pool_id for r in requests}
    division_ids = {r.project.team.division_id for r in requests}
    origin = min([now, *(r.start for r in requests)])
    rows = load_pool_rows(
        pool_ids,
        origin=origin,
        holdings=holding_allocations().filter(project__team__division_id__in=division_ids),
        fields=("pool_id", "project__team__division_id", "start", "end", "gpus"),
        row=_DivisionHeld,
    )
    held: dict[tuple[int, int], list[_DivisionHeld]] = defaultdict(list)
    for pool_rows in rows.held.values():
        for h in pool_rows:
            held[h.pool_id, h.division_id].append(h)
    shares = {
        (p, d): g
        for p, d, g in DivisionShare.objects.filter(
            pool_id__in=pool_ids, division_id__in=division_ids
        ).values_list("pool_id", "division_id", "gpus")
    }
    effects = {}
    for r in requests:
        division = r.project.team.division
        key = (r.pool_id, division.pk)
        timeline = rows.timeline(r.pool_id, min(r.start, now), held[key])
        check = share_check_on(
            timeline,
            division_id=division.pk,
            share=shares.get(key, 0),
            gpus=r.gpus,
            start=r.start,
            end=r.end,
        )
        effects[r.pk] = ShareEffect(
            division=division.name,
            pool=r.pool.name,
            share=check.share,
            capacity=check.capacity_at_peak,
            peak_now=check.peak_after - r.gpus,
            peak_after=check.peak_after,
            peak_at=max(check.peak_at, r.start),
        )
    return effects


# --- Impact preview: what approving would do ---


@dataclass(frozen=True)
class Delay:
    request_id: int | None  # None when the viewer may not see it
    label: str
    before: datetime | None  # its forecast start without the request
    after: datetime | None  # ... and with it (None: no longer served within the horizon)

    @property
    def by(self):
        if self.before is None or self.after is None:
            return None
        return self.after - self.before

    @property
    def by_words(self) -> str:
        """ "by 3 days", or "beyond the horizon" when it would no longer be served."""
        from allocator.forecast import duration_words

        by = self.by
        return "beyond the horizon" if by is None else f"by {duration_words(by)}"


@dataclass(frozen=True)
class Competitor:
    """Another request pending review on the same pool, and what becomes of this one if that
    one is approved first."""

    request_id: int
    gpus: int
    sentence: str  # "If #5 (300 GPUs) is approved first, this one waits until …"


@dataclass(frozen=True)
class ApprovalImpact:
    effect: ShareEffect | None
    outcome: str  # "at_once", "later", "waits", "review", "never"
    start: datetime | None
    sentence: str
    delays: list[Delay]
    competitors: list[Competitor] = field(default_factory=list)
    computed_at: datetime | None = None  # when this preview was simulated (it is stored)

    assumptions = "Assumes no new approvals and no early releases."


def _impactsentence(outcome, now) -> tuple[str, str]:
    from allocator.forecast import when

    if outcome.kind == "allocated" and outcome.decided_at == now:
        if outcome.start <= now + timedelta(minutes=1):
            return "at_once", "It would be allocated at once."
        return "later", f"It would be allocated at once, from {when(outcome.start)}."
    detail = getattr(outcome, "detail", "")  # why it would wait, what would serve it sooner
    if outcome.kind == "allocated":
        from allocator.waiting import late_start_words

        words = [f"It would wait, then start {when(outcome.start)}, {outcome.reason}."]
        if outcome.late is not None:
            words.append(f"Served then, it {late_start_words(outcome.late)}.")
        return "waits", " ".join([*words, detail]).strip()
    if outcome.kind == "review":
        return "review", f"At apply time it would be {outcome.reason}."
    return "never", f"It would wait. {sentence(outcome.reason)} {detail}".strip()


def _as_change(r, now: datetime):
    """The approved change a request would become (what approving it now adds to the queue)."""
    from allocator import forecast
    from allocator.models import Priority

    division = r.project.team.division
    return forecast.SimChange(
        pk=-r.pk,  # not a change id: changes have positive ids
        priority=int(Priority[r.priority.upper()]),
        approved_at=now,
        kind=r.kind,
        target_allocation_id=r.target_allocation_id,
        gpus=r.gpus,
        start=r.start,
        end=r.end,
        flexible_start=r.flexible_start,
        executive_reviewed=r.needs_executive,
        division_id=division.pk,
        label=forecast.project_label(r.project.name, r.project.confidential),
        status="pending",
        division_name=division.name,
    )


def _impact_key(extra, version: str, pool_id: int) -> str:
    import hashlib

    fields = {k: v for k, v in extra.__dict__.items() if k != "approved_at"}
    digest = hashlib.sha1(f"{version}|{sorted(fields.items())!r}".encode()).hexdigest()
    return f"impact2:{pool_id}:{digest}"


# A stored preview stands until its own next event (below); past that it is computed again, so
# the cache's timeout only reclaims the entries of versions that moved on.
PREVIEW_MAX_SECONDS = 24 * 3600


def _stands_until(*runs) -> datetime | None:
    """The first instant at which any of the (state, forecast) runs a preview was computed from
    may forecast something else (allocator.forecast.stored.stale_at): the request's own start,
    end and allocation are events of the "with it" run that the pool's stored forecast lacks."""
    from allocator.forecast.stored import stale_at

    instants = [t for state, result in runs if (t := stale_at(state, result)) is not None]
    return min(instants, default=None)


def _standing(entries: dict, now: datetime) -> dict:
    """The cached previews that still stand at `now` (their last item is when they go stale)."""
    return {k: v for k, v in entries.items() if v[-1] is None or now < v[-1]}


def _store(fresh: dict, now: datetime) -> None:
    from django.core.cache import cache

    # One set per timeout: each entry lives until it goes stale (capped), not a fixed minute.
    by_timeout: dict[int, dict] = defaultdict(dict)
    for key, entry in fresh.items():
        until = entry[-1]
        seconds = PREVIEW_MAX_SECONDS if until is None else (until - now).total_seconds()
        by_timeout[max(1, min(PREVIEW_MAX_SECONDS, int(seconds) + 1))][key] = entry
    for timeout, entries in by_timeout.items():
        cache.set_many(entries, timeout)


def approval_impacts(requests, *, user, now: datetime | None = None) -> dict[int, ApprovalImpact]:
    """For requests awaiting a decision: the division's share before and after (share_effects),
    whether approving now would allocate it at once, from a later date, or leave it waiting —
    and which waiting requests it would delay and by how much. Simulates each request's pool
    without it (once per pool) and with it (allocator/forecast/), both at the same instant.

    Stored in the Django cache (Redis: shared by every process) under what the preview depends
    on: the pool's token (allocator.forecast.tokens: the pool's version, which PostgreSQL bumps
    with every write the forecast reads, and its stored forecast's stale_at) and the request as
    it would be approved; each entry also carries the instant it goes stale by itself (the "with
    it" run's next event) and is computed again from then on. So a second load with no write in
    between simulates nothing, and a write to one pool recomputes that pool's previews only.
    Queries: share effects (3), the pool tokens (1), on a miss the pools' rows (6), the
    competitors (1), the delayed requests visible to the user (1), whatever the number of
    requests."""
    from django.core.cache import cache

    from allocator import forecast
    from telemetry.instruments import preview_simulations

    requests = [
        r
        for r in requests
        if r.status in (Status.PENDING_DIVISION, Status.PENDING_EXECUTIVE, Status.CHANGES_REQUESTED)
    ]
    if not requests:
        return {}
    now = now or timezone.now()
    effects = share_effects(requests, now=now)
    versions = forecast.tokens({r.pool_id for r in requests}, now=now)
    extras = {r.pk: _as_change(r, now) for r in requests}
    keys = {
        r.pk: _impact_key(extras[r.pk], versions.get(r.pool_id, ""), r.pool_id) for r in requests
    }
    cached = _standing(cache.get_many(list(set(keys.values()))), now)
    missing = [r for r in requests if keys[r.pk] not in cached]
    if missing:
        states = forecast.load_pools({r.pool_id for r in missing}, now=now)
        baseline = {pid: forecast.simulate(state, now=now) for pid, state in states.items()}
        preview_simulations.labels(kind="baseline").inc(len(baseline))
        fresh = {}
        for r in missing:
            state, extra = states[r.pool_id], extras[r.pk]
            with_state = state.with_changes(extra=[extra])
            with_it = forecast.simulate(with_state, now=now)
            preview_simulations.labels(kind="impact").inc()
            delays = []
            for change_id, o in baseline[r.pool_id].outcomes.items():
                after = with_it.outcomes.get(change_id)
                if o.kind != "allocated" or after is None:
                    continue
                # An allocated outcome always has its start (after's is compared only then).
                o_start, after_start = cast(datetime, o.start), cast(datetime, after.start)
                if after.kind != "allocated" or after_start > o_start:
                    delays.append((change_id, o.start, after.start if after.allocated else None))
            delays.sort(key=lambda d: (d[2] is not None, d[1]))
            delayed = {d[0] for d in delays}
            labels = {c.pk: c.label for c in state.changes if c.pk in delayed}
            outcome = with_it.outcomes[extra.pk]
            kind, sentence = _impactsentence(outcome, now)
            until = _stands_until((state, baseline[r.pool_id]), (with_state, with_it))
            fresh[keys[r.pk]] = (kind, sentence, outcome.start, delays, labels, now, until)
        _store(fresh, now)
        cached.update(fresh)
    delayed_changes = {d[0] for key in keys.values() for d in cached[key][3]}
    visible = (
        dict(
            requests_visible_to(user)
            .filter(change_id__in=delayed_changes)
            .values_list("change_id", "pk")
        )
        if delayed_changes
        else {}
    )
    competition = _competition(requests, cached, keys, user=user, now=now)
    result = {}
    for r in requests:
        kind, sentence, start, delays, labels, computed_at, _ = cached[keys[r.pk]]
        result[r.pk] = ApprovalImpact(
            competitors=competition.get(r.pk, []),
            effect=effects.get(r.pk),
            outcome=kind,
            start=start,
            sentence=sentence,
            delays=[
                Delay(
                    request_id=visible.get(cid),
                    label=labels.get(cid, "a request") if cid in visible else "a request",
                    before=b,
                    after=a,
                )
                for cid, b, a in delays
            ],
            computed_at=computed_at,
        )
    return result


MAX_COMPETITORS = 3  # per request: the preview names the oldest few pending on its pool


def _rivals(user, pool_ids) -> list:
    """The oldest MAX_COMPETITORS + 1 requests pending review on each pool that the user may see
    (one more than a request names, as it may be among them): a window in the database rather
    than every pending request of the pools (thousands on a busy lab)."""
    from django.db.models import F, Window
    from django.db.models.functions import RowNumber

    return list(
        requests_visible_to(user)
        .filter(
            pool_id__in=pool_ids,
            status__in=[Status.PENDING_DIVISION, Status.PENDING_EXECUTIVE],
        )
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("pool_id")],
                order_by=[F("stage_entered_at").asc(), F("pk").asc()],
            )
        )
        .filter(rank__lte=MAX_COMPETITORS + 1)
        .order_by("stage_entered_at", "pk")
    )


def _competition(requests, cached, keys, *, user, now: datetime) -> dict[int, list[Competitor]]:
    """For each request, the other requests pending review on the same pool that the user may
    see (the oldest few), and what becomes of this one if such a request is approved first:
    each is simulated with both approved, the other one first. Stored like the impacts (the
    pool's token, both requests as they would be approved; until the first run's next event).
    Queries: the competitors (1), and on a miss the pools' rows (6)."""
    import hashlib

    from django.core.cache import cache

    from allocator import forecast

    rivals = _rivals(user, {r.pool_id for r in requests})
    others = {
        r.pk: [c for c in rivals if c.pool_id == r.pool_id and c.pk != r.pk][:MAX_COMPETITORS]
        for r in requests
    }
    others = {pk: cs for pk, cs in others.items() if cs}
    if not others:
        return {}
    ckeys = {}
    for r in requests:
        if r.pk in others:
            rival_keys = "|".join(
                _impact_key(_as_change(c, now), "", c.pool_id) for c in others[r.pk]
            )
            digest = hashlib.sha1(f"{keys[r.pk]}|{rival_keys}".encode()).hexdigest()
            ckeys[r.pk] = f"compete2:{digest}"
    found = _standing(cache.get_many(list(ckeys.values())), now)
    missing = [r for r in requests if r.pk in ckeys and ckeys[r.pk] not in found]
    if missing:
        states = forecast.load_pools({r.pool_id for r in missing}, now=now)
        fresh = {
            ckeys[r.pk]: _compete(r, others[r.pk], states[r.pool_id], cached[keys[r.pk]], now)
            for r in missing
        }
        _store(fresh, now)
        found.update(fresh)
    return {pk: found[key][0] for pk, key in ckeys.items()}


def _compete(r, others, state, alone, now: datetime) -> tuple[list[Competitor], datetime | None]:
    """The competitors' sentences, and until when they stand."""
    from allocator import forecast
    from allocator.waiting import late_start_words
    from telemetry.instruments import preview_simulations

    alone_kind, _, alone_start, _, _, _, alone_until = alone
    mine = _as_change(r, now + timedelta(microseconds=1))  # approved just after the other
    result = []
    runs = []
    for c in others:
        both = state.with_changes(extra=[_as_change(c, now), mine])
        with_both = forecast.simulate(both, now=now)
        preview_simulations.labels(kind="competition").inc()
        runs.append((both, with_both))
        o = with_both.outcomes[mine.pk]
        kind, _ = _impactsentence(o, now)
        if kind == alone_kind and o.start == alone_start:
            continue
        if o.allocated:
            then = f"this one waits until {forecast.when(o.start)}"
            if o.late is not None:
                then += f" and {late_start_words(o.late)}"
        elif o.kind == "review":
            then = "this one goes to executive review at apply time"
        else:
            then = "this one is not served within the horizon"
        result.append(
            Competitor(
                request_id=c.pk,
                gpus=c.gpus,
                sentence=f"If #{c.pk} ({c.gpus} GPUs) is approved first, {then}.",
            )
        )
    until = min((t for t in (alone_until, _stands_until(*runs)) if t is not None), default=None)
    return result, until
