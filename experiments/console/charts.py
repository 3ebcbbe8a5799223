"""
Server-rendered SVG charts of the console (pure: no Django).

Each function takes plain numbers and returns markup strings that a template marks safe, so every
text placed in the SVG is escaped here (`html.escape`). No JavaScript and no external file: a
chart renders, prints and is tested as it is. Three shapes, following CONSOLE.md:

- `interval_cells`: the results table's always-valid intervals, one small SVG per row on ONE
  shared axis symmetric around zero, plus the axis for the table header.
- `lift_over_time`: one challenger's cumulative difference on one metric with its always-valid
  band, stage changes and the guardrail margin.
- `exposure_over_time`: cumulative exposed devices per arm against the split the shares promise.

Colour never carries a meaning alone: an interval's tone is also its bar's shape (solid, striped,
hollow, thin), every line of an arm has its own dash pattern and a label at its end. Colour means
good or bad only in the interval bars; the time charts use neutral colours. Every chart is an
`<svg role="img">` with an `aria-label` summary and a `<title>` (the hover text); the time charts
also return their table fallback. Nothing here raises on data: no points, one point, missing or
non-finite numbers render a small "No data yet" picture with a summary saying so.

Values are in the units they are shown in: the caller turns a proportion's difference into
percentage points (x 100) and says so with `unit="pp"`. Times are shown in UTC (a naive datetime
is taken as UTC).
"""

from __future__ import annotations

import html
import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from experiments.readout import MINUS, chip, is_proportion
from rollout.arms import BASELINE

TONES = ("good", "bad", "neutral", "none")
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
FONT_SIZE = 11
# Width of one character of 11 px text, a generous estimate: labels are laid out with it.
CHAR_WIDTH = 6.6
INK = "#24292f"
MUTED = "#57606a"
GRID = "#d8dee4"
BAND = "#0969da"

# Tone of an interval bar: colour, and a shape of its own so colour is never the only carrier.
_TONE_COLOUR = {"good": "#1a7f37", "bad": "#cf222e", "neutral": "#57606a", "none": "#8c959f"}
# Lines of arms: neutral colours (red and green mean bad and good) and distinct dash patterns.
_ARM_COLOURS = ("#0969da", "#8250df", "#1b7c83", "#9a6700", "#bf3989", "#6e7781")
_ARM_DASHES = ("8 3", "3 3", "10 3 2 3", "5 2 1 2", "14 4", "1 2")
_EXPECTED_DASH = "1 3"
_MARKER_DASH = "4 3"
_THRESHOLD_DASH = "2 3"
_THRESHOLD_COLOUR = "#9a6700"
_MARKER_ROWS = 4  # rows of stage-change labels at most
# Beyond this magnitude a number is taken as missing: no difference or count is this large,
# and the arithmetic of a scale must not overflow.
_LARGEST = 1e12

# Whole-second steps between time ticks, and the label each is read with.
_CLOCK_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
_DAY = 86400
_DAY_STEPS = (_DAY, 2 * _DAY, 7 * _DAY, 14 * _DAY, 28 * _DAY)
# Up to this span, ticks read "HH:MM"; beyond it, "MMM DD".
_CLOCK_SPAN = 2 * _DAY


# ------------------------------------------------------------------ inputs and outputs


@dataclass(frozen=True)
class IntervalRow:
    """One row of the results table: a difference and its always-valid interval.

    `tone` is the chip's ("good", "bad", "neutral"; "none" without a chip); `unit` is said after
    the difference ("pp" for a proportion in percentage points, "" for a mean).
    """

    label: str
    diff: float | None
    low: float | None
    high: float | None
    tone: str = "none"
    unit: str = "pp"


@dataclass(frozen=True)
class IntervalCell:
    label: str
    summary: str  # the aria-label: "conversion: difference -2.1 pp, interval -3.4 to -0.8, …"
    svg: str


@dataclass(frozen=True)
class IntervalAxis:
    """One SVG per row on one shared scale, and the axis SVG for the table header."""

    cells: tuple[IntervalCell, ...]
    axis: str
    limit: float  # the scale runs from -limit to +limit, in the rows' units
    zero_x: float  # where zero is in every row's SVG (and the axis's)
    width: int
    height: int


@dataclass(frozen=True)
class LiftPoint:
    at: datetime
    diff: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class ExposurePoint:
    at: datetime
    exposed: Mapping[str, int]  # arm → cumulative exposed devices


@dataclass(frozen=True)
class StageChange:
    at: datetime
    label: str  # "start 5 %", "→ 20 %", "rolled back"


@dataclass(frozen=True)
class Chart:
    svg: str
    summary: str  # one sentence: the SVG's aria-label and the table's caption
    columns: tuple[str, ...]  # the table fallback's header
    table: tuple[tuple[str, ...], ...]  # its rows, oldest first, as text


# ------------------------------------------------------------------ the results table's intervals


def interval_row(label: str, comparison: Mapping, *, baseline: bool = False) -> IntervalRow:
    """A row of `interval_cells` from a challenger's comparison in an analysis body.

    The tone is the chip's (`readout.chip`), so the bar and the chip can never disagree; a
    proportion's difference is shown in percentage points.
    """
    found = None if baseline else chip(dict(comparison))
    proportion = is_proportion(dict(comparison))
    scale = 100.0 if proportion else 1.0
    ci = comparison.get("sequential_ci") or (None, None)
    low, high = (ci[0], ci[1]) if len(ci) == 2 else (None, None)

    def scaled(value):
        number = _finite(value)
        return None if number is None else number * scale

    return IntervalRow(
        label=label,
        diff=scaled(comparison.get("diff")),
        low=scaled(low),
        high=scaled(high),
        tone=found.tone if found is not None else "none",
        unit="pp" if proportion else "",
    )


