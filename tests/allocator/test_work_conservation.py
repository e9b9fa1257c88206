"""Work conservation (PRODUCT.md section 4), checked against a brute-force oracle: the pool as one
free-GPU count per hour, every acceptable start tried hour by hour. On small integer timelines
(hours, GPUs) every event falls on a whole hour, so trying whole hours is exhaustive.

After allocator.planning.plan_queue serves any queue on any timeline:
- no waiting demand could be placed on the record (capacity changes and allocations) plus the
  placements and the reservations of the demands ahead of it that are themselves placeable;
- each placement is the earliest acceptable start there, and a reservation is exactly a waiting
  demand's placement on record, or nothing;
- nothing ahead is delayed on record: a waiting demand that could be placed on the record ahead
  of it still can once everything behind it is placed;
- the pool is never over-allocated, and serving again on the new record places nothing more.
"""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from allocator.planning import Demand, plan_queue
from allocator.timeline import Span, Timeline

BASE = datetime(2030, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
HOURS = 120  # beyond every event, start, window and duration drawn below


def at(hour: int) -> datetime:
    return BASE + hour * H


def hour(t: datetime) -> int:
    return round((t - BASE) / H)


# --- the oracle: free GPUs per hour, brute force ---


def free_per_hour(capacity_changes, holdings) -> list[int]:
    free = [0] * HOURS
    for t, delta in capacity_changes:
        for h in range(max(hour(t), 0), HOURS):
            free[h] += delta
    return minus(free, holdings)


def minus(free: list[int], spans) -> list[int]:
    out = free[:]
    for s in spans:
        for h in range(max(hour(s.start), 0), hour(s.end)):
            out[h] -= s.gpus
    return out


def starts(d: Demand) -> range:
    first = hour(d.start)
    last = hour(d.latest_start) if d.flexible else first
    return range(first, last + 1)


def earliest(free: list[int], d: Demand) -> Span | None:
    n = hour(d.start + d.duration) - hour(d.start)
    for s in starts(d):
        if all(free[h] >= d.gpus for h in range(s, s + n)):
            return Span(at(s), at(s + n), d.gpus)
    return None


# --- random pools and queues ---

capacity_changes = st.tuples(
    st.integers(4, 16),
    st.lists(st.tuples(st.integers(1, 40), st.integers(-4, 8)), max_size=3),
)
holdings = st.lists(
    st.tuples(st.integers(-5, 40), st.integers(1, 30), st.integers(1, 10)), max_size=5
)
queues = st.lists(
    st.tuples(
        st.integers(0, 40),  # start
        st.integers(1, 15),  # hours
        st.integers(1, 20),  # GPUs
        st.one_of(st.none(), st.integers(0, 30)),  # flexible: its window in hours; None: fixed
        st.booleans(),  # refused by `accept` (e.g. sent to executive review) when it fits
    ),
    min_size=1,
    max_size=8,
)


def pool_of(drawn_capacity, drawn_holdings):
    base, later = drawn_capacity
    changes = [(at(-10), base), *((at(h), delta) for h, delta in later)]
    # Keep the record valid (never more held than capacity): drop a holding that does not fit.
    free = free_per_hour(changes, [])
    if min(free) < 0:  # a decrease below zero: pad the base capacity
        changes[0] = (at(-10), base - min(free))
        free = free_per_hour(changes, [])
    kept: list[Span] = []
    for s, n, g in drawn_holdings:
        span = Span(at(s), at(s + n), g)
        if min(minus(free, [span])) >= 0:
            free = minus(free, [span])
            kept.append(span)
    return changes, kept


@settings(max_examples=300, deadline=None, derandomize=True)
@given(drawn_capacity=capacity_changes, drawn_holdings=holdings, queue=queues)
def test_no_gpu_stands_idle_for_a_request_that_cannot_use_it(drawn_capacity, drawn_holdings, queue):
    # given a pool of record and a queue in queue order
    changes, spans = pool_of(drawn_capacity, drawn_holdings)
    record = free_per_hour(changes, spans)
    demands = [
        Demand(i, g, at(s), n * H, latest_start=None if w is None else at(s + w))
        for i, (s, n, g, w, _) in enumerate(queue)
    ]
    refused_keys = {i for i, (*_, refused) in enumerate(queue) if refused}

    # when the queue is served
    plan = plan_queue(
        Timeline(at(0), changes, spans),
        demands,
        accept=lambda d, span: d.key not in refused_keys,
    )

    # then, demand by demand, it matches the oracle
    placed: list[Span] = []
    reserved: list[Span] = []  # of the waiting demands that could be placed on record
    on_record_ahead: dict[int, Span] = {}
    for d in demands:
        record_ahead = minus(record, placed)
        span = earliest(minus(record_ahead, reserved), d)
        if d.key in plan.placed:
            assert span is not None and plan.placed[d.key] == span
            placed.append(span)
        elif d.key in plan.refused:
            assert d.key in refused_keys and plan.refused[d.key] == span
        else:
            assert d.key in plan.waiting
            assert span is None, f"demand {d.key} waits but fits at {span}"
            held = earliest(record_ahead, d)
            assert plan.reserved.get(d.key) == held
            if held is not None:
                reserved.append(held)
                on_record_ahead[d.key] = held
    assert sorted([*plan.placed, *plan.refused, *plan.waiting]) == [d.key for d in demands]

    # nothing ahead is delayed on record, and nothing is over-allocated
    final = minus(record, placed)
    for key, held in on_record_ahead.items():
        assert earliest(final, demands[key]) == held
    assert min(final) >= 0

    # serving again on the new record places nothing more
    again = plan_queue(
        Timeline(at(0), changes, [*spans, *placed]),
        [d for d in demands if d.key in plan.waiting],
    )
    assert again.placed == {}
