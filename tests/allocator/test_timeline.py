"""The step-function timeline against a brute-force, hour-by-hour model. Every event falls on a
whole hour, so checking each hour is exact."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from allocator.timeline import Span, Timeline

BASE = datetime(2030, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
HOURS = 60


def at(hour: int) -> datetime:
    return BASE + hour * H


capacity_changes = st.lists(
    st.tuples(st.integers(-10, HOURS), st.integers(-8, 16).filter(bool)), max_size=8
)
spans = st.lists(
    st.tuples(st.integers(-10, HOURS), st.integers(1, 30), st.integers(1, 12)), max_size=10
)


def brute(changes, holdings, hour):
    capacity = sum(d for h, d in changes if h <= hour)
    held = sum(g for s, length, g in holdings if s <= hour < s + length)
    return capacity - held


def build(origin, changes, holdings):
    return Timeline(
        at(origin),
        [(at(h), d) for h, d in changes],
        [Span(at(s), at(s + length), g) for s, length, g in holdings],
    )


@settings(max_examples=300, deadline=None)
@given(
    changes=capacity_changes,
    holdings=spans,
    origin=st.integers(-5, 10),
    start_offset=st.integers(0, 40),
    length=st.integers(1, 30),
    gpus=st.integers(0, 20),
)
def test_fits_matches_brute_force(changes, holdings, origin, start_offset, length, gpus):
    # given a random pool history and a window at or after the origin
    timeline = build(origin, changes, holdings)
    a, b = origin + start_offset, origin + start_offset + length
    # when the timeline answers "do `gpus` fit over [a, b)?"
    answer = timeline.fits(gpus, at(a), at(b))
    # then it agrees with checking every hour of the window
    assert answer == all(brute(changes, holdings, h) >= gpus for h in range(a, b))
    assert timeline.min_free(at(a), at(b)) == min(brute(changes, holdings, h) for h in range(a, b))


@settings(max_examples=300, deadline=None)
@given(
    changes=capacity_changes,
    holdings=spans,
    origin=st.integers(-5, 10),
    not_before_offset=st.integers(0, 30),
    window=st.integers(0, 40),
    length=st.integers(1, 25),
    gpus=st.integers(1, 20),
)
def test_earliest_start_matches_brute_force(
    changes, holdings, origin, not_before_offset, window, length, gpus
):
    # given a random pool history
    timeline = build(origin, changes, holdings)
    not_before = origin + not_before_offset
    latest = not_before + window
    # when the timeline looks for the earliest start in [not_before, latest]
    found = timeline.earliest_start(gpus, length * H, at(not_before), at(latest))
    # then it is the first hour where every hour of the duration has room, or None
    expected = next(
        (
            t
            for t in range(not_before, latest + 1)
            if all(brute(changes, holdings, h) >= gpus for h in range(t, t + length))
        ),
        None,
    )
    assert found == (at(expected) if expected is not None else None)


@settings(max_examples=200, deadline=None)
@given(
    changes=capacity_changes,
    holdings=spans,
    extra=st.tuples(st.integers(-10, HOURS), st.integers(1, 30), st.integers(1, 12)),
    origin=st.integers(-5, 10),
)
def test_with_span_equals_rebuilding_with_it(changes, holdings, extra, origin):
    # given a timeline and one more holding
    base = build(origin, changes, holdings)
    # when it is added with with_span, or the timeline is built with it from scratch
    added = base.with_span(Span(at(extra[0]), at(extra[0] + extra[1]), extra[2]))
    rebuilt = build(origin, changes, [*holdings, extra])
    # then both give the same free GPUs at every hour
    for hour in range(origin, HOURS + 40):
        assert added.at(at(hour)).free == rebuilt.at(at(hour)).free, hour
    # and the original is unchanged
    for hour in range(origin, HOURS + 40):
        assert base.at(at(hour)).free == brute(changes, holdings, hour)


def test_arrival_inside_the_window_counts_only_from_its_instant():
    # given 8 GPUs now and 8 more arriving at hour 10
    timeline = build(0, [(-1, 8), (10, 8)], [])
    # then 12 GPUs do not fit over [5, 15) but fit over [10, 15)
    assert not timeline.fits(12, at(5), at(15))
    assert timeline.fits(12, at(10), at(15))
    # and the earliest start for 12 GPUs is the arrival
    assert timeline.earliest_start(12, 5 * H, at(0), at(50)) == at(10)


def test_decommission_inside_the_window_is_seen():
    # given 16 GPUs, 8 of them decommissioned at hour 20
    timeline = build(0, [(-1, 16), (20, -8)], [])
    # then 12 fit before the decommission but not across it
    assert timeline.fits(12, at(0), at(20))
    assert not timeline.fits(12, at(19), at(21))
    assert timeline.earliest_start(12, 30 * H, at(0), at(100)) is None


def test_allocation_ending_inside_the_window_frees_from_its_end():
    # given 10 GPUs, 6 held until hour 5, 6 more held from hour 30
    timeline = build(0, [(-1, 10)], [(-1, 6, 6), (30, 5, 6)])
    # then 8 fit over [5, 30) only, and the search finds hour 5
    assert not timeline.fits(8, at(4), at(10))
    assert timeline.fits(8, at(5), at(30))
    assert not timeline.fits(8, at(5), at(31))
    assert timeline.earliest_start(8, 10 * H, at(0), at(100)) == at(5)
    assert timeline.earliest_start(8, 30 * H, at(0), at(100)) == at(35)
