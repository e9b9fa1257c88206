"""The pool's version counter (Pool.version): one number per pool that changes, in the same
transaction, with every write of that pool's rows that the whole-lab figures and the forecast
read:

    - every ledger row (records.ledger: grant, extend, release, reclaim, transfer, expire —
      every write of an allocation leaves one);
    - every capacity change (services/capacity.py);
    - every share change (shares/decision.py);
    - every reclaim scheduled, changed or cancelled (services/reclaims.py).

It is not bumped by approved changes being created, cancelled or settled without a ledger row
(pending, waiting, needs review, failed): those writes do not hold the pool lock (locks.py).

The engine's writers hold the pool row lock already (locks.py), so the UPDATE waits for nothing;
the share decision takes it after the share row, an order no engine transaction reverses (the
engine never locks shares). A cached figure is keyed by (pool id, created_at, version): a reader
reads the version before the rows it derives from, so what it stores under a version is never
older than that version."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import F

from .models import Pool


def pool_version_bump(pool_ids: Iterable[int]) -> None:
    ids = sorted(set(pool_ids))
    if ids:
        Pool.objects.filter(pk__in=ids).update(version=F("version") + 1)
