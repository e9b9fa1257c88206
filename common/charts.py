"""Charts as server-side SVG: no library, no CDN, no script, no style attribute (the strict CSP
allows them as they are). Pure functions from numbers to markup; every piece of text goes
through `escape`, numbers are formatted by us, so the result is safe to mark safe.

Each chart is an <svg role="img"> labelled by its <title> and <desc>; the page puts a table of
the same numbers next to it for screen readers and for anyone who prefers numbers. The one
exception, the pool page's timeline, is computed here as geometry (`timeline_chart`) and drawn
by its template.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Colours as SVG presentation attributes (not style=""), matching static/css/app.css.
CAPACITY = "#1f4e79"
HELD = "#2f74b5"
HELD_FILL = "#9cc3e6"
SHARE = "#a86200"
OVER = "#b3261e"
AXIS = "#5b6776"
GRID = "#d9dee5"
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _n(value: float) -> str:
    """A coordinate: short, locale-free, never scientific notation."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _open_svg(*, id_prefix: str, title: str, desc: str, width: int, height: int) -> list[str]:
    ident = escape(id_prefix)
    return [
        f'<svg viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc" {FONT}>',
        f'<title id="{ident}-title">{escape(title)}</title>',
        f'<desc id="{ident}-desc">{escape(desc)}</desc>',
    ]


