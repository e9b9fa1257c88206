"""The database refuses rows that break the rules it can hold by itself, whatever the client."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.utils import DatabaseError

from allocator.models import Allocation, CapacityChange, DivisionShare, LedgerEntry
from audit.models import AuditEvent
from audit.services import audit_record
from org.models import Division, Project, RoleGrant
from requests_app.models import ApprovalStep
from tests import factories
from tests.factories import in_days


def refused(create):
    with pytest.raises(IntegrityError), transaction.atomic():
        create()


@pytest.mark.parametrize("gpus", [0])
def test_allocation_gpus_must_be_positive(pool, project, gpus):
    refused(lambda: factories.AllocationFactory(pool=pool, project=project, gpus=gpus))


def test_negative_gpus_refused_everywhere(pool, project, requester):
    # PositiveIntegerField columns carry a CHECK >= 0; the explicit > 0 checks catch zero.
    refused(lambda: factories.AllocationFactory(pool=pool, project=project, gpus=-1))
    refused(
        lambda: factories.ComputeRequestFactory(
            pool=pool, project=project, requester=requester, gpus=-4
        )
    )
    refused(lambda: factories.AllocationChangeFactory(pool=pool, project=project, gpus=-1))
    refused(lambda: factories.DivisionShareFactory(pool=pool, gpus=-1))


def test_end_must_be_after_start(pool, project, requester):
    start = in_days(3)
    refused(lambda: factories.AllocationFactory(pool=pool, project=project, start=start, end=start))
    refused(
        lambda: factories.ComputeRequestFactory(
            pool=pool,
            project=project,
            requester=requester,
            start=start,
            end=start - timedelta(hours=1),
        )
    )
    refused(
        lambda: factories.AllocationChangeFactory(
            pool=pool, project=project, start=start, end=start
        )
    )


def test_request_zero_gpus_refused(pool, project, requester):
    refused(
        lambda: factories.ComputeRequestFactory(
            pool=pool, project=project, requester=requester, gpus=0
        )
    )


def test_capacity_change_sign_must_match_kind(pool):
    refused(
        lambda: CapacityChange.objects.create(
            pool=pool, kind="arrival", delta=-5, effective_at=in_days(1)
        )
    )
    refused(
        lambda: CapacityChange.objects.create(
            pool=pool, kind="decommission", delta=5, effective_at=in_days(1)
        )
    )
    refused(
        lambda: CapacityChange.objects.create(
            pool=pool, kind="repair", delta=0, effective_at=in_days(1)
        )
    )


def test_unique_names(team, pool):
    factories.ProjectFactory(team=team, name="Orion")
    refused(lambda: factories.ProjectFactory(team=team, name="orion"))  # case-insensitive
    refused(lambda: factories.PoolFactory(cluster=pool.cluster, gpu_model=pool.gpu_model))
    refused(lambda: Division.objects.create(name="RESEARCH", slug="research-2"))


def test_one_share_per_division_and_pool(research, pool):
    DivisionShare.objects.create(division=research, pool=pool, gpus=10)
    refused(lambda: DivisionShare.objects.create(division=research, pool=pool, gpus=20))


def test_role_grant_shapes(research):
    user = factories.UserFactory()
    refused(lambda: RoleGrant.objects.create(user=user, role="division_lead", division=None))
    refused(lambda: RoleGrant.objects.create(user=user, role="executive", division=research))
    RoleGrant.objects.create(user=user, role="executive")
    refused(lambda: RoleGrant.objects.create(user=user, role="executive"))


def test_project_state_must_be_known(team):
    refused(lambda: Project.objects.create(team=team, name="Bad", state="paused"))


def test_one_decision_per_request_stage_and_round(pool, project, requester, division_lead):
    request = factories.ComputeRequestFactory(pool=pool, project=project, requester=requester)
    ApprovalStep.objects.create(
        request=request, round=1, stage="division", decision="approved", decider=division_lead
    )
    refused(
        lambda: ApprovalStep.objects.create(
            request=request, round=1, stage="division", decision="rejected", decider=division_lead
        )
    )
    # a new submission round may be decided again
    ApprovalStep.objects.create(
        request=request, round=2, stage="division", decision="approved", decider=division_lead
    )


def test_one_grant_ledger_row_per_change(pool, project):
    change = factories.AllocationChangeFactory(pool=pool, project=project)
    allocation = factories.AllocationFactory(pool=pool, project=project, change=change)
    fields = dict(
        allocation=allocation, change=change, gpus=8, start=allocation.start, end=allocation.end
    )
    LedgerEntry.objects.create(kind="grant", **fields)
    refused(lambda: LedgerEntry.objects.create(kind="grant", **fields))
    refused(lambda: LedgerEntry.objects.create(kind="extend", **fields))
    LedgerEntry.objects.create(kind="release", **fields)  # other kinds may repeat


def test_applied_change_must_name_its_allocation(pool, project):
    refused(lambda: factories.AllocationChangeFactory(pool=pool, project=project, status="applied"))


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET action = 'forged'",
        "DELETE FROM audit_auditevent",
        "UPDATE allocator_ledgerentry SET gpus = 999",
        "DELETE FROM allocator_ledgerentry",
    ],
)
def test_audit_and_ledger_are_append_only_in_the_database(pool, project, requester, sql):
    # given one audit row and one ledger row
    audit_record(actor=requester, action="test", obj=pool)
    allocation = factories.AllocationFactory(pool=pool, project=project)
    LedgerEntry.objects.create(
        allocation=allocation, kind="grant", gpus=8, start=allocation.start, end=allocation.end
    )
    # when anyone issues raw SQL to change them, then the trigger refuses
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)
    assert AuditEvent.objects.filter(action="test").count() == 1


def test_audit_rows_refuse_orm_changes(pool, requester):
    event = audit_record(actor=requester, action="test", obj=pool)
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().update(action="x")


def test_allocations_are_time_ranged(pool, project):
    allocation = factories.AllocationFactory(pool=pool, project=project)
    assert Allocation.objects.get().end > allocation.start