def interval_cells(
    rows: Sequence[IntervalRow | tuple], *, width: int = 260, height: int = 28
) -> IntervalAxis:
    """The intervals of a results table on one shared axis, symmetric around zero.

    `rows` are `IntervalRow`s or tuples (label, diff, low, high, tone[, unit]). The scale fits
    the largest |bound| (or |diff|) of all rows with 10 % to spare, so zero is at the same x in
    every row and a wider interval is visibly wider. A missing or non-finite number is left
    out: a row with a difference but no interval shows the dot alone, a zero-width interval a
    dash, a row with nothing a "no data" cell.
    """
    width, height = max(int(width), 40), max(int(height), 12)
    parsed = [_interval_row(row) for row in rows]
    extent = max(
        (abs(v) for row in parsed for v in (row.diff, row.low, row.high) if v is not None),
        default=0.0,
    )
    limit = extent * 1.1 if extent > 0 else 1.0
    pad = 8.0
    zero_x = width / 2

    def x(value: float) -> float:
        return pad + (value + limit) / (2 * limit) * (width - 2 * pad)

    units = {row.unit for row in parsed}
    unit = units.pop() if len(units) == 1 else ""
    cells = tuple(_interval_cell(row, x, zero_x, width, height) for row in parsed)
    axis = _interval_axis(limit, x, zero_x, width, unit, has_values=extent > 0)
    return IntervalAxis(cells, axis, limit, zero_x, width, height)


def _interval_row(row) -> IntervalRow:
    if not isinstance(row, IntervalRow):
        row = IntervalRow(*row)
    low, high = _finite(row.low), _finite(row.high)
    if low is None or high is None:
        low = high = None
    elif low > high:
        low, high = high, low
    return IntervalRow(
        label=_clean(row.label),
        diff=_finite(row.diff),
        low=low,
        high=high,
        tone=row.tone if row.tone in TONES else "none",
        unit=_clean(row.unit or ""),
    )


def _interval_summary(row: IntervalRow) -> str:
    if row.diff is None and row.low is None:
        return f"{row.label}: no data yet"
    parts = []
    if row.diff is not None:
        parts.append(f"difference {_value_text(row.diff, row.unit)}")
    if row.low is None:
        parts.append("no interval yet")
    else:
        digits = _digits(row.unit)
        parts.append(f"interval {_signed(row.low, digits)} to {_signed(row.high, digits)}")
        if row.low > 0:
            parts.append("wholly above zero")
        elif row.high < 0:
            parts.append("wholly below zero")
        elif row.low == row.high == 0:
            parts.append("at zero")
        else:
            parts.append("includes zero")
    return f"{row.label}: " + ", ".join(parts)


def _interval_cell(row: IntervalRow, x, zero_x: float, width: int, height: int) -> IntervalCell:
    summary = _interval_summary(row)
    middle = height / 2
    colour = _TONE_COLOUR[row.tone]
    body = []
    if row.low is not None:
        x0, x1 = x(row.low), x(row.high)
        if row.tone == "neutral":  # hollow
            body.append(
                f'<rect class="bar" x="{_c(x0)}" y="{_c(middle - 4)}" width="{_c(x1 - x0)}" '
                f'height="8" fill="#ffffff" stroke="{colour}" stroke-width="1.5"/>'
            )
        else:  # good: solid; bad: striped; none: thin
            thickness, dash = {"good": (8, ""), "bad": (8, ' stroke-dasharray="3 2"')}.get(
                row.tone, (2, "")
            )
            body.append(
                f'<line class="bar" x1="{_c(x0)}" y1="{_c(middle)}" x2="{_c(x1)}" '
                f'y2="{_c(middle)}" stroke="{colour}" stroke-width="{thickness}"{dash}/>'
            )
        for end in (x0, x1):  # the ends, so a zero-width interval still shows as a dash
            body.append(
                f'<line class="cap" x1="{_c(end)}" y1="{_c(middle - 6)}" x2="{_c(end)}" '
                f'y2="{_c(middle + 6)}" stroke="{colour}" stroke-width="1.5"/>'
            )
    body.append(
        f'<line class="zero" x1="{_c(zero_x)}" y1="0" x2="{_c(zero_x)}" y2="{height}" '
        f'stroke="{INK}" stroke-width="1"/>'
    )
    if row.diff is not None:
        body.append(
            f'<circle class="estimate" cx="{_c(x(row.diff))}" cy="{_c(middle)}" r="4" '
            f'fill="{INK}" stroke="#ffffff" stroke-width="1.5"/>'
        )
    if row.diff is None and row.low is None:
        body.append(_text(zero_x + 6, middle + 4, "no data yet", fill=MUTED, size=10))
    svg = _svg(width, height, summary, "".join(body), css=f"interval-cell tone-{row.tone}")
    return IntervalCell(row.label, summary, svg)


