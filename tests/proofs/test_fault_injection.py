"""The fault-injection machinery itself (allocator/faults.py, allocator/checks.py): off means no
database access at all, armed faults fire the asked number of times for the asked change, the
system check refuses fault injection in production settings, and the armed faults' table lives
in a test-only app that production databases never hold."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from allocator.checks import fault_injection_app_installed, fault_injection_off_in_production
from allocator.faults import FaultInjected, fault_point
from tests.support.fault_injection.models import FaultInjection


def test_disabled_fault_points_touch_nothing(db, settings, django_assert_num_queries):
    # given fault injection off and a fault armed anyway
    settings.ALLOTMENT_FAULT_INJECTION = False
    FaultInjection.objects.create(point="before_tx", action="raise")
    # when the point is reached, then nothing happens and the database is not asked
    with django_assert_num_queries(0):
        fault_point("before_tx", change_id=1)


def test_armed_fault_fires_remaining_times_for_its_change_only(transactional_db):
    # (transactional: the fault is taken on its own connection, which sees committed rows)
    # given a raise armed twice for change 7
    fault = FaultInjection.objects.create(
        point="in_tx_before_commit", action="raise", remaining=2, change_id=7
    )
    # when another change passes the point, then nothing happens
    fault_point("in_tx_before_commit", change_id=8)
    # when change 7 passes it three times, then it raises twice, then no more
    for _ in range(2):
        with pytest.raises(FaultInjected):
            fault_point("in_tx_before_commit", change_id=7)
    fault_point("in_tx_before_commit", change_id=7)
    fault.refresh_from_db()
    assert (fault.remaining, fault.fired) == (0, 2)
    assert fault.last_pid and fault.last_backend_pid


def test_sleep_action_sleeps(transactional_db, monkeypatch):
    slept = []
    monkeypatch.setattr("allocator.faults.time.sleep", slept.append)
    FaultInjection.objects.create(point="before_tx", action="sleep:1.5")
    fault_point("before_tx")
    assert slept == [1.5]


@pytest.mark.parametrize(
    ("debug", "test_settings", "errors"),
    [(False, False, 1), (True, False, 0), (False, True, 0)],
)
def test_check_refuses_fault_injection_in_production(settings, debug, test_settings, errors):
    # given fault injection on, with production-like or test settings
    settings.ALLOTMENT_FAULT_INJECTION = True
    settings.DEBUG = debug
    settings.ALLOTMENT_TEST_SETTINGS = test_settings
    # when the check runs, then only production settings are refused
    found = fault_injection_off_in_production()
    assert len(found) == errors
    assert all(e.id == "allocator.E001" for e in found)


def test_check_runs_with_deploy_checks(settings):
    settings.ALLOTMENT_FAULT_INJECTION = True
    settings.ALLOTMENT_TEST_SETTINGS = False
    with pytest.raises(SystemCheckError, match=r"allocator\.E001"):
        call_command("check", "--deploy", "--tag", "allotment")
    settings.ALLOTMENT_FAULT_INJECTION = False
    call_command("check", "--tag", "allotment")


def test_check_refuses_fault_injection_without_its_test_app(settings):
    # given fault injection on in settings that do not install the test-only app
    settings.ALLOTMENT_FAULT_INJECTION = True
    settings.INSTALLED_APPS = [
        app for app in settings.INSTALLED_APPS if app != "tests.support.fault_injection"
    ]
    # when the check runs, then it says the app is missing
    assert [e.id for e in fault_injection_app_installed()] == ["allocator.E002"]
    # and with fault injection off, nothing is needed
    settings.ALLOTMENT_FAULT_INJECTION = False
    assert fault_injection_app_installed() == []


def test_check_accepts_the_test_settings():
    assert fault_injection_app_installed() == []


def test_production_settings_do_not_install_the_fault_app():
    from config.settings import base

    assert not [app for app in base.INSTALLED_APPS if app.startswith("tests")]


def test_the_allocator_migrations_drop_the_fault_table(db):
    # given a database as deployed before the move: allocator migrated to 0003, with the table
    # (the test's transaction rolls all of this back: PostgreSQL DDL is transactional)
    executor = MigrationExecutor(connection)
    executor.migrate([("allocator", "0003_allocation_recent_index")])
    assert "allocator_faultinjection" in connection.introspection.table_names()

    # when it is migrated forward
    executor = MigrationExecutor(connection)
    executor.migrate([("allocator", "0004_delete_faultinjection")])

    # then the table is gone; only the test-only app's own is left
    tables = connection.introspection.table_names()
    assert "allocator_faultinjection" not in tables
    assert FaultInjection._meta.db_table in tables
    assert FaultInjection._meta.app_label == "fault_injection"
