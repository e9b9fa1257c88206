"""Test-only fault points on the apply path (PROOFS.md section 2.0).

The engine calls `fault_point(name, change_id=...)` (or `change_ids=[...]` for a batch: a fault
armed for any change of the batch fires) at:

    before_tx                          the attempt is counted; the apply transaction is not open
    in_tx_before_commit                the apply's work is done, its transaction not committed
    after_commit_before_ack            the task committed; Celery has not acked the message
    view_after_commit_before_publish   the approval committed; the apply task is not sent yet

When settings.ALLOTMENT_FAULT_INJECTION is false (always, outside the test settings; a system
check refuses it in production) this returns at once without touching the database. Otherwise a
test arms a fault by committing a FaultInjection row (the model of the test-only app
tests/support/fault_injection, installed only by the test settings, so production databases
have no such table); the first matching row with `remaining > 0` is taken on a separate
autocommit connection (so the count survives the transaction that the fault then kills or rolls
back) and its action runs:

    sigkill_self   SIGKILL this process (in a prefork worker: the pool child running the task)
    sleep:N        sleep N seconds (the test kills, stops or disconnects the process meanwhile)
    raise          raise FaultInjected
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable

from django.apps import apps
from django.conf import settings
from django.db import connection, connections
from django.db.models import Q

POINTS = (
    "before_tx",
    "in_tx_before_commit",
    "after_commit_before_ack",
    "view_after_commit_before_publish",
)


# The test-only app that holds the FaultInjection model. Looked up by label, never imported:
# product code does not depend on the tests package.
APP_LABEL = "fault_injection"


class FaultInjected(RuntimeError):
    """Raised by an armed `raise` fault."""


def enabled() -> bool:
    return bool(getattr(settings, "ALLOTMENT_FAULT_INJECTION", False))


def fault_injection_model():
    """The FaultInjection model; only when fault injection is on (LookupError if its test app is
    not installed, which check allocator.E002 reports)."""
    return apps.get_model(APP_LABEL, "FaultInjection")


def fault_point(name: str, *, change_id: int | None = None, change_ids: Iterable[int] = ()) -> None:
    if not enabled():
        return
    model = fault_injection_model()
    ids = sorted({*change_ids, *([change_id] if change_id is not None else [])})

    # Cheap check first, on the caller's connection: almost always nothing is armed.
    armed = model.objects.filter(point=name, remaining__gt=0)
    if ids:
        armed = armed.filter(Q(change_id__isnull=True) | Q(change_id__in=ids))
    else:
        armed = armed.filter(change_id__isnull=True)
    if not armed.exists():
        return
    backend_pid = _backend_pid()
    action = _take(model._meta.db_table, name, ids, backend_pid)
    if action is not None:
        _run(action)


def _backend_pid() -> int | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]
    except Exception:
        return None


def _take(table: str, name: str, change_ids: list[int], backend_pid: int | None) -> str | None:
    """Decrement one matching row on its own connection, committed at once."""
    table = connection.ops.quote_name(table)
    side = connections.create_connection("default")
    try:
        side.set_autocommit(True)
        with side.cursor() as cursor:
            cursor.execute(
                f"""
                UPDATE {table} SET remaining = remaining - 1,
                       fired = fired + 1, last_pid = %s, last_backend_pid = %s
                 WHERE id = (
                    SELECT id FROM {table}
                     WHERE point = %s AND remaining > 0
                       AND (change_id IS NULL OR change_id = ANY(%s))
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                RETURNING action
                """,
                [os.getpid(), backend_pid, name, change_ids],
            )
            row = cursor.fetchone()
            return row[0] if row else None
    finally:
        side.close()


def _run(action: str) -> None:
    if action == "sigkill_self":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
    elif action == "raise":
        raise FaultInjected("fault injected")
    else:
        raise ValueError(f"unknown fault action {action!r}")