def _interval_axis(limit: float, x, zero_x: float, width: int, unit: str, *, has_values) -> str:
    height = 24
    step = _nice_step(limit / 2.5) if has_values else limit * 2
    count = math.floor(limit / step + 1e-9)
    ticks = [k * step for k in range(-count, count + 1)]
    digits = _decimals(step)
    body = []
    for value in ticks:
        tx = zero_x if value == 0 else x(value)
        label = "0" if value == 0 else _signed(value, digits)
        if value > 0 and value == ticks[-1] and unit:
            label += f" {unit}"
        anchor = "middle"
        if tx - len(label) * CHAR_WIDTH / 2 < 1:
            anchor = "start"
        elif tx + len(label) * CHAR_WIDTH / 2 > width - 1:
            anchor = "end"
        body.append(
            f'<line class="tick" x1="{_c(tx)}" y1="{16 if value else 14}" x2="{_c(tx)}" '
            f'y2="{height}" stroke="{INK if value == 0 else MUTED}" stroke-width="1"/>'
        )
        body.append(_text(tx, 11, label, anchor=anchor, fill=INK if value == 0 else MUTED))
    shown = f"{_signed(-limit, digits + 1)} to {_signed(limit, digits + 1)}"
    summary = (
        f"Shared scale of the differences, {shown}{' ' + unit if unit else ''}, zero in the middle"
        if has_values
        else "Shared scale of the differences: no data yet"
    )
    return _svg(width, height, summary, "".join(body), css="interval-axis")


# ------------------------------------------------------------------ lift over time


def lift_over_time(
    points: Sequence[LiftPoint | tuple],
    *,
    stage_changes: Sequence[StageChange | tuple] = (),
    threshold: float | None = None,
    unit: str = "pp",
    width: int = 640,
    height: int = 240,
    arm: str = "the challenger",
    metric: str = "the metric",
    level: float | None = None,
    looks: int | None = None,
) -> Chart:
    """The cumulative difference of one challenger on one metric, with its always-valid band.

    `points` are `LiftPoint`s or tuples (at, diff, low, high), in the units shown (`unit`);
    `stage_changes` (at, label) are drawn as dashed verticals; `threshold` (signed, the same
    units) as a dotted horizontal: the guardrail margin. `level` (e.g. 0.99) names the band's
    coverage in the legend; `looks` is how many looks there were when `points` are a thinned
    selection of them (default: as many as points).
    """
    width, height = max(int(width), 200), max(int(height), 120)
    unit = _clean(unit)
    parsed = sorted(
        (p for p in (_lift_point(point) for point in points) if p is not None),
        key=lambda p: p.at,
    )
    changes = _stage_changes(stage_changes)
    threshold = _finite(threshold)
    digits = _digits(unit)
    looks = looks if looks is not None else len(parsed)
    columns = ("Time (UTC)", "Difference", "Always-valid interval")
    table = tuple(
        (
            _table_time(p.at),
            _value_text(p.diff, unit) if p.diff is not None else "—",
            f"{_signed(p.low, digits)} … {_signed(p.high, digits)}" if p.low is not None else "—",
        )
        for p in parsed
    )
    subject = f"Lift of {_clean(arm)} on {_clean(metric)}"
    drawn = [p for p in parsed if p.diff is not None or p.low is not None]
    if len({p.at for p in drawn}) < 2:
        if not drawn:
            return Chart(_placeholder(f"{subject}: no data yet.", width), f"{subject}: no data yet.",
                         columns, table)  # fmt: skip
        only = drawn[-1]
        summary = (
            f"{subject}: one look so far, at {_table_time(only.at)} UTC: {_lift_text(only, unit)}."
        )
        return Chart(_placeholder(summary, width, "One look so far"), summary, columns, table)

    values = [v for p in drawn for v in (p.diff, p.low, p.high) if v is not None]
    values.append(0.0)
    if threshold is not None:
        values.append(threshold)
    times = [_epoch(p.at) for p in drawn] + [_epoch(c.at) for c in changes]
    legend = [("band", f"always-valid {_percent(level)} interval" if level else "always-valid "
               "interval"), ("line", "difference")]  # fmt: skip
    if changes:
        legend.append(("marker", "stage change"))
    if threshold is not None:
        legend.append(("threshold", "guardrail margin"))
    rows, footer = _footer(width, height, _time_caption(min(times), max(times)), legend)
    # The margin is labelled right of the plot, where it hides no data.
    margin_label = f"margin {_value_text(threshold, unit)}" if threshold is not None else ""
    right_room = min(len(margin_label) * CHAR_WIDTH + 10, width * 0.3) if margin_label else 16.0
    frame = _frame(width, height, min(times), max(times), values, changes=changes,
                   footer_rows=rows, right_room=right_room)  # fmt: skip

    body = [*_value_grid(frame, unit), *_time_axis(frame), *footer]
    band = _band_path(frame, drawn)
    if band:
        body.append(
            f'<path class="band" d="{band}" fill="{BAND}" fill-opacity="0.18" stroke="{BAND}" '
            'stroke-opacity="0.35" stroke-width="0.75"/>'
        )
    body.append(_hline(frame, 0.0, css="zero", stroke=INK, width=1.25))
    if threshold is not None:
        body.append(
            _hline(frame, threshold, css="threshold", stroke=_THRESHOLD_COLOUR, width=1.5,
                   dash=_THRESHOLD_DASH)
        )  # fmt: skip
    body.extend(_stage_markers(frame))
    line = _line_path(frame, [(p.at, p.diff) for p in drawn])
    if line:
        body.append(
            f'<path class="line" d="{line}" fill="none" stroke="{BAND}" stroke-width="2" '
            'stroke-linejoin="round"/>'
        )
    last = next((p for p in reversed(drawn) if p.diff is not None), None)
    if last is not None:
        body.append(
            f'<circle class="last" cx="{_c(frame.x(_epoch(last.at)))}" '
            f'cy="{_c(frame.y(last.diff))}" r="3.5" fill="{BAND}"/>'
        )
    if margin_label:
        body.append(
            _text(frame.right + 4, frame.y(threshold) + 4, margin_label, fill=_THRESHOLD_COLOUR)
        )

    summary = (
        f"{subject} over {looks} look{'s' if looks != 1 else ''} from "
        f"{_moment(drawn[0].at, drawn)} to {_moment(drawn[-1].at, drawn)} UTC: last "
        + (_lift_text(last, unit) if last is not None else "not available")
        + _zero_sentence(drawn)
        + (f"; guardrail margin {_value_text(threshold, unit)}" if threshold is not None else "")
        + "."
    )
    return Chart(_svg(width, height, summary, "".join(body), css="chart chart-lift"), summary,
                 columns, table)  # fmt: skip


