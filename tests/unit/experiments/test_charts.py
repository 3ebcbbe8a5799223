"""The console's SVG charts: structure, one shared scale, accessible text, escaping, and no
exception on any input."""

import itertools
import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.console import charts

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def find(root: ET.Element, tag: str, css: str | None = None) -> list[ET.Element]:
    return [
        e for e in root.iter(f"{SVG}{tag}") if css is None or css in (e.get("class") or "").split()
    ]


def texts(root: ET.Element) -> list[str]:
    return [e.text or "" for e in root.iter(f"{SVG}text")]


def view_box(root: ET.Element) -> tuple[float, float]:
    _, _, width, height = (float(v) for v in root.get("viewBox").split())
    return width, height


def bar_span(element: ET.Element) -> tuple[float, float]:
    if element.tag == f"{SVG}rect":
        x = float(element.get("x"))
        return x, x + float(element.get("width"))
    return float(element.get("x1")), float(element.get("x2"))


def lift_points(count: int, *, step_minutes: int = 5, start=T0):
    """A difference of -2 pp whose band narrows until it excludes zero."""
    return [
        (start + timedelta(minutes=step_minutes * i), -2.0, -2.0 - 6 / (i + 1), -2.0 + 6 / (i + 1))
        for i in range(count)
    ]


# ------------------------------------------------------------------ interval cells

ROWS = [
    ("conversion", -2.1, -3.4, -0.8, "bad"),
    ("model errors", 0.3, -0.2, 0.9, "neutral"),
    ("value per device", 1.2, 0.4, 2.0, "good"),
    ("outcome Dismissed", 0.1, -4.0, 4.2, "none"),
]


def test_interval_cells__rows__one_accessible_svg_per_row_and_an_axis():
    result = charts.interval_cells(ROWS)

    assert [cell.label for cell in result.cells] == [row[0] for row in ROWS]
    for cell in result.cells:
        root = parse(cell.svg)
        assert root.get("role") == "img"
        assert root.get("aria-label") == cell.summary
        assert root.find(f"{SVG}title").text == cell.summary
        assert view_box(root) == (260, 28)
    axis = parse(result.axis)
    assert axis.get("role") == "img" and axis.get("aria-label")
    assert "0" in texts(axis)


def test_interval_cells__summary__says_difference_interval_and_side_of_zero():
    cells = charts.interval_cells(ROWS).cells

    assert cells[0].summary == (
        "conversion: difference \u22122.1 pp, interval \u22123.4 to \u22120.8, wholly below zero"
    )
    assert cells[1].summary.endswith("includes zero")
    assert cells[2].summary.endswith("wholly above zero")


def test_interval_cells__shared_scale__zero_at_the_same_x_and_bounds_in_proportion():
    result = charts.interval_cells(ROWS, width=300)

    zeros = {float(find(parse(c.svg), "line", "zero")[0].get("x1")) for c in result.cells}
    assert zeros == {result.zero_x} == {150.0}
    # The scale fits the largest |bound| (4.2) with 10 % to spare, on both sides of zero.
    assert result.limit == pytest.approx(4.62)
    pad = 8

    def x(value):
        return pad + (value + result.limit) / (2 * result.limit) * (300 - 2 * pad)

    low, high = bar_span(find(parse(result.cells[3].svg), "line", "bar")[0])
    assert (low, high) == (pytest.approx(x(-4.0), abs=0.01), pytest.approx(x(4.2), abs=0.01))
    dot = find(parse(result.cells[0].svg), "circle", "estimate")[0]
    assert float(dot.get("cx")) == pytest.approx(x(-2.1), abs=0.01)
    axis_zero = [
        t for t in find(parse(result.axis), "line", "tick") if t.get("stroke") == "#24292f"
    ]
    assert float(axis_zero[0].get("x1")) == result.zero_x


def test_interval_cells__tones__differ_in_shape_not_only_in_colour():
    cells = charts.interval_cells(ROWS).cells

    shapes = set()
    for cell in cells:
        (bar,) = [e for e in parse(cell.svg).iter() if e.get("class") == "bar"]
        shapes.add((bar.tag, bar.get("stroke-dasharray"), bar.get("stroke-width")))
    # Solid, striped, hollow and thin: one shape per tone.
    assert len(shapes) == 4


