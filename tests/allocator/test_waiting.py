"""Why a request waits, in numbers (allocator/waiting.py): the short instant and by how many,
what frees the GPUs, what would serve it sooner, and a late start's effect, in the words a
requester reads."""

from datetime import UTC, datetime, timedelta

from allocator.planning import Demand
from allocator.timeline import Span, Timeline
from allocator.waiting import (
    ALLOCATION_END,
    ARRIVAL,
    Freeing,
    freeings_of,
    late_start,
    late_start_words,
    waiting_facts,
    waiting_sentences,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
D = timedelta(days=1)
H = timedelta(hours=1)


def dec(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, tzinfo=UTC)


def sentences(text: str) -> list[str]:
    *whole, last = text.split(". ")
    return [f"{s}." for s in whole] + [last]


def test_a_fixed_request_names_its_first_short_instant_what_frees_it_and_the_late_start():
    # given 256 GPUs, 64 held by allocation #7 until 13 Dec 09:00; 200 asked over 3-28 Dec
    allocations = [(7, Span(NOW - D, dec(13, 9), 64))]
    timeline = Timeline(NOW, [(NOW - 30 * D, 256)], [s for _, s in allocations])
    demand = Demand(4, 200, dec(3, 9), dec(28, 9) - dec(3, 9))
    # when asked why it waits
    facts = waiting_facts(
        timeline,
        demand,
        horizon_end=NOW + 90 * D,
        freeings=freeings_of(allocations, [(1, NOW - 30 * D, 256)]),
    )
    # then the short instant is its start, not now
    assert (facts.short_at, facts.free_then, facts.short_by) == (dec(3, 9), 192, 8)
    assert facts.fits_from == dec(13, 9)
    assert facts.freed_by == (Freeing(dec(13, 9), ALLOCATION_END, 7, 64),)
    assert facts.fits_whole_from == dec(13, 9)
    assert facts.most_gpus_now == 192
    assert facts.late.late == 10 * D and facts.late.served == 15 * D and facts.late.asked == 25 * D
    assert sentences(waiting_sentences(facts)) == [
        "Only 192 of the 200 GPUs are free on 3 Dec 2026 09:00 UTC, 8 short.",
        "They are free from 13 Dec 2026 09:00 UTC, when allocation #7 ends (64 GPUs).",
        "Served then, it starts 13 Dec 2026 09:00 UTC, 10 days late: 15 of its 25 days.",
        "It could be served with a start from 13 Dec 2026 09:00 UTC (all 200 GPUs for its "
        "25 days), or with 192 GPUs now.",
    ]


def test_the_short_instant_is_where_the_pool_is_short_inside_the_period():
    # given 64 GPUs, free until a 40-GPU allocation starts on 4 Dec and runs to 6 Dec
    timeline = Timeline(NOW, [(NOW - D, 64)], [Span(dec(4), dec(6), 40)])
    demand = Demand(1, 32, dec(2), 10 * D)  # 2-12 Dec
    facts = waiting_facts(timeline, demand, horizon_end=NOW + 90 * D)
    assert (facts.short_at, facts.free_then, facts.short_by) == (dec(4), 24, 8)
    # the window from 6 Dec to its end fits: that is when it would next fit, 4 days late
    assert facts.fits_from == dec(6)
    assert (
        late_start_words(facts.late) == "starts 6 Dec 2026 00:00 UTC, 4 days late: 6 of its 10 days"
    )
    assert waiting_sentences(facts).startswith(
        "Only 24 of the 32 GPUs are free on 4 Dec 2026 00:00 UTC, 8 short."
    )


def test_an_arrival_that_frees_the_gpus_is_named():
    timeline = Timeline(NOW, [(NOW - D, 64), (dec(20), 32)], [Span(NOW - D, dec(40 - 9), 64)])
    demand = Demand(1, 16, dec(5), 20 * D)  # 5-25 Dec
    facts = waiting_facts(
        timeline,
        demand,
        horizon_end=NOW + 90 * D,
        freeings=freeings_of([], [(3, dec(20), 32), (4, dec(21), -8)]),
    )
    assert facts.freed_by == (Freeing(dec(20), ARRIVAL, 3, 32),)
    assert (
        "They are free from 20 Dec 2026 00:00 UTC, when 32 GPUs arrive (capacity change #3)."
        in waiting_sentences(facts)
    )
    assert "15 days late: 5 of its 20 days" in waiting_sentences(facts)
    assert facts.most_gpus_now == 0 and "GPUs now" not in waiting_sentences(facts)


def test_nothing_on_record_frees_them_before_its_end():
    timeline = Timeline(NOW, [(NOW - D, 64)], [Span(NOW - D, dec(31), 60)])
    demand = Demand(1, 8, dec(2), 10 * D)
    facts = waiting_facts(timeline, demand, horizon_end=NOW + 90 * D)
    assert facts.fits_from is None and facts.late is None
    assert sentences(waiting_sentences(facts)) == [
        "Only 4 of the 8 GPUs are free on 2 Dec 2026 00:00 UTC, 4 short.",
        "Nothing on record frees them before its end on 12 Dec 2026 00:00 UTC.",
        "It could be served with a start from 31 Dec 2026 00:00 UTC (all 8 GPUs for its "
        "10 days), or with 4 GPUs now.",
    ]


def test_beyond_the_horizon_no_later_start_is_offered():
    timeline = Timeline(NOW, [(NOW - D, 64)], [Span(NOW - D, NOW + 200 * D, 60)])
    demand = Demand(1, 8, dec(2), 10 * D)
    facts = waiting_facts(timeline, demand, horizon_end=NOW + 90 * D)
    assert facts.fits_whole_from is None
    assert waiting_sentences(facts).endswith("It could be served with 4 GPUs now.")


def test_a_flexible_request_says_its_window_and_when_it_would_fit():
    # given 10 GPUs all held by allocation #2 until 10 Dec; 10 asked for 2 days, any start
    # up to 5 Dec
    allocations = [(2, Span(NOW - D, dec(10), 10))]
    timeline = Timeline(NOW, [(NOW - D, 10)], [s for _, s in allocations])
    demand = Demand(1, 10, dec(2), 2 * D, latest_start=dec(5))
    facts = waiting_facts(
        timeline, demand, horizon_end=NOW + 90 * D, freeings=freeings_of(allocations, [])
    )
    assert facts.fits_from == dec(10) and facts.late is None
    assert sentences(waiting_sentences(facts)) == [
        "Only 0 of the 10 GPUs are free on 2 Dec 2026 00:00 UTC, 10 short.",
        "No start up to 5 Dec 2026 00:00 UTC has 10 GPUs free for 2 days.",
        "They are free from 10 Dec 2026 00:00 UTC, when allocation #2 ends (10 GPUs).",
    ]


def test_an_extension_cannot_start_late():
    timeline = Timeline(NOW, [(NOW - D, 64)], [Span(NOW - D, dec(6), 60)])
    demand = Demand(1, 8, dec(3), 10 * D)  # from the end of the allocation it extends
    facts = waiting_facts(timeline, demand, horizon_end=NOW + 90 * D, can_start_late=False)
    assert facts.fits_from == dec(6) and facts.late is None
    assert "late" not in waiting_sentences(facts)


def test_a_request_clipped_to_now_counts_its_lateness_from_the_asked_start():
    timeline = Timeline(NOW, [(NOW - D, 64)], [Span(NOW - D, dec(10), 60)])
    demand = Demand(1, 8, NOW, dec(20) - NOW)  # asked from 28 Nov; its start is already past
    facts = waiting_facts(
        timeline, demand, horizon_end=NOW + 90 * D, asked_start=datetime(2026, 11, 28, tzinfo=UTC)
    )
    assert late_start_words(facts.late) == (
        "starts 10 Dec 2026 00:00 UTC, 12 days late: 10 of its 22 days"
    )


def test_late_start_in_words():
    late = late_start(dec(4), dec(28), dec(22))
    assert late_start_words(late) == "starts 22 Dec 2026 00:00 UTC, 18 days late: 6 of its 24 days"
    assert late_start(dec(4), dec(28), dec(4)) is None  # on time
    short = late_start(dec(4, 0), dec(5, 0), dec(4, 20))
    assert (
        late_start_words(short)
        == "starts 4 Dec 2026 20:00 UTC, 20 hours late: 4 hours of its 1 day"
    )


def test_every_sentence_is_whole_and_capitalised():
    timeline = Timeline(NOW, [(NOW - D, 64)], [Span(NOW - D, dec(6), 60)])
    for demand in (
        Demand(1, 8, dec(3), 10 * D),
        Demand(2, 80, dec(3), 10 * D),
        Demand(3, 8, dec(3), 10 * D, latest_start=dec(4)),
    ):
        text = waiting_sentences(waiting_facts(timeline, demand, horizon_end=NOW + 90 * D))
        assert text.endswith(".")
        assert all(s[0].isupper() for s in sentences(text)), text