def _lift_point(point) -> LiftPoint | None:
    if not isinstance(point, LiftPoint):
        try:
            point = LiftPoint(*point)
        except TypeError:
            return None
    at = _datetime(point.at)
    if at is None:
        return None
    low, high = _finite(point.low), _finite(point.high)
    if low is None or high is None:
        low = high = None
    elif low > high:
        low, high = high, low
    return LiftPoint(at, _finite(point.diff), low, high)


def _lift_text(point: LiftPoint, unit: str) -> str:
    text = _value_text(point.diff, unit) if point.diff is not None else "no difference yet"
    if point.low is not None:
        digits = _digits(unit)
        text += f" ({_signed(point.low, digits)} … {_signed(point.high, digits)})"
    return text


def _zero_sentence(points: Sequence[LiftPoint]) -> str:
    """When the band last came to exclude zero, or that it still includes it."""
    last = points[-1]
    if last.low is None:
        return "; no interval yet"
    if last.low <= 0 <= last.high:
        return "; the band includes zero"
    since = last
    for point in reversed(points):
        if point.low is None or point.low <= 0 <= point.high:
            break
        since = point
    side = "above" if last.low > 0 else "below"
    return f"; the band has been wholly {side} zero since {_moment(since.at, points)}"


def _band_path(frame: _Frame, points: Sequence[LiftPoint]) -> str:
    """One path: a closed area per run of points that have an interval."""
    runs, run = [], []
    for point in points:
        if point.low is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append(point)
    if run:
        runs.append(run)
    parts = []
    for run in runs:
        upper = [(frame.x(_epoch(p.at)), frame.y(p.high)) for p in run]
        lower = [(frame.x(_epoch(p.at)), frame.y(p.low)) for p in reversed(run)]
        if len(run) == 1:  # a lone interval: a thin sliver, so it still shows
            (ux, uy), (lx, ly) = upper[0], lower[0]
            upper = [(ux - 1, uy), (ux + 1, uy)]
            lower = [(lx + 1, ly), (lx - 1, ly)]
        coordinates = " L".join(f"{_c(px)},{_c(py)}" for px, py in upper + lower)
        parts.append(f"M{coordinates} Z")
    return " ".join(parts)


# ------------------------------------------------------------------ exposure over time