def test_interval_cells__script_in_a_label__is_escaped():
    label = '<script>alert("x")</script>'

    result = charts.interval_cells([(label, 1.0, 0.5, 1.5, "good")])

    svg = result.cells[0].svg
    assert "<script" not in svg
    root = parse(svg)
    assert root.get("aria-label").startswith(label + ":")
    assert find(root, "script") == []


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (("a", None, None, None, "none"), "a: no data yet"),
        (("a", math.nan, math.inf, -math.inf, "bad"), "a: no data yet"),
        (("a", 1.0, None, 2.0, "good"), "a: difference +1.0 pp, no interval yet"),
        (("a", 0.5, 0.5, 0.5, "good"), "a: difference +0.5 pp, interval +0.5 to +0.5, wholly"),
        (("a", 0.0, 0.0, 0.0, "neutral"), "a: difference 0.0 pp, interval 0.0 to 0.0, at zero"),
        (("a", 1.0, 2.0, 0.5, "mauve"), "a: difference +1.0 pp, interval +0.5 to +2.0"),
    ],
)
def test_interval_cells__degenerate_row__renders_and_says_what_it_has(row, expected):
    result = charts.interval_cells([row])

    cell = result.cells[0]
    assert cell.summary.startswith(expected)
    root = parse(cell.svg)
    assert len(find(root, "line", "zero")) == 1
    assert result.limit > 0 and math.isfinite(result.limit)


def test_interval_cells__zero_width_interval__still_drawn_as_a_dash():
    root = parse(charts.interval_cells([("a", 0.5, 0.5, 0.5, "none")]).cells[0].svg)

    caps = find(root, "line", "cap")
    assert len(caps) == 2 and caps[0].get("x1") == caps[1].get("x1")
    assert len(find(root, "circle", "estimate")) == 1


def test_interval_cells__no_rows__an_axis_and_no_cells():
    result = charts.interval_cells([])

    assert result.cells == ()
    assert parse(result.axis).get("aria-label").endswith("no data yet")


def test_interval_row__from_a_comparison__tone_of_the_chip_in_percentage_points():
    comparison = {
        "diff": -0.021,
        "sequential_ci": [-0.034, -0.008],
        "direction": "worse",
        "mean": 0.08,
        "baseline_mean": 0.101,
    }

    row = charts.interval_row("conversion", comparison)

    assert row == charts.IntervalRow(
        "conversion", pytest.approx(-2.1), pytest.approx(-3.4), pytest.approx(-0.8), "bad", "pp"
    )
    assert charts.interval_row("x", {**comparison, "insufficient": "n < 100"}).tone == "none"


