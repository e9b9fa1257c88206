"""Server-side SVG charts: accessible, escaped, bounded in size."""

from datetime import timedelta

import pytest

from allocator.timeline import Span, Timeline
from common.charts import Bar, Point, bar_chart, daily_points, step_chart, weekly_rows
from tests.factories import in_days


def test_step_chart_is_accessible_svg():
    points = [Point(in_days(i), 64, 10 * i) for i in range(5)]
    svg = str(step_chart(points, id_prefix="c1", title="Cap & co", desc="A <desc>"))
    assert svg.startswith("<svg")
    assert 'role="img"' in svg
    assert 'aria-labelledby="c1-title c1-desc"' in svg
    assert '<title id="c1-title">Cap &amp; co</title>' in svg
    assert '<desc id="c1-desc">A &lt;desc&gt;</desc>' in svg
    assert "style=" not in svg and "<script" not in svg
    assert svg.count("<path") == 2


@pytest.mark.parametrize("label", ["<script>alert(1)</script>", '"><img src=x onerror=1>'])
def test_bar_chart_escapes_labels(label):
    svg = str(bar_chart([Bar(label, 3, 2, 10)], id_prefix="b", title=label, desc=label))
    assert "<script>" not in svg
    assert "<img" not in svg
    assert "&lt;" in svg


def test_bar_over_share_is_red():
    over = str(bar_chart([Bar("x", 5, 2, 10)], id_prefix="b", title="t", desc="d"))
    under = str(bar_chart([Bar("x", 1, 2, 10)], id_prefix="b", title="t", desc="d"))
    assert "#b3261e" in over
    assert "#b3261e" not in under


def test_empty_charts_say_so():
    assert "No data." in step_chart([], id_prefix="a", title="t", desc="d")
    assert "No data." in bar_chart([], id_prefix="a", title="t", desc="d")


def test_daily_points_worst_case_of_the_day():
    # given 64 GPUs, 60 held for one hour on day 2, and 8 arriving on day 3
    origin = in_days(0)
    timeline = Timeline(
        origin,
        [(origin - timedelta(days=1), 64), (origin + timedelta(days=3, hours=5), 8)],
        [Span(origin + timedelta(days=2, hours=3), origin + timedelta(days=2, hours=4), 60)],
    )
    # when
    points = daily_points(timeline, origin, 5)
    # then
    assert [p.held for p in points] == [0, 0, 60, 0, 0]
    assert [p.capacity for p in points] == [64, 64, 64, 64, 72]


def test_daily_points_bounded_whatever_the_steps():
    origin = in_days(0)
    spans = [
        Span(origin + timedelta(hours=i), origin + timedelta(hours=i + 2), 1) for i in range(2000)
    ]
    points = daily_points(Timeline(origin, [(origin, 10_000)], spans), origin, 90)
    svg = str(step_chart(points, id_prefix="s", title="t", desc="d"))
    assert len(points) == 90
    assert len(svg) < 20_000


def test_weekly_rows():
    points = [Point(in_days(i), 64 - i, i) for i in range(10)]
    rows = weekly_rows(points)
    assert len(rows) == 2
    assert (rows[0].capacity, rows[0].held) == (58, 6)
    assert (rows[1].capacity, rows[1].held) == (55, 9)