def exposure_over_time(
    points: Sequence[ExposurePoint | tuple],
    *,
    expected_shares: Mapping[str, float] | Sequence[Mapping[str, float]],
    stage_changes: Sequence[StageChange | tuple] = (),
    width: int = 640,
    height: int = 240,
    looks: int | None = None,
    show_baseline: bool = True,
) -> Chart:
    """Cumulative exposed devices per arm, against what each challenger would have if the
    devices split as the shares promise.

    `points` are `ExposurePoint`s or tuples (at, {arm: exposed}). `expected_shares` maps each
    arm (the baseline too) to its share in any unit (fractions, percent, basis points: only the
    ratio counts): one mapping for the whole chart, or one per point (the shares in force at that
    look, e.g. each analysis body's arms' `share`). The expected count of a challenger adds, look
    by look, the devices counted since the previous look at the ratio then in force.
    `show_baseline=False` leaves the baseline's line out (its devices still make the total the
    expected counts come from), so that small challengers get the whole height.
    """
    width, height = max(int(width), 200), max(int(height), 120)
    shares_per_point = isinstance(expected_shares, Sequence) and not isinstance(
        expected_shares, str | bytes
    )
    pairs = []
    for index, point in enumerate(points):
        parsed = _exposure_point(point)
        if parsed is None:
            continue
        shares = (
            (expected_shares[index] if index < len(expected_shares) else {})
            if shares_per_point
            else expected_shares
        )
        pairs.append((parsed, shares if isinstance(shares, Mapping) else {}))
    pairs.sort(key=lambda pair: pair[0].at)
    parsed_points = [p for p, _ in pairs]
    arms = _arm_order(parsed_points)
    challengers = [a for a in arms if a != BASELINE]
    expected = _expected_counts(pairs, arms)
    looks = looks if looks is not None else len(parsed_points)

    columns = ("Time (UTC)", *arms, *(f"{a} expected" for a in challengers if a in expected))
    table = tuple(
        (
            _table_time(p.at),
            *(_count(p.exposed.get(a)) for a in arms),
            *(_count(expected[a][i]) for a in challengers if a in expected),
        )
        for i, p in enumerate(parsed_points)
    )
    subject = "Exposed devices per arm"
    if not arms or len({p.at for p in parsed_points}) < 2:
        if not arms:
            summary = f"{subject}: no data yet."
            return Chart(_placeholder(summary, width), summary, columns, table)
        summary = (
            f"{subject}: one look so far, at {_table_time(parsed_points[-1].at)} UTC: "
            + _counts_text(parsed_points, arms, expected, len(parsed_points) - 1)
            + "."
        )
        return Chart(_placeholder(summary, width, "One look so far"), summary, columns, table)

    drawn_arms = [a for a in arms if show_baseline or a != BASELINE] or arms
    labels = {}
    for arm in drawn_arms:
        count = _last_value([p.exposed.get(arm) for p in parsed_points])
        labels[arm] = f"{arm} {_count(count)}"
    expected_labels = {
        arm: (f"{arm} expected" if len(challengers) > 1 else "expected")
        + f" {_count(_last_value(expected[arm]))}"
        for arm in challengers
        if arm in expected
    }
    longest = max(len(_shorten(text)) for text in [*labels.values(), *expected_labels.values()])
    right_room = min(longest * CHAR_WIDTH + 12, width * 0.4)

    values = [float(v) for p in parsed_points for a, v in p.exposed.items() if a in drawn_arms]
    values += [v for series in expected.values() for v in series if v is not None]
    values.append(0.0)
    changes = _stage_changes(stage_changes)
    times = [_epoch(p.at) for p in parsed_points] + [_epoch(c.at) for c in changes]
    legend = [("arm", "exposed devices: one dash pattern per arm")]
    if expected:
        legend.append(("expected", "expected at the set shares"))
    rows, footer = _footer(width, height, _time_caption(min(times), max(times)), legend)
    frame = _frame(width, height, min(times), max(times), values, changes=changes,
                   footer_rows=rows, right_room=right_room, counts=True)  # fmt: skip
    body = [*_value_grid(frame, "", counts=True), *_time_axis(frame), *footer]
    body.append(_hline(frame, 0.0, css="zero", stroke=INK, width=1))
    body.extend(_stage_markers(frame))
    ends = []
    for index, arm in enumerate(drawn_arms):
        colour, dash = _arm_style(arm, index - (1 if BASELINE in drawn_arms else 0))
        if arm in expected:
            path = _line_path(frame, list(zip((p.at for p in parsed_points), expected[arm],
                                              strict=True)))  # fmt: skip
            if path:
                body.append(
                    f'<path class="expected" data-arm="{_esc(arm)}" d="{path}" fill="none" '
                    f'stroke="{colour}" stroke-width="1.75" stroke-dasharray="{_EXPECTED_DASH}" '
                    'stroke-linecap="round"/>'
                )
                end = _last_value(expected[arm])
                ends.append((frame.y(end), expected_labels[arm], colour))
        series = [(p.at, p.exposed.get(arm)) for p in parsed_points]
        path = _line_path(frame, series)
        if path:
            dashing = f' stroke-dasharray="{dash}"' if dash else ""
            body.append(
                f'<path class="arm" data-arm="{_esc(arm)}" d="{path}" fill="none" '
                f'stroke="{colour}" stroke-width="2"{dashing} stroke-linejoin="round"/>'
            )
            ends.append((frame.y(_last_value([v for _, v in series])), labels[arm], colour))
    body.extend(_end_labels(frame, ends))

    summary = (
        f"{subject} over {looks} look{'s' if looks != 1 else ''} from "
        f"{_moment(parsed_points[0].at, parsed_points)} to "
        f"{_moment(parsed_points[-1].at, parsed_points)} UTC: "
        + _counts_text(parsed_points, arms, expected, len(parsed_points) - 1)
        + "."
    )
    return Chart(_svg(width, height, summary, "".join(body), css="chart chart-exposure"), summary,
                 columns, table)  # fmt: skip


def _exposure_point(point) -> ExposurePoint | None:
    if not isinstance(point, ExposurePoint):
        try:
            point = ExposurePoint(*point)
        except TypeError:
            return None
    at = _datetime(point.at)
    if at is None or not isinstance(point.exposed, Mapping):
        return None
    exposed = {}
    for arm, value in point.exposed.items():
        number = _finite(value)
        if number is not None:
            exposed[_clean(arm)] = max(0.0, number)
    return ExposurePoint(at, exposed)


def _arm_order(points: Sequence[ExposurePoint]) -> list[str]:
    seen: dict[str, None] = {}
    for point in points:
        for arm in point.exposed:
            seen.setdefault(arm)
    arms = list(seen)
    return ([BASELINE] if BASELINE in seen else []) + [a for a in arms if a != BASELINE]


def _expected_counts(pairs, arms: Sequence[str]) -> dict[str, list[float | None]]:
    """Per challenger, the count it would have if every look's new devices split at the
    shares then in force."""
    expected: dict[str, list[float | None]] = {a: [] for a in arms if a != BASELINE}
    previous_total = 0.0
    running = dict.fromkeys(expected, 0.0)
    usable = dict.fromkeys(expected, False)
    for point, shares in pairs:
        total = sum(point.exposed.get(a, 0.0) for a in arms)
        weights = {a: _finite(shares.get(a)) for a in arms}
        weights = {a: w for a, w in weights.items() if w is not None and w >= 0}
        whole = sum(weights.values())
        for arm in expected:
            if whole > 0 and arm in weights:
                running[arm] += (total - previous_total) * weights[arm] / whole
                usable[arm] = True
                expected[arm].append(max(0.0, running[arm]))
            else:
                expected[arm].append(None)
        previous_total = total
    return {arm: series for arm, series in expected.items() if usable[arm]}


