import pytest

from allocator.models import AllocationChange
from tests import factories
from tests.factories import in_days


@pytest.fixture
def research_share(research, pool):
    """Research may hold the whole pool: the share rule stays out of the way unless a test
    sets a smaller share."""
    return factories.DivisionShareFactory(division=research, pool=pool, gpus=64)


@pytest.fixture
def make_change(pool, project, requester, research_share):
    def make(**kwargs) -> AllocationChange:
        kwargs.setdefault("pool", pool)
        kwargs.setdefault("project", project)
        kwargs.setdefault("requested_by", requester)
        kwargs.setdefault("start", in_days(1))
        kwargs.setdefault("end", kwargs["start"] + (in_days(31) - in_days(1)))
        return factories.AllocationChangeFactory(**kwargs)

    return make