def _axis(value: int) -> tuple[int, int]:
    """A round axis top at or above `value` and a number of grid intervals dividing it."""
    if value <= 0:
        return 1, 1
    step = max(10 ** (len(str(int(value))) - 1) // 2, 1)
    top = -(-int(value) // step) * step
    intervals = next((k for k in (4, 5, 3, 2) if top % k == 0), 1)
    return top, intervals


def _step_path(values: list[int], x, y, *, area: bool) -> str:
    """An SVG path of a step function: value i holds over [x(i), x(i+1)). With `area`, closed
    down to the baseline."""
    n = len(values)
    parts = [
        f"M{_n(x(0))},{_n(y(0))}L{_n(x(0))},{_n(y(values[0]))}"
        if area
        else f"M{_n(x(0))},{_n(y(values[0]))}"
    ]
    for i in range(1, n):
        if values[i] != values[i - 1]:
            parts.append(f"L{_n(x(i))},{_n(y(values[i - 1]))}L{_n(x(i))},{_n(y(values[i]))}")
    parts.append(f"L{_n(x(n))},{_n(y(values[-1]))}")
    if area:
        parts.append(f"L{_n(x(n))},{_n(y(0))}Z")
    return "".join(parts)


@dataclass(frozen=True)
class Point:
    """One bucket of a step chart: capacity and commitment in force from `at` to the next."""

    at: datetime
    capacity: int
    held: int

    @property
    def free(self) -> int:
        return self.capacity - self.held


def daily_points(timeline, start: datetime, days: int) -> list[Point]:
    """One point per day from `start`: the lowest capacity and the highest commitment of the
    day — the worst case, so a one-hour dip is never drawn away. A timeline with thousands of
    steps (30,000 allocations summed over 100 pools) still draws `days` points."""
    points = []
    for d in range(days):
        a = start + timedelta(days=d)
        steps = timeline.window(a, a + timedelta(days=1))
        points.append(
            Point(a, min(s.capacity for s in steps), max(s.held for s in steps)),
        )
    return points


def weekly_rows(points: list[Point]) -> list[Point]:
    """The table fallback: one row per week, with the week's worst case."""
    rows = []
    for i in range(0, len(points), 7):
        week = points[i : i + 7]
        rows.append(
            Point(week[0].at, min(p.capacity for p in week), max(p.held for p in week)),
        )
    return rows


def step_chart(
    points: list[Point],
    *,
    id_prefix: str,
    title: str,
    desc: str,
    width: int = 720,
    height: int = 260,
) -> SafeString:
    """Capacity as a step line over committed GPUs as a step area, one step per point."""
    left, right, top, bottom = 56, 12, 28, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    out = _open_svg(id_prefix=id_prefix, title=title, desc=desc, width=width, height=height)
    if not points:
        out.append(f'<text x="{left}" y="{top + 20}" fill="{AXIS}">No data.</text></svg>')
        return mark_safe("".join(out))  # every text above is escaped

    y_max, intervals = _axis(max(max(p.capacity, p.held) for p in points))
    n = len(points)

    def x(i: float) -> float:
        return left + plot_w * i / n

    def y(v: float) -> float:
        return top + plot_h * (1 - max(v, 0) / y_max)

    # grid and y axis labels
    for k in range(intervals + 1):
        value = y_max * k // intervals
        yy = y(value)
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{_n(yy)}" y2="{_n(yy)}" '
            f'stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{_n(yy + 4)}" text-anchor="end" fill="{AXIS}">'
            f"{value}</text>"
        )
    # x axis labels: first day of the chart and every 30 days
    for i in range(0, n + 1, 30 if n > 45 else max(n // 3, 1)):
        at = points[0].at + timedelta(days=i) if i < n else points[-1].at + timedelta(days=1)
        anchor = "start" if i == 0 else ("end" if i >= n else "middle")
        out.append(
            f'<text x="{_n(x(i))}" y="{height - 10}" text-anchor="{anchor}" fill="{AXIS}">'
            f"{escape(timezone.localtime(at).strftime('%b %d'))}</text>"
        )

    # committed: a filled step area from the baseline; capacity: a step line over it
    held_path = _step_path([p.held for p in points], x, y, area=True)
    out.append(f'<path d="{held_path}" fill="{HELD_FILL}" stroke="{HELD}" stroke-width="1"/>')
    capacity_path = _step_path([p.capacity for p in points], x, y, area=False)
    out.append(f'<path d="{capacity_path}" fill="none" stroke="{CAPACITY}" stroke-width="2"/>')

    # days where commitments exceed capacity (should never happen: the invariant) in red
    for i, p in enumerate(points):
        if p.held > p.capacity:
            out.append(
                f'<rect x="{_n(x(i))}" y="{top}" width="{_n(plot_w / n)}" height="4" fill="{OVER}"/>'
            )

    # legend
    out.append(
        f'<rect x="{left}" y="6" width="14" height="3" fill="{CAPACITY}"/>'
        f'<text x="{left + 18}" y="12" fill="{AXIS}">capacity</text>'
        f'<rect x="{left + 90}" y="3" width="14" height="10" fill="{HELD_FILL}" stroke="{HELD}"/>'
        f'<text x="{left + 108}" y="12" fill="{AXIS}">committed (allocations)</text>'
    )
    out.append("</svg>")
    return mark_safe("".join(out))  # every text above is escaped


@dataclass(frozen=True)
class Bar:
    label: str
    value: int  # held
    reference: int  # share
    scale: int  # the row's full width, e.g. the pool's capacity

    @property
    def over(self) -> bool:
        return self.value > self.reference


def bar_chart(
    bars: list[Bar],
    *,
    id_prefix: str,
    title: str,
    desc: str,
    width: int = 720,
) -> SafeString:
    """Horizontal bars (held) against a marker (share), each row on its own scale (its pool's
    capacity), so pools of very different sizes read alike."""
    label_w, right, row_h, top = 210, 70, 24, 24
    plot_w = width - label_w - right
    height = top + row_h * max(len(bars), 1) + 8
    out = _open_svg(id_prefix=id_prefix, title=title, desc=desc, width=width, height=height)
    out.append(
        f'<rect x="{label_w}" y="4" width="14" height="10" fill="{HELD}"/>'
        f'<text x="{label_w + 18}" y="13" fill="{AXIS}">held now</text>'
        f'<rect x="{label_w + 90}" y="2" width="3" height="14" fill="{SHARE}"/>'
        f'<text x="{label_w + 98}" y="13" fill="{AXIS}">share</text>'
    )
    if not bars:
        out.append(f'<text x="{label_w}" y="{top + 16}" fill="{AXIS}">No data.</text></svg>')
        return mark_safe("".join(out))  # every text above is escaped
    for i, bar in enumerate(bars):
        y0 = top + i * row_h
        scale = max(bar.scale, bar.value, bar.reference, 1)
        w = plot_w * bar.value / scale
        mark = label_w + plot_w * bar.reference / scale
        colour = OVER if bar.over else HELD
        out.append(
            f'<text x="{label_w - 8}" y="{y0 + 16}" text-anchor="end">{escape(bar.label)}</text>'
            f'<rect x="{label_w}" y="{y0 + 5}" width="{_n(plot_w)}" height="14" fill="{GRID}"/>'
            f'<rect x="{label_w}" y="{y0 + 5}" width="{_n(w)}" height="14" fill="{colour}"/>'
            f'<rect x="{_n(mark - 1)}" y="{y0 + 1}" width="3" height="22" fill="{SHARE}"/>'
            f'<text x="{label_w + plot_w + 6}" y="{y0 + 16}" fill="{AXIS}">'
            f"{bar.value}/{bar.reference}</text>"
        )
    out.append("</svg>")
    return mark_safe("".join(out))  # every text above is escaped


# --- A timeline: capacity and held GPUs as step lines, one bar per item in packed lanes ---


@dataclass(frozen=True)
class TimelineItem:
    """One bar to draw: an allocation, with its words already chosen by the caller."""

    start: datetime
    end: datetime
    label: str
    title: str
    css: str  # "bar", or "bar-confidential" for a greyed one


@dataclass(frozen=True)
class TimelineBar:
    x: float
    y: float
    width: float
    label: str
    title: str
    css: str

    @property
    def text_x(self) -> float:
        return round(self.x + 3, 1)

    @property
    def text_y(self) -> float:
        return round(self.y + 12, 1)


@dataclass(frozen=True)
class TimelineChart:
    """The geometry of a timeline over a window, in the SVG's own units; the page template
    draws it (templates/allocator/pool_detail.html)."""

    width: int
    height: int
    plot_top: int
    plot_height: int
    capacity_points: str
    held_points: str
    bars: list[TimelineBar]
    lane_height: int
    ticks: list[tuple[float, str]]
    now_x: float
    max_value: int
    truncated: int

    @property
    def tick_y(self) -> int:
        return self.plot_top + self.plot_height + 14

    @property
    def tick_marks(self) -> list[tuple[float, str, str]]:
        """(x, label, text-anchor): a label near an edge is anchored to it, so it is not cut
        off by the SVG's box ("Mar 0" for "Mar 01")."""
        edge = 30  # about half a "Mar 01" label at the ticks' font size
        return [
            (x, label, "start" if x < edge else "end" if x > self.width - edge else "middle")
            for x, label in self.ticks
        ]

    @property
    def top_label_y(self) -> int:
        return self.plot_top + 10


def timeline_chart(
    steps,
    items: list[TimelineItem],
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    left_out: int = 0,
) -> TimelineChart:
    """`steps`: a timeline's steps (`at`, `capacity`, `held`) from `start`, before `end`.
    `left_out`: how many more items exist in the window than are drawn."""
    width, plot_top, plot_height, lane_height = 900, 10, 140, 16
    span_seconds = (end - start).total_seconds()

    def x_of(t: datetime) -> float:
        t = min(max(t, start), end)
        return round((t - start).total_seconds() / span_seconds * width, 1)

    max_value = max([1, *(max(s.capacity, s.held) for s in steps)])

    def y_of(value: int) -> float:
        return round(plot_top + plot_height - value / max_value * plot_height, 1)

    def step_points(attr: str) -> str:
        points = []
        for i, step in enumerate(steps):
            x0 = x_of(step.at)
            x1 = x_of(steps[i + 1].at) if i + 1 < len(steps) else width
            y = y_of(getattr(step, attr))
            points += [f"{x0},{y}", f"{x1},{y}"]
        return " ".join(points)

    lanes_end: list[datetime] = []
    bars = []
    for item in items:
        lane = next((i for i, e in enumerate(lanes_end) if e <= item.start), None)
        if lane is None:
            lane = len(lanes_end)
            lanes_end.append(item.end)
        else:
            lanes_end[lane] = item.end
        x0, x1 = x_of(item.start), x_of(item.end)
        bars.append(
            TimelineBar(
                x=x0,
                y=plot_top + plot_height + 24 + lane * (lane_height + 4),
                width=max(x1 - x0, 2),
                label=item.label,
                title=item.title,
                css=item.css,
            )
        )
    ticks = []
    tick = (start + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    while tick < end:
        if tick.day in (1, 15):
            ticks.append((x_of(tick), f"{tick:%b %d}"))
        tick += timedelta(days=1)
    height = plot_top + plot_height + 30 + max(len(lanes_end), 1) * (lane_height + 4)
    return TimelineChart(
        width=width,
        height=height,
        plot_top=plot_top,
        plot_height=plot_height,
        capacity_points=step_points("capacity"),
        held_points=step_points("held"),
        bars=bars,
        lane_height=lane_height,
        ticks=ticks,
        now_x=x_of(now),
        max_value=max_value,
        truncated=left_out,
    )