def _counts_text(points, arms, expected, index: int) -> str:
    parts = []
    for arm in arms:
        text = f"{arm} {_count(points[index].exposed.get(arm))}"
        if arm in expected and expected[arm][index] is not None:
            text += f" (expected {_count(expected[arm][index])} at the set shares)"
        parts.append(text)
    return ", ".join(parts)


def _arm_style(arm: str, index: int) -> tuple[str, str]:
    if arm == BASELINE:
        return INK, ""
    return _ARM_COLOURS[index % len(_ARM_COLOURS)], _ARM_DASHES[index % len(_ARM_DASHES)]


def _end_labels(frame: _Frame, ends: list[tuple[float, str, str]]) -> list[str]:
    """Labels at the right ends of the lines, moved apart so that none overlaps another."""
    gap = FONT_SIZE + 2
    placed = sorted(ends, key=lambda end: end[0])
    ys = [y for y, _, _ in placed]
    for i in range(1, len(ys)):
        ys[i] = max(ys[i], ys[i - 1] + gap)
    lowest = frame.bottom - 1  # clear of the time labels under the axis
    if ys and ys[-1] > lowest:
        ys[-1] = lowest
        for i in range(len(ys) - 2, -1, -1):
            ys[i] = min(ys[i], ys[i + 1] - gap)
    return [
        _text(frame.right + 6, y + 4, _shorten(text), fill=colour, halo=True)
        for y, (_, text, colour) in zip(ys, placed, strict=True)
    ]


# ------------------------------------------------------------------ frames, axes, marks


@dataclass(frozen=True)
class _Frame:
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    t0: float
    t1: float
    v0: float
    v1: float
    step: float  # between value ticks
    markers: tuple = ()  # stage changes' labels laid out (`_place_markers`)
    marker_rows: int = 2

    def x(self, t: float) -> float:
        return self.left + (t - self.t0) / (self.t1 - self.t0) * (self.right - self.left)

    def y(self, v: float) -> float:
        return self.bottom - (v - self.v0) / (self.v1 - self.v0) * (self.bottom - self.top)


def _frame(
    width, height, t0, t1, values, *, changes=(), footer_rows=1, right_room=16.0, counts=False
) -> _Frame:
    low, high = min(values), max(values)
    if high - low <= 0:
        spread = abs(high) * 0.5 or 1.0
        low, high = (
            (low, high + 2 * spread) if counts and low >= 0 else (low - spread, high + spread)
        )
    pad = (high - low) * 0.06
    low = low - pad if low < 0 or not counts else low
    high = high + pad
    step = _nice_step((high - low) / 4, counts=counts)
    v0 = math.floor(low / step + 1e-9) * step
    v1 = math.ceil(high / step - 1e-9) * step
    if v1 <= v0:
        v1 = v0 + step
    # Room on the left for the widest value label and the axis caption above them.
    ticks = (v0 + k * step for k in range(round((v1 - v0) / step) + 1))
    widest = max(len(_axis_value(value, step, counts)) for value in ticks)
    caption = _value_caption(counts, "")
    left = max(40.0, widest * CHAR_WIDTH + 14, len(caption) * CHAR_WIDTH + 10)
    right = width - right_room

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * (right - left)

    markers, rows = _place_markers(changes, x, width)
    top = 6.0 + 12 * max(2, rows)
    bottom = height - 24.0 - 14 * footer_rows
    return _Frame(width, height, left, right, top, bottom, t0, t1, v0, v1, step, markers,
                  max(2, rows))  # fmt: skip


def _value_caption(counts: bool, unit: str) -> str:
    return "devices" if counts else unit


def _axis_value(value: float, step: float, counts: bool) -> str:
    if counts:
        return _compact(value)
    return "0" if abs(value) < step * 1e-9 else _signed(value, _decimals(step))


def _value_grid(frame: _Frame, unit: str, *, counts=False) -> list[str]:
    parts = []
    count = round((frame.v1 - frame.v0) / frame.step)
    for k in range(count + 1):
        value = frame.v0 + k * frame.step
        y = frame.y(value)
        parts.append(
            f'<line class="grid" x1="{_c(frame.left)}" y1="{_c(y)}" x2="{_c(frame.right)}" '
            f'y2="{_c(y)}" stroke="{GRID}" stroke-width="1"/>'
        )
        parts.append(
            _text(frame.left - 6, y + 4, _axis_value(value, frame.step, counts), anchor="end",
                  fill=MUTED)
        )  # fmt: skip
    caption = _value_caption(counts, unit)
    if caption:
        parts.append(_text(frame.left - 6, frame.top - 8, caption, anchor="end", fill=MUTED))
    return parts


