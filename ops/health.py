"""Liveness and readiness (PRODUCT.md section 9, docs/deploy.md).

Liveness (`/healthz`) touches nothing: a process that answers is alive, and restarting it would
not bring a database back. Readiness (`/readyz`) runs the checks below; each says what it saw in
a few plain fields and never a URL, a password or an exception's text (which may hold either).

Extension point: another app adds a check by naming a callable in the setting
`ALLOTMENT_READINESS_CHECKS` (a list of dotted paths). The callable takes no arguments and
returns a `Check`. The connector backlog check is built in but reads its number through the
setting `ALLOTMENT_CONNECTOR_BACKLOG` (a dotted path to a callable returning how many operations
wait to be sent to the lab's scheduler), so a connector plugs in without editing this file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.module_loading import import_string


@dataclass
class Check:
    name: str
    ok: bool
    detail: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"ok": self.ok, **self.detail}


def _timed(name: str, probe) -> Check:
    started = time.monotonic()
    try:
        ok, detail = probe()
    except Exception as error:
        # The class only: an exception's message may carry a connection string.
        ok, detail = False, {"error": type(error).__name__}
    detail["ms"] = round((time.monotonic() - started) * 1000, 1)
    return Check(name, ok, detail)


def _ops_setting(key: str, default):
    return getattr(settings, "ALLOTMENT_OPS", {}).get(key, default)


# --- the checks -----------------------------------------------------------------------------


def check_database() -> Check:
    def probe():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return True, {}

    return _timed("database", probe)


_migrations_done = False


def check_migrations() -> Check:
    """Every migration this code knows is applied. Once true it stays true for this process
    (new migrations only come with new code, hence a new process), so the probe stays cheap."""

    def probe():
        global _migrations_done
        if _migrations_done:
            return True, {"pending": 0}
        from django.db.migrations.executor import MigrationExecutor

        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        _migrations_done = not plan
        return not plan, {"pending": len(plan)}

    return _timed("migrations", probe)


def check_broker() -> Check:
    def probe():
        from celery import current_app as app  # the project's app (config/celery.py)

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            transport = conn.transport_cls
        return True, {"transport": str(transport)}

    return _timed("broker", probe)


def check_beat() -> Check:
    """celery beat sends `ops.tasks.beat_heartbeat` every few seconds and a worker records it:
    a recent heartbeat shows both the scheduler and at least one worker are running."""

    def probe():
        from .models import Heartbeat

        max_age = _ops_setting("BEAT_MAX_AGE_SECONDS", 120)
        beat = Heartbeat.objects.filter(name="beat").first()
        if beat is None:
            return False, {"age_seconds": None, "max_age_seconds": max_age}
        age = (timezone.now() - beat.at).total_seconds()
        return age <= max_age, {"age_seconds": round(age, 1), "max_age_seconds": max_age}

    return _timed("beat", probe)


def check_connector_backlog() -> Check:
    def probe():
        path = _ops_setting("CONNECTOR_BACKLOG", "")
        if not path:
            return True, {"configured": False}
        limit = _ops_setting("CONNECTOR_BACKLOG_MAX", 100)
        backlog = int(import_string(path)())
        return backlog <= limit, {"configured": True, "backlog": backlog, "max": limit}

    return _timed("connector_backlog", probe)


def check_email_outbox() -> Check:
    """Emails given up after every retry (notifications.Email `failed`) and emails due but not
    sent. Not ready only when the backlog of due emails passes EMAIL_BACKLOG_MAX: a mail server
    that refuses a few addresses must not take the web processes out of service."""

    def probe():
        from django.db.models import Count, Q

        from notifications.models import Email

        limit = _ops_setting("EMAIL_BACKLOG_MAX", 1000)
        counts = Email.objects.filter(state__in=["pending", "sending", "failed"]).aggregate(
            failed=Count("pk", filter=Q(state="failed")),
            due=Count("pk", filter=Q(state__in=["pending", "sending"])),
        )
        return counts["due"] <= limit, {**counts, "max_due": limit}

    return _timed("email_outbox", probe)


BUILT_IN = [
    check_database,
    check_migrations,
    check_broker,
    check_beat,
    check_connector_backlog,
    check_email_outbox,
]


def readiness() -> tuple[bool, dict]:
    checks = [run() for run in BUILT_IN]
    for path in _ops_setting("READINESS_CHECKS", []):
        checks.append(_timed(path.rsplit(".", 1)[-1], lambda p=path: _extension(p)))
    required = set(_ops_setting("READINESS_REQUIRED", [c.name for c in checks]))
    ready = all(c.ok for c in checks if c.name in required)
    return ready, {
        "status": "ready" if ready else "not ready",
        "checks": {c.name: {**c.as_json(), "required": c.name in required} for c in checks},
    }


def _extension(path: str) -> tuple[bool, dict]:
    result = import_string(path)()
    return result.ok, result.detail


def heartbeat_record(*, name: str) -> None:
    from .models import Heartbeat

    Heartbeat.objects.update_or_create(name=name, defaults={"at": timezone.now()})