finite_or_not = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
)
rows_strategy = st.lists(
    st.tuples(
        st.text(max_size=12),
        finite_or_not,
        finite_or_not,
        finite_or_not,
        st.sampled_from([*charts.TONES, "other"]),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(rows=rows_strategy, width=st.integers(min_value=40, max_value=600))
def test_interval_cells__any_rows__one_zero_x_and_every_mark_inside_the_view_box(rows, width):
    result = charts.interval_cells(rows, width=width)

    assert len(result.cells) == len(rows)
    for cell in result.cells:
        root = parse(cell.svg)
        assert root.get("aria-label") == cell.summary
        w, _ = view_box(root)
        (zero,) = find(root, "line", "zero")
        assert float(zero.get("x1")) == result.zero_x == w / 2
        for element in root.iter():
            if "bar" in (element.get("class") or "") or element.get("class") == "cap":
                low, high = bar_span(element)
                assert 0 <= low <= high <= w
        for dot in find(root, "circle", "estimate"):
            assert 4 <= float(dot.get("cx")) <= w - 4


# ------------------------------------------------------------------ lift over time


def test_lift_over_time__points__band_line_zero_markers_threshold_and_text():
    points = lift_points(37)
    changes = [(T0, "start 5 %"), (T0 + timedelta(minutes=60), "\u2192 20 %")]

    chart = charts.lift_over_time(
        points, stage_changes=changes, threshold=-0.5, arm="challenger-1", metric="conversion"
    )

    root = parse(chart.svg)
    assert root.get("role") == "img"
    assert root.get("aria-label") == chart.summary
    assert len(find(root, "path", "band")) == 1
    assert len(find(root, "path", "line")) == 1
    assert len(find(root, "line", "zero")) == 1
    assert len(find(root, "g", "stage-change")) == 2
    assert {"start 5 %", "\u2192 20 %"} <= set(texts(root))
    (threshold,) = find(root, "line", "threshold")
    assert threshold.get("stroke-dasharray")
    assert "margin \u22120.5 pp" in texts(root)
    # The band is one area per run of intervals: it starts at the first point and comes back.
    assert chart.summary.startswith(
        "Lift of challenger-1 on conversion over 37 looks from 09:00 to 12:00 UTC: last "
        "\u22122.0 pp (\u22122.2 … \u22121.8)"
    )
    assert len(chart.table) == 37
    assert chart.columns == ("Time (UTC)", "Difference", "Always-valid interval")
    assert chart.table[0] == ("2026-03-05 09:00", "\u22122.0 pp", "\u22128.0 … +4.0")


def test_lift_over_time__band_excludes_zero__summary_says_since_when():
    # Half-widths 6/(i+1): the third look's band ends at zero, the fourth's (10:15) below it.
    chart = charts.lift_over_time(lift_points(6, step_minutes=5, start=T0 + timedelta(hours=1)),
                                  stage_changes=[])  # fmt: skip

    assert "the band has been wholly below zero since 10:15" in chart.summary


def test_lift_over_time__band_includes_zero__summary_says_so():
    points = [(T0 + timedelta(minutes=i), 0.1, -1.0, 1.0) for i in range(3)]

    chart = charts.lift_over_time(points, stage_changes=[])

    assert "the band includes zero" in chart.summary


def test_lift_over_time__time_zone_and_span__times_in_utc_as_clock_or_dates():
    paris = timezone(timedelta(hours=1))
    short = [(datetime(2026, 3, 5, 15, 0, tzinfo=paris) + timedelta(minutes=10 * i), 1, 0, 2)
             for i in range(13)]  # fmt: skip
    long = [(T0 + timedelta(days=i), 1, 0, 2) for i in range(10)]

    short_chart = charts.lift_over_time(short, stage_changes=[])
    long_chart = charts.lift_over_time(long, stage_changes=[])

    assert "14:00" in texts(parse(short_chart.svg))
    assert short_chart.table[0][0] == "2026-03-05 14:00"
    assert "Mar 05, UTC" in texts(parse(short_chart.svg))
    assert {"Mar 06", "Mar 08"} <= set(texts(parse(long_chart.svg)))
    assert "dates in UTC" in texts(parse(long_chart.svg))


def test_lift_over_time__stage_changes_close_together__labels_in_separate_rows():
    points = lift_points(20)
    changes = [(T0 + timedelta(minutes=30 + i), f"\u2192 {20 * (i + 1)} %") for i in range(3)]

    root = parse(charts.lift_over_time(points, stage_changes=changes).svg)

    labels = [g.find(f"{SVG}text") for g in find(root, "g", "stage-change")]
    assert len({label.get("y") for label in labels}) == 3


@pytest.mark.parametrize(
    ("points", "placeholder"),
    [
        ([], "No data yet"),
        ([(T0, -2.0, -3.0, -1.0)], "One look so far"),
        ([(T0, -2.0, -3.0, -1.0), (T0, -2.0, -3.0, -1.0)], "One look so far"),
        ([(T0, None, None, None), (T0 + timedelta(minutes=5), math.nan, None, None)],
         "No data yet"),
        ([("not a time", 1, 0, 2), (T0, math.inf, -math.inf, math.nan)], "No data yet"),
    ],
)  # fmt: skip
def test_lift_over_time__degenerate_points__a_small_placeholder(points, placeholder):
    chart = charts.lift_over_time(points, stage_changes=[(T0, "start 5 %")])

    root = parse(chart.svg)
    assert placeholder in texts(root)
    assert root.get("aria-label") == chart.summary
    assert view_box(root)[1] == 48


def test_lift_over_time__no_interval_anywhere__line_without_band():
    points = [(T0 + timedelta(minutes=i), -1.0 * i, None, None) for i in range(4)]

    chart = charts.lift_over_time(points, stage_changes=[])

    root = parse(chart.svg)
    assert find(root, "path", "band") == []
    assert len(find(root, "path", "line")) == 1
    assert chart.summary.endswith("; no interval yet.")


def test_lift_over_time__all_values_equal__draws_a_flat_line():
    points = [(T0 + timedelta(minutes=i), 0.0, 0.0, 0.0) for i in range(4)]

    root = parse(charts.lift_over_time(points, stage_changes=[]).svg)

    ys = {float(c.split(",")[1]) for c in find(root, "path", "line")[0].get("d")[1:].split(" L")}
    assert len(ys) == 1


def test_lift_over_time__gap_in_the_band__still_one_band_path():
    points = lift_points(6)
    points[2] = (points[2][0], -2.0, None, None)

    root = parse(charts.lift_over_time(points, stage_changes=[]).svg)

    (band,) = find(root, "path", "band")
    assert band.get("d").count("M") == 2


def test_lift_over_time__script_in_names__escaped():
    chart = charts.lift_over_time(
        lift_points(3), stage_changes=[(T0, "<script>x</script>")], arm="<b>", metric="a&b"
    )

    assert "<script" not in chart.svg and "<b>" not in chart.svg
    root = parse(chart.svg)
    assert "<script>x</script>" in texts(root)
    assert root.get("aria-label").startswith("Lift of <b> on a&b")


lift_point_strategy = st.tuples(
    st.one_of(
        st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
        st.none(),
    ),
    finite_or_not,
    finite_or_not,
    finite_or_not,
)


@settings(max_examples=150, deadline=None)
@given(
    points=st.lists(lift_point_strategy, max_size=12),
    threshold=finite_or_not,
    changes=st.lists(
        st.tuples(
            st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
            st.text(max_size=10),
        ),
        max_size=4,
    ),
)
def test_lift_over_time__any_points__never_raises_and_always_labelled(points, threshold, changes):
    chart = charts.lift_over_time(points, stage_changes=changes, threshold=threshold)

    root = parse(chart.svg)
    assert root.get("role") == "img"
    assert root.get("aria-label") == chart.summary
    assert len(find(root, "path", "band")) <= 1
    for row in chart.table:
        assert len(row) == 3


# ------------------------------------------------------------------ exposure over time


def exposure_points(count: int):
    """Baseline, challenger-1 exactly on its 10 % share, challenger-2 short of it."""
    return [
        (
            T0 + timedelta(minutes=5 * i),
            {
                "baseline": 800 * (i + 1),
                "challenger-1": 100 * (i + 1),
                "challenger-2": 60 * (i + 1),
            },
        )
        for i in range(count)
    ]


SHARES = {"baseline": 0.8, "challenger-1": 0.1, "challenger-2": 0.1}


def test_exposure_over_time__points__a_line_per_arm_with_its_own_dashes_and_label():
    chart = charts.exposure_over_time(exposure_points(10), expected_shares=SHARES)

    root = parse(chart.svg)
    assert root.get("aria-label") == chart.summary
    arms = find(root, "path", "arm")
    assert [a.get("data-arm") for a in arms] == ["baseline", "challenger-1", "challenger-2"]
    assert len({a.get("stroke-dasharray") for a in arms}) == 3  # the baseline's is solid
    assert [e.get("data-arm") for e in find(root, "path", "expected")] == [
        "challenger-1",
        "challenger-2",
    ]
    assert {"baseline 8,000", "challenger-1 1,000", "challenger-2 600"} <= set(texts(root))
    assert {"challenger-1 expected 960", "challenger-2 expected 960"} <= set(texts(root))


def test_exposure_over_time__constant_shares__expected_is_the_total_split_at_the_shares():
    chart = charts.exposure_over_time(exposure_points(3), expected_shares=SHARES)

    assert chart.columns == (
        "Time (UTC)", "baseline", "challenger-1", "challenger-2",
        "challenger-1 expected", "challenger-2 expected",
    )  # fmt: skip
    # 960 devices at the first look: 10 % of them is 96.
    assert chart.table[0] == ("2026-03-05 09:00", "800", "100", "60", "96", "96")
    assert chart.summary == (
        "Exposed devices per arm over 3 looks from 09:00 to 09:10 UTC: baseline 2,400, "
        "challenger-1 300 (expected 288 at the set shares), challenger-2 180 (expected 288 at "
        "the set shares)."
    )


def test_exposure_over_time__shares_per_look__new_devices_split_at_the_shares_then():
    points = [
        (T0, {"baseline": 95, "challenger-1": 5}),
        (T0 + timedelta(minutes=5), {"baseline": 175, "challenger-1": 25}),
    ]
    shares = [{"baseline": 95, "challenger-1": 5}, {"baseline": 80, "challenger-1": 20}]

    chart = charts.exposure_over_time(points, expected_shares=shares, looks=37)

    # 5 at the first look, then 20 % of the 100 devices since: 25.
    assert [row[-1] for row in chart.table] == ["5", "25"]
    assert "over 37 looks" in chart.summary


def test_exposure_over_time__without_the_baseline__its_devices_still_make_the_total():
    chart = charts.exposure_over_time(
        exposure_points(4), expected_shares=SHARES, show_baseline=False
    )

    root = parse(chart.svg)
    assert [a.get("data-arm") for a in find(root, "path", "arm")] == ["challenger-1",
                                                                      "challenger-2"]  # fmt: skip
    assert chart.table[-1][-1] == "384"


def test_exposure_over_time__end_labels__never_overlap():
    chart = charts.exposure_over_time(exposure_points(10), expected_shares=SHARES)

    root = parse(chart.svg)
    right = [t for t in root.iter(f"{SVG}text") if t.get("stroke") == "#ffffff"]
    ys = sorted(float(t.get("y")) for t in right)
    assert len(ys) == 5
    assert all(b - a >= charts.FONT_SIZE for a, b in itertools.pairwise(ys))


@pytest.mark.parametrize(
    "points",
    [
        [],
        [(T0, {"baseline": 10, "challenger-1": 1})],
        [(T0, {}), (T0 + timedelta(minutes=5), {})],
        [("never", {"baseline": 1}), (T0, "not a mapping")],
    ],
)
def test_exposure_over_time__degenerate_points__a_small_placeholder(points):
    chart = charts.exposure_over_time(points, expected_shares=SHARES)

    root = parse(chart.svg)
    assert {"No data yet", "One look so far"} & set(texts(root))
    assert root.get("aria-label") == chart.summary


def test_exposure_over_time__all_zero_and_nan__renders_a_flat_chart():
    points = [
        (T0, {"baseline": 0, "challenger-1": math.nan}),
        (T0 + timedelta(minutes=5), {"baseline": 0, "challenger-1": 0}),
    ]

    chart = charts.exposure_over_time(points, expected_shares={"baseline": 1, "challenger-1": 0})

    root = parse(chart.svg)
    assert len(find(root, "path", "arm")) == 2
    assert chart.table[0][2] == "—"


@settings(max_examples=100, deadline=None)
@given(
    points=st.lists(
        st.tuples(
            st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
            st.dictionaries(
                st.sampled_from(["baseline", "challenger-1", "<x>"]), finite_or_not, max_size=3
            ),
        ),
        max_size=8,
    ),
    shares=st.dictionaries(st.sampled_from(["baseline", "challenger-1", "<x>"]), finite_or_not),
)
def test_exposure_over_time__any_points__never_raises_and_always_labelled(points, shares):
    chart = charts.exposure_over_time(points, expected_shares=shares)

    root = parse(chart.svg)
    assert root.get("aria-label") == chart.summary
    assert all(len(row) == len(chart.columns) for row in chart.table)