def _time_axis(frame: _Frame) -> list[str]:
    span = frame.t1 - frame.t0
    clock = span <= _CLOCK_SPAN
    label_px = (5 if clock else 6) * CHAR_WIDTH + 18
    most = max(2, int((frame.right - frame.left) // label_px))
    steps = _CLOCK_STEPS if clock else _DAY_STEPS
    step = next((s for s in steps if span / s <= most), None)
    if step is None:
        step = math.ceil(span / most / _DAY) * _DAY
    parts = [
        f'<line class="axis" x1="{_c(frame.left)}" y1="{_c(frame.bottom)}" '
        f'x2="{_c(frame.right)}" y2="{_c(frame.bottom)}" stroke="{MUTED}" stroke-width="1"/>'
    ]
    tick = math.ceil(frame.t0 / step) * step
    while tick <= frame.t1 + 1e-6:
        x = frame.x(tick)
        moment = datetime.fromtimestamp(tick, UTC)
        parts.append(
            f'<line class="tick" x1="{_c(x)}" y1="{_c(frame.bottom)}" x2="{_c(x)}" '
            f'y2="{_c(frame.bottom + 4)}" stroke="{MUTED}" stroke-width="1"/>'
        )
        parts.append(
            _text(x, frame.bottom + 15, moment.strftime("%H:%M" if clock else "%b %d"),
                  anchor="middle", fill=MUTED)
        )  # fmt: skip
        tick += step
    return parts


def _time_caption(t0: float, t1: float) -> str:
    start, end = datetime.fromtimestamp(t0, UTC), datetime.fromtimestamp(t1, UTC)
    if t1 - t0 > _CLOCK_SPAN:
        return "dates in UTC"
    if start.date() == end.date():
        return f"{start:%b %d}, UTC"
    return f"{start:%b %d} \u2013 {end:%b %d}, UTC"


def _footer(width: int, height: int, caption: str, items) -> tuple[int, list[str]]:
    """The legend's keys and the time caption below the time axis, in as many rows as they
    need at this width (the caption right-aligned on the last): (rows, markup)."""
    rows: list[list[tuple[float, str, str]]] = [[]]
    x = 8.0
    for kind, text in items:
        size = 20 + len(text) * CHAR_WIDTH
        if rows[-1] and x + size > width - 4:
            rows.append([])
            x = 8.0
        rows[-1].append((x, kind, text))
        x += size + 12
    caption_starts = width - 4 - len(caption) * CHAR_WIDTH
    caption_row = len(rows) - 1 if x - 12 + 8 <= caption_starts or not rows[-1] else len(rows)
    count = max(len(rows), caption_row + 1)
    parts = []
    for index, row in enumerate(rows):
        y = height - 6 - 14 * (count - 1 - index)
        for key_x, kind, text in row:
            parts.extend(_legend_key(key_x, y, kind, text))
    parts.append(_text(width - 4, height - 6, caption, anchor="end", fill=MUTED))
    return count, parts


def _legend_key(x: float, y: float, kind: str, text: str) -> list[str]:
    swatch_y = y - 4
    if kind == "band":
        swatch = (
            f'<rect x="{_c(x)}" y="{_c(swatch_y - 5)}" width="16" height="10" fill="{BAND}" '
            'fill-opacity="0.18"/>'
        )
    else:
        stroke, dash, width = {
            "line": (BAND, "", 2),
            "marker": (MUTED, _MARKER_DASH, 1),
            "threshold": (_THRESHOLD_COLOUR, _THRESHOLD_DASH, 1.5),
            "arm": (INK, "", 2),
            "expected": (INK, _EXPECTED_DASH, 1.75),
        }[kind]
        dashing = f' stroke-dasharray="{dash}"' if dash else ""
        cap = ' stroke-linecap="round"' if kind == "expected" else ""
        swatch = (
            f'<line x1="{_c(x)}" y1="{_c(swatch_y)}" x2="{_c(x + 16)}" y2="{_c(swatch_y)}" '
            f'stroke="{stroke}" stroke-width="{width}"{dashing}{cap}/>'
        )
    return [f'<g class="legend-key">{swatch}', _text(x + 20, y, text, fill=MUTED), "</g>"]


def _place_markers(
    changes: Sequence[StageChange], x, width: int
) -> tuple[tuple[tuple[float, int, str, float, str], ...], int]:
    """Where each stage change's label goes: ((x, row, anchor, text x, label), ...) and how
    many rows of labels the top margin needs, so that no label overlaps another."""
    placed, row_ends = [], []
    for change in changes:
        at = x(_epoch(change.at))
        label = _shorten(change.label)
        w = len(label) * CHAR_WIDTH
        if at + 3 + w <= width - 2:
            anchor, text_x, span = "start", at + 3, (at, at + 3 + w)
        else:
            anchor, text_x, span = "end", at - 3, (at - 3 - w, at)
        row = next((r for r, end in enumerate(row_ends) if end + 6 <= span[0]), None)
        if row is None and len(row_ends) < _MARKER_ROWS:
            row_ends.append(-math.inf)
            row = len(row_ends) - 1
        if row is None:  # too many too close: overlap where it overlaps least
            row = min(range(len(row_ends)), key=lambda r: row_ends[r])
        row_ends[row] = span[1]
        placed.append((at, row, anchor, text_x, label))
    return tuple(placed), len(row_ends)


def _stage_markers(frame: _Frame) -> list[str]:
    """Dashed verticals at the stage changes, their labels in rows above the plot."""
    parts = []
    for x, row, anchor, text_x, label in frame.markers:
        y = frame.top - 6 - 12 * (frame.marker_rows - 1 - row)
        parts.append(
            f'<g class="stage-change"><line x1="{_c(x)}" y1="{_c(y + 3)}" '
            f'x2="{_c(x)}" y2="{_c(frame.bottom)}" stroke="{MUTED}" stroke-width="1" '
            f'stroke-dasharray="{_MARKER_DASH}"/>'
            + _text(text_x, y, label, anchor=anchor, fill=INK)
            + "</g>"
        )
    return parts


def _stage_changes(changes) -> list[StageChange]:
    parsed = []
    for change in changes or ():
        if not isinstance(change, StageChange):
            try:
                change = StageChange(*change)
            except TypeError:
                continue
        at = _datetime(change.at)
        if at is not None:
            parsed.append(StageChange(at, _clean(change.label)))
    return sorted(parsed, key=lambda c: c.at)


def _hline(frame: _Frame, value: float, *, css, stroke, width, dash="") -> str:
    y = frame.y(value)
    dashing = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line class="{css}" x1="{_c(frame.left)}" y1="{_c(y)}" x2="{_c(frame.right)}" '
        f'y2="{_c(y)}" stroke="{stroke}" stroke-width="{width}"{dashing}/>'
    )


def _line_path(frame: _Frame, series: Sequence[tuple[datetime, float | None]]) -> str:
    """One path through the values, broken where one is missing."""
    parts, pen_down = [], False
    for at, value in series:
        if value is None:
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{_c(frame.x(_epoch(at)))},{_c(frame.y(value))}")
        pen_down = True
    return " ".join(parts)


# ------------------------------------------------------------------ markup and text


def _svg(width: int, height: int, summary: str, body: str, *, css: str) -> str:
    label = _esc(summary)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{label}" '
        f'font-family="{_esc(FONT)}" font-size="{FONT_SIZE}" font-weight="normal" '
        f'font-style="normal"><title>{label}</title>{body}</svg>'
    )


