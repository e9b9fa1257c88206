"""factory_boy factories for every model a test builds. Times default to a week from now."""

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts.models import Delegation
from allocator.models import (
    Allocation,
    AllocationChange,
    CapacityChange,
    DivisionShare,
    Pool,
)
from org.models import Division, Membership, Project, RoleGrant, Team
from requests_app.models import ComputeRequest


def in_days(days: float):
    return timezone.now().replace(microsecond=0) + timedelta(days=days)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    password = factory.django.Password("pw")


class DivisionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Division
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Division {n}")
    slug = factory.Sequence(lambda n: f"division-{n}")


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    division = factory.SubFactory(DivisionFactory)
    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    expected_end = factory.LazyFunction(lambda: in_days(120).date())


class RoleGrantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RoleGrant

    user = factory.SubFactory(UserFactory)
    role = RoleGrant.Role.EXECUTIVE
    division = None


class PoolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Pool
        skip_postgeneration_save = True

    cluster = factory.Sequence(lambda n: f"cluster{n}")
    gpu_model = "H100"

    @factory.post_generation
    def capacity(pool, create, extracted, **kwargs):
        """PoolFactory(capacity=64) installs 64 GPUs a year ago."""
        if create and extracted:
            CapacityChange.objects.create(
                pool=pool, kind="arrival", delta=extracted, effective_at=in_days(-365)
            )


class CapacityChangeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CapacityChange

    pool = factory.SubFactory(PoolFactory)
    kind = CapacityChange.Kind.ARRIVAL
    delta = 64
    effective_at = factory.LazyFunction(lambda: in_days(-365))


class DivisionShareFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DivisionShare

    division = factory.SubFactory(DivisionFactory)
    pool = factory.SubFactory(PoolFactory)
    gpus = 32


class AllocationChangeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AllocationChange

    pool = factory.SubFactory(PoolFactory)
    project = factory.SubFactory(ProjectFactory)
    gpus = 8
    start = factory.LazyFunction(lambda: in_days(1))
    end = factory.LazyAttribute(lambda c: c.start + timedelta(days=30))
    approved_at = factory.LazyFunction(timezone.now)


class AllocationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Allocation

    pool = factory.SubFactory(PoolFactory)
    project = factory.SubFactory(ProjectFactory)
    gpus = 8
    start = factory.LazyFunction(lambda: in_days(-1))
    end = factory.LazyAttribute(lambda a: a.start + timedelta(days=30))


class ComputeRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ComputeRequest

    project = factory.SubFactory(ProjectFactory)
    pool = factory.SubFactory(PoolFactory)
    requester = factory.SubFactory(UserFactory)
    gpus = 8
    start = factory.LazyFunction(lambda: in_days(2))
    end = factory.LazyAttribute(lambda r: r.start + timedelta(days=14))
    goal = "Train the next model."
    expected_outcome = "A checkpoint that beats the baseline."
    size_rationale = "Eight GPUs for two weeks fits the data."
    impact_if_denied = "The milestone slips a month."


class DelegationFactory(factory.django.DjangoModelFactory):
    """An executive's delegation in force from an hour ago for a week, unless told otherwise."""

    class Meta:
        model = Delegation

    delegator = factory.SubFactory(UserFactory)
    delegate = factory.SubFactory(UserFactory)
    role = Delegation.Role.EXECUTIVE
    division = None
    starts_at = factory.LazyFunction(lambda: in_days(-1 / 24))
    ends_at = factory.LazyAttribute(lambda d: d.starts_at + timedelta(days=7))
