"""A defect L1 found: the apply task's claim skips a locked change row (SKIP LOCKED: "another
worker is on it") and drops the message. But a row is also locked, for a moment, by others that
are not applying it: the dispatch marking `dispatched_at` right after the publish, an insert that
references the change (foreign-key check, FOR KEY SHARE). A worker that took the message at that
instant acked it and did nothing: the change stayed pending, never attempted, until the sweep.

The claim must tell "busy" (row locked, still pending: try again shortly) from "nothing to do"
(gone or settled)."""

from __future__ import annotations

import threading

import pytest
from django.db import connections, transaction

from allocator import services
from allocator.models import AllocationChange
from allocator.services import changes
from tests.support.proofs import approve_changes

pytestmark = [pytest.mark.slow]


@pytest.mark.parametrize("lock", ["FOR UPDATE", "FOR NO KEY UPDATE", "FOR KEY SHARE"])
def test_a_pending_change_locked_by_someone_else_is_retried_not_dropped(
    transactional_db, pool, project, requester, lock, monkeypatch
):
    # given an approved change (its task not sent: no worker here)
    monkeypatch.setattr(changes, "dispatch", lambda change_id: None)
    (change,) = approve_changes(pool=pool, project=project, requested_by=requester, n=1)
    held, release = threading.Event(), threading.Event()

    def holder():
        try:
            with transaction.atomic(), connections["default"].cursor() as cursor:
                cursor.execute(
                    f"SELECT id FROM allocator_allocationchange WHERE id = %s {lock}", [change.pk]
                )
                held.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    try:
        # when the apply task runs while another transaction holds the row
        with pytest.raises(services.ChangeBusy):
            services.allocation_change_apply(change_id=change.pk)
    finally:
        release.set()
        thread.join(10)
    # then nothing was counted, and once the row is free the retry applies it
    assert AllocationChange.objects.get(pk=change.pk).attempts == 0
    assert services.allocation_change_apply(change_id=change.pk) == "applied"


def test_a_settled_change_is_still_a_quiet_no_op(transactional_db, pool, project, requester):
    (change,) = approve_changes(pool=pool, project=project, requested_by=requester, n=1)
    assert services.allocation_change_apply(change_id=change.pk) == "applied"
    assert services.allocation_change_apply(change_id=change.pk) is None
    assert services.allocation_change_apply(change_id=10**9) is None