def _text(x: float, y: float, text: str, *, anchor="start", fill=INK, size=None, halo=False) -> str:
    sized = f' font-size="{size}"' if size else ""
    # A white outline under the letters keeps a label readable over lines and the band.
    outline = ' stroke="#ffffff" stroke-width="3" paint-order="stroke"' if halo else ""
    return (
        f'<text x="{_c(x)}" y="{_c(y)}" text-anchor="{anchor}" fill="{fill}"{sized}{outline}>'
        f"{_esc(text)}</text>"
    )


def _placeholder(summary: str, width: int, text: str = "No data yet") -> str:
    w, h = min(int(width), 320), 48
    body = (
        f'<rect x="0.5" y="0.5" width="{w - 1}" height="{h - 1}" fill="#f6f8fa" stroke="{GRID}" '
        'rx="4"/>' + _text(w / 2, h / 2 + 4, text, anchor="middle", fill=MUTED)
    )
    return _svg(w, h, summary, body, css="chart chart-empty")


def _esc(text) -> str:
    return html.escape(_clean(text), quote=True)


def _clean(text) -> str:
    """Text as one line of characters XML allows: control characters (a name can hold any)
    would make the SVG ill-formed, and line breaks mean nothing in a label."""
    return "".join(
        " " if unicodedata.category(ch) == "Cc" else ch
        for ch in str(text)
        if ch not in "\ufffe\uffff"
    )


def _c(value: float) -> str:
    """A coordinate: two decimals at most, no "-0"."""
    rounded = round(value, 2)
    return f"{rounded + 0.0:g}" if rounded else "0"


def _shorten(text: str, most: int = 28) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _finite(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and abs(number) <= _LARGEST else None


def _datetime(value) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _epoch(at: datetime) -> float:
    return at.timestamp()


def _moment(at: datetime, points) -> str:
    """A time in a summary: "14:05" when every point is on one UTC day, else "Mar 05 14:05"."""
    same_day = len({p.at.date() for p in points}) == 1
    return at.strftime("%H:%M" if same_day else "%b %d %H:%M")


def _table_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M")


def _digits(unit: str) -> int:
    return 1 if unit in ("pp", "%") else 3


def _signed(value: float, digits: int = 1) -> str:
    """As `readout` writes a difference: a sign always, a true minus, small values kept."""
    if value == 0:
        return f"{0:.{digits}f}"
    text = f"{value:+.{digits}f}" if abs(value) >= 10**-digits else f"{value:+.2g}"
    return text.replace("-", MINUS)


def _value_text(value: float, unit: str) -> str:
    text = _signed(value, _digits(unit))
    return f"{text} {unit}" if unit else text


def _percent(level: float) -> str:
    return f"{level * 100:.4g} %"


def _count(value) -> str:
    number = _finite(value)
    return "—" if number is None else f"{round(number):,}"


def _compact(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if magnitude >= 10_000:
        return f"{value / 1000:.3g}k"
    return f"{round(value):,}"


def _last_value(values: Sequence) -> float | None:
    return next((v for v in reversed(values) if v is not None), None)


def _nice_step(raw: float, *, counts: bool = False) -> float:
    """The smallest step of 1, 2, 2.5 or 5 times a power of ten that is at least `raw`."""
    if not raw > 0 or not math.isfinite(raw):
        return 1.0
    base = 10 ** math.floor(math.log10(raw))
    multiples = (1, 2, 5, 10) if counts else (1, 2, 2.5, 5, 10)
    step = next(m * base for m in multiples if m * base >= raw * (1 - 1e-9))
    return max(1.0, step) if counts else step


def _decimals(step: float) -> int:
    for digits in range(7):
        if abs(round(step, digits) - step) <= 1e-9 * max(1.0, abs(step)):
            return digits
    return 6
