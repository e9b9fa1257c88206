"""The executive decision that sets a division's share of a pool: validated, locked, audited,
with the warnings an executive reads (an overcommitted pool, a cut below what is held)."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from org.models import Division
from org.roles import roles_of

from ..models import DivisionShare, Pool
from ..selectors import horizon
from .balance import ShareRow, _percent
from .forecasts import PoolForecast, pool_forecasts
from .reclaim import reclaim_lists

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
                f"{r.project_name} ({r.team_name}"
                + (f", request #{r.request_id}" if r.request_id else "")
                + f"): {r.gpus} GPUs until {timezone.localtime(r.end):%Y-%m-%d %H:%M}"
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
    errors: dict[str, list[str]] = {}
    if division is None:
        errors["division"] = ["No such division."]
    if pool is None:
        errors["pool"] = ["No such pool."]
    if errors or division is None or pool is None:
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


def _share_row(forecast: PoolForecast, division: Division, share: int) -> ShareRow:
    peak = forecast.division_peak(division.pk)
    key = (forecast.pool.pk, division.pk)
    reclaim = reclaim_lists({key: peak - share}, origin=forecast.origin, until=forecast.until)
    return ShareRow(
        division=division,
        pool=forecast.pool,
        share=share,
        share_percent=_percent(share, forecast.capacity_now),
        held_now=forecast.division_held_now(division.pk),
        peak=peak,
        reclaim=reclaim.get(key, []),
    )
