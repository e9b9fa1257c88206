"""C6: a Hypothesis stateful model of Allotment (PROOFS.md section 2.1). Random sequences of
filing and submitting requests, division and executive decisions, withdrawals, applies (and
repeated applies), releases, reclaims, capacity changes and queue serving run through the real
services; after every step the whole invariant checker runs: held <= capacity at every instant
of every pool, one grant per change, the ledger rebuilds the allocations, every change in
effect had its approvals by distinct people who are not the requester, and each request's audit
rows form one unbroken chain of its transitions.

CI profile: 30 examples of up to 20 steps, derandomized (same sequences every run)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from allocator import services as engine
from allocator.models import Allocation, AllocationChange
from audit.models import AuditEvent
from org.models import RoleGrant
from requests_app import services as workflow
from requests_app.models import ComputeRequest
from requests_app.workflow import Status
from tests import factories
from tests.support import figures, invariants

EXAMPLES = 30
STEPS = 20
EXPECTED = (workflow.Conflict, workflow.NotAllowed, PermissionDenied, ValidationError)

JUSTIFICATION = {
    "goal": "Train.",
    "expected_outcome": "A model.",
    "size_rationale": "Fits.",
    "impact_if_denied": "Delay.",
}


def _fresh(user):
    # org.roles caches roles per user object: read the user again for every call
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(pk=user.pk)


class AllotmentModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.savepoint = transaction.savepoint()
        division = factories.DivisionFactory()
        team = factories.TeamFactory(division=division)
        self.project = factories.ProjectFactory(team=team)
        self.pool = factories.PoolFactory(capacity=16)
        factories.DivisionShareFactory(division=division, pool=self.pool, gpus=12)
        self.requester = factories.UserFactory()
        factories.MembershipFactory(team=team, user=self.requester)
        self.lead = factories.UserFactory()
        factories.RoleGrantFactory(
            user=self.lead, role=RoleGrant.Role.DIVISION_LEAD, division=division
        )
        self.executive = factories.UserFactory()
        factories.RoleGrantFactory(user=self.executive, role=RoleGrant.Role.EXECUTIVE)
        self.ops = factories.UserFactory()
        factories.RoleGrantFactory(user=self.ops, role=RoleGrant.Role.COMPUTE_OPS)
        self.transitions = 0
        self.refused = 0
        figures.add("Hypothesis examples run")

    def teardown(self):
        figures.add("Hypothesis request transitions", self.transitions)
        figures.add("Hypothesis calls refused (as expected)", self.refused)
        figures.add("Hypothesis allocations made", Allocation.objects.count())
        transaction.savepoint_rollback(self.savepoint)

    # --- helpers ---

    def _pick(self, queryset, i):
        items = list(queryset.order_by("pk").values_list("pk", flat=True))
        return items[i % len(items)] if items else None

    def _transition(self, request_id, call):
        """Run a workflow call; a success must add exactly one audit row for the request's own
        transition (the engine's hand-back adds its own, checked by the chain)."""
        before = AuditEvent.objects.filter(
            object_type="requests_app.computerequest", object_id=request_id
        ).count()
        status_before = ComputeRequest.objects.get(pk=request_id).status
        try:
            call()
        except EXPECTED:
            self.refused += 1
            after = AuditEvent.objects.filter(
                object_type="requests_app.computerequest", object_id=request_id
            ).count()
            assert after == before, "a refused call wrote an audit row"
            assert ComputeRequest.objects.get(pk=request_id).status == status_before
            return
        self.transitions += 1
        after = AuditEvent.objects.filter(
            object_type="requests_app.computerequest", object_id=request_id
        ).count()
        assert after == before + 1, f"{after - before} audit rows for one transition"

    # --- rules ---

    @initialize(sizes=st.lists(st.integers(1, 12), min_size=2, max_size=4))
    def some_requests_submitted(self, sizes):
        for gpus in sizes:
            self.file_and_submit(gpus=gpus, offset=0, days=3, urgent=gpus > 8, flexible=False)
        # the first one is division-approved at once, so applies happen early in the sequence
        self.lead_decides(i=0, action="approve")

    @rule(
        gpus=st.integers(1, 12),
        offset=st.integers(0, 6),
        days=st.integers(1, 6),
        urgent=st.booleans(),
        flexible=st.booleans(),
    )
    def file_and_submit(self, gpus, offset, days, urgent, flexible):
        start = timezone.now().replace(microsecond=0) + timedelta(days=offset, hours=1)
        try:
            req = self._create(start, gpus, days, urgent, flexible)
        except ValidationError:  # e.g. more GPUs than the pool will ever hold after a decrease
            self.refused += 1
            return
        self._transition(
            req.pk,
            lambda: workflow.request_submit(user=_fresh(self.requester), request_id=req.pk),
        )

    def _create(self, start, gpus, days, urgent, flexible):
        return workflow.request_create(
            user=_fresh(self.requester),
            data={
                "project": self.project.pk,
                "pool": self.pool.pk,
                "gpus": gpus,
                "start": start,
                "end": start + timedelta(days=days),
                "kind": "new",
                "priority": "urgent" if urgent else "normal",
                "flexible_start": flexible,
                **JUSTIFICATION,
            },
        )

    @rule(
        i=st.integers(0, 30),
        action=st.sampled_from(["approve", "approve", "approve", "reject", "request_changes"]),
    )
    def lead_decides(self, i, action):
        pk = self._pick(ComputeRequest.objects.filter(status=Status.PENDING_DIVISION), i)
        if pk:
            self._transition(
                pk,
                lambda: workflow.request_decide(
                    user=_fresh(self.lead), request_id=pk, action=action, comment="c"
                ),
            )

    @rule(i=st.integers(0, 30), action=st.sampled_from(["approve", "approve", "reject"]))
    def executive_decides(self, i, action):
        pk = self._pick(ComputeRequest.objects.filter(status=Status.PENDING_EXECUTIVE), i)
        if pk:
            self._transition(
                pk,
                lambda: workflow.request_decide(
                    user=_fresh(self.executive), request_id=pk, action=action, comment="c"
                ),
            )

    @rule(i=st.integers(0, 30), who=st.sampled_from(["requester", "lead", "executive"]))
    def wrong_person_decides(self, i, who):
        # the requester may not decide; the lead may not decide the executive stage; the
        # executive may not decide the division stage: all refused, nothing changes
        status = Status.PENDING_EXECUTIVE if who == "lead" else Status.PENDING_DIVISION
        pk = self._pick(ComputeRequest.objects.filter(status=status), i)
        if pk:
            user = getattr(self, who)
            before = self.refused
            self._transition(
                pk,
                lambda: workflow.request_decide(
                    user=_fresh(user), request_id=pk, action="approve", comment=""
                ),
            )
            assert self.refused == before + 1, f"{who} decided a stage that is not theirs"

    @rule(i=st.integers(0, 30))
    def requester_withdraws(self, i):
        pk = self._pick(ComputeRequest.objects.exclude(status=Status.DRAFT), i)
        if pk:
            self._transition(
                pk,
                lambda: workflow.request_withdraw(user=_fresh(self.requester), request_id=pk),
            )

    @rule(i=st.integers(0, 30), times=st.integers(1, 2))
    def apply(self, i, times):
        pk = self._pick(AllocationChange.objects.filter(status="pending"), i)
        if pk:
            for _ in range(times):  # the second run is a redelivered task
                engine.allocation_change_apply(change_id=pk)

    @rule(i=st.integers(0, 30))
    def release(self, i):
        pk = self._pick(Allocation.objects.filter(state="active", end__gt=timezone.now()), i)
        if pk:
            engine.allocation_release(allocation_id=pk, actor=_fresh(self.requester))

    @rule(i=st.integers(0, 30), keep=st.integers(0, 6))
    def reclaim_now(self, i, keep):
        pk = self._pick(Allocation.objects.filter(state="active", end__gt=timezone.now()), i)
        if pk:
            try:
                engine.allocation_reclaim(
                    allocation_id=pk,
                    actor=_fresh(self.ops),
                    new_gpus=keep,
                    reason="Needed elsewhere.",
                    notice_hours=0,
                )
            except ValidationError:
                self.refused += 1

    @rule(delta=st.sampled_from([-8, -4, 4, 8]), offset=st.integers(0, 5))
    def capacity_changes(self, delta, offset):
        try:
            engine.capacity_change_create(
                pool_id=self.pool.pk,
                kind="arrival" if delta > 0 else "decommission",
                delta=delta,
                effective_at=timezone.now() + timedelta(days=offset),
                actor=_fresh(self.ops),
            )
        except ValidationError:
            self.refused += 1  # a decrease that would break the invariant is refused

    @rule()
    def serve_queues(self):
        engine.queues_serve_all()

    @invariant()
    def checker_finds_nothing(self):
        figures.add("Hypothesis steps run")
        found = invariants.all_violations()
        figures.add("invariant violations", len(found))
        assert found == []


@pytest.mark.slow
def test_c6_stateful_model_keeps_every_invariant(db):
    run_state_machine_as_test(
        AllotmentModel,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            derandomize=True,
            # no shrinking in CI: a failure is reported as found, quickly
            phases=[Phase.explicit, Phase.generate],
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
