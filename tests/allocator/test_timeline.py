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


# --- the list-based Timeline against the simple one it replaced ------------------------------


class Reference:
    """The first Timeline: a plain list of (at, capacity, held) steps, rebuilt by every
    with_span, every question a scan of the steps. Kept here only to check the product's one."""

    def __init__(self, origin, steps):
        self.origin, self.steps = origin, steps

    @classmethod
    def build(cls, origin, changes, holdings):
        deltas = {}
        capacity = held = 0
        for t, d in changes:
            if t <= origin:
                capacity += d
            else:
                deltas.setdefault(t, [0, 0])[0] += d
        for s in holdings:
            if s.end <= origin:
                continue
            if s.start <= origin:
                held += s.gpus
            else:
                deltas.setdefault(s.start, [0, 0])[1] += s.gpus
            deltas.setdefault(s.end, [0, 0])[1] -= s.gpus
        steps = [(origin, capacity, held)]
        for t in sorted(deltas):
            if deltas[t] != [0, 0]:
                capacity, held = capacity + deltas[t][0], held + deltas[t][1]
                steps.append((t, capacity, held))
        return cls(origin, steps)

    def window(self, start, end):
        first = max(i for i, s in enumerate(self.steps) if s[0] <= start)
        rest = [s for s in self.steps[first + 1 :] if s[0] < end]
        return [self.steps[first], *rest]

    def with_span(self, span):
        steps = list(self.steps)
        for t in (span.start, span.end):
            if t > self.origin and all(s[0] != t for s in steps):
                prev = max(s for s in steps if s[0] < t)
                steps = sorted([*steps, (t, prev[1], prev[2])])
        steps = [(t, c, h + span.gpus if span.start <= t < span.end else h) for t, c, h in steps]
        return Reference(self.origin, steps)

    def fits(self, gpus, start, end):
        return all(c - h >= gpus for _, c, h in self.window(start, end))

    def earliest_start(self, gpus, duration, not_before, latest):
        if not_before > latest:
            return None
        candidates = [not_before] + [
            self.steps[i][0]
            for i in range(1, len(self.steps))
            if not_before < self.steps[i][0] <= latest
            and self.steps[i][1] - self.steps[i][2] > self.steps[i - 1][1] - self.steps[i - 1][2]
        ]
        return next((t for t in candidates if self.fits(gpus, t, t + duration)), None)

    def after_last(self, short, start, end):
        window = self.window(start, end)
        for i in range(len(window) - 1, -1, -1):
            if short(window[i]):
                return window[i + 1][0] if i + 1 < len(window) and window[i + 1][0] < end else None
        return None


operations = st.lists(
    st.tuples(st.integers(-10, HOURS + 20), st.integers(1, 30), st.integers(-6, 12)), max_size=6
)


@settings(max_examples=300, deadline=None)
@given(
    changes=capacity_changes,
    holdings=spans,
    added=operations,
    origin=st.integers(-5, 10),
    query=st.tuples(st.integers(0, 50), st.integers(0, 30), st.integers(-2, 20)),
    search=st.tuples(st.integers(0, 40), st.integers(1, 25)),
)
def test_timeline_agrees_with_the_simple_reference(changes, holdings, added, origin, query, search):
    # given the same pool history in both, and a few spans added one by one (negative: freed)
    timeline = build(origin, changes, holdings)
    reference = Reference.build(
        at(origin),
        [(at(h), d) for h, d in changes],
        [Span(at(s), at(s + n), g) for s, n, g in holdings],
    )
    for s, n, g in added:
        span = Span(at(s), at(s + n), g)
        timeline, reference = timeline.with_span(span), reference.with_span(span)
        # then the steps are the same, one by one, after every addition
        assert [tuple(step) for step in timeline.steps] == reference.steps
    # and every question has the same answer
    offset, length, gpus = query
    a, b = at(origin + offset), at(origin + offset + length)
    window = reference.window(a, b)
    assert [tuple(step) for step in timeline.window(a, b)] == window
    assert timeline.min_free(a, b) == min(c - h for _, c, h in window)
    assert timeline.min_capacity(a, b) == min(c for _, c, _ in window)
    assert timeline.max_held(a, b) == max(h for _, _, h in window)
    assert tuple(timeline.peak_held(a, b)) == max(window, key=lambda s: s[2])
    assert timeline.fits(gpus, a, b) == reference.fits(gpus, a, b)
    short = next((s for s in window if s[1] - s[2] < gpus), None)
    assert (tuple(timeline.shortfall(gpus, a, b) or ()) or None) == short
    assert timeline.free_from(gpus, a, b) == reference.after_last(
        lambda s: s[1] - s[2] < gpus, a, b
    )
    assert timeline.capacity_from(gpus, a, b) == reference.after_last(lambda s: s[1] < gpus, a, b)
    assert tuple(timeline.at(a)) == window[0]
    assert timeline.last_instant == reference.steps[-1][0]
    latest, duration = at(origin + offset + search[0]), search[1] * H
    assert timeline.earliest_start(gpus, duration, a, latest) == reference.earliest_start(
        gpus, duration, a, latest
    )
