"""Allocation: segments, stage plans, bucket-to-arm mapping and staged-rollout simulations."""

import math
import random
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.allocation import (
    BASELINE,
    DEFAULT_STAGES,
    AllocationError,
    ArmAllocation,
    Segment,
    arm_for_bucket,
    arm_for_device,
    expected_shares,
    plan_segments,
    validate_arms,
    validate_stages,
)
from rollout.hashing import BUCKETS, bucket

REPO_ROOT = Path(__file__).resolve().parents[3]
SIMULATED_DEVICES = 50_000
SEED = 20_260_802

# The .hypothesis example database is not wanted for pure, fast properties.
PROPERTY = settings(database=None, max_examples=200)

buckets = st.integers(min_value=0, max_value=BUCKETS - 1)


@st.composite
def valid_max_shares(draw) -> list[int]:
    """Challengers' maximum shares that fit together: gaps between sorted cut points."""
    cuts = sorted(draw(st.lists(st.integers(1, BUCKETS), min_size=1, max_size=10, unique=True)))
    return [end - start for start, end in pairwise([0, *cuts])]


@st.composite
def planned_arms(draw) -> list[ArmAllocation]:
    """Arms laid out by plan_segments, each at a random current share inside its segment."""
    segments = plan_segments(draw(valid_max_shares()))
    return [
        ArmAllocation(f"challenger-{index}", segment, draw(st.integers(0, segment.length)))
        for index, segment in enumerate(segments)
    ]


@st.composite
def segments(draw) -> Segment:
    start = draw(st.integers(0, BUCKETS - 1))
    return Segment(start, draw(st.integers(start + 1, BUCKETS)))


def simulated_device_ids(count: int, seed: int) -> list[str]:
    hexes = random.Random(seed).randbytes(16 * count).hex().upper()
    return [
        f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
        for h in (hexes[i : i + 32] for i in range(0, 32 * count, 32))
    ]


def within_three_standard_errors(observed: int, total: int, target: float) -> bool:
    standard_error = math.sqrt(target * (1 - target) / total)
    return abs(observed / total - target) <= 3 * standard_error


# plan_segments


def test_plan_segments__two_challengers__lays_them_out_back_to_back_from_zero():
    assert plan_segments([500, 2000]) == (Segment(0, 500), Segment(500, 2500))


def test_plan_segments__one_challenger_up_to_everyone__owns_the_whole_space():
    assert plan_segments([BUCKETS]) == (Segment(0, BUCKETS),)


def test_plan_segments__shares_summing_to_exactly_all_buckets__are_accepted():
    assert plan_segments([2500, 2500, 5000]) == (
        Segment(0, 2500),
        Segment(2500, 5000),
        Segment(5000, 10_000),
    )


def test_plan_segments__no_challengers__returns_no_segments():
    assert plan_segments([]) == ()


def test_plan_segments__a_generator__is_read_once_and_laid_out():
    assert plan_segments(share for share in (100, 200)) == (Segment(0, 100), Segment(100, 300))


@pytest.mark.parametrize(
    ("max_shares", "message"),
    [
        (
            [0],
            "Challenger 1's maximum share (0 basis points) must be between 1 and 10000 "
            "basis points (0.01 % to 100 %).",
        ),
        (
            [500, -5],
            "Challenger 2's maximum share (-5 basis points) must be between 1 and 10000 "
            "basis points (0.01 % to 100 %).",
        ),
        (
            [10_001],
            "Challenger 1's maximum share (10001 basis points) must be between 1 and 10000 "
            "basis points (0.01 % to 100 %).",
        ),
        (
            [5000, 5001],
            "The challengers' maximum shares add up to 10001 basis points, more than the "
            "10000 there are; lower their final stages.",
        ),
        ([2.5], "Challenger 1's maximum share (2.5) must be a whole number of basis points."),
        ([True], "Challenger 1's maximum share (True) must be a whole number of basis points."),
        (
            [5000, 6000, "x"],
            "Challenger 3's maximum share ('x') must be a whole number of basis points.",
        ),
    ],
)
def test_plan_segments__invalid_shares__raise_allocation_error_with_a_sentence(max_shares, message):
    with pytest.raises(AllocationError) as excinfo:
        plan_segments(max_shares)

    assert str(excinfo.value) == message
    assert isinstance(excinfo.value, ValueError)


@PROPERTY
@given(max_shares=valid_max_shares())
def test_plan_segments__any_valid_shares__cover_disjoint_ranges_inside_the_bucket_space(max_shares):
    planned = plan_segments(max_shares)

    assert [segment.length for segment in planned] == max_shares
    assert planned[0].start == 0
    assert all(0 <= segment.start < segment.end <= BUCKETS for segment in planned)
    assert all(before.end == after.start for before, after in pairwise(planned))
    covered = [b for segment in planned for b in range(segment.start, segment.end)]
    assert len(covered) == len(set(covered)) == sum(max_shares)


@PROPERTY
@given(
    max_shares=st.lists(st.integers(-BUCKETS, 2 * BUCKETS), min_size=1, max_size=6),
)
def test_plan_segments__any_int_shares__raise_exactly_when_invalid(max_shares):
    valid = all(0 < share <= BUCKETS for share in max_shares) and sum(max_shares) <= BUCKETS

    if valid:
        assert [segment.length for segment in plan_segments(max_shares)] == max_shares
    else:
        with pytest.raises(AllocationError):
            plan_segments(max_shares)


# validate_stages


def test_validate_stages__default_plan__returns_basis_points():
    assert DEFAULT_STAGES == (1, 5, 20, 50, 100)
    assert validate_stages(DEFAULT_STAGES) == (100, 500, 2000, 5000, 10_000)


def test_validate_stages__decimals_up_to_two_places__return_whole_basis_points():
    assert validate_stages([0.01, 0.07, 0.5, 1.25, 99.99, 100]) == (1, 7, 50, 125, 9999, 10_000)


def test_validate_stages__decimal_and_float_spellings__are_accepted():
    assert validate_stages([Decimal("0.10"), 2.0, Decimal("50")]) == (10, 200, 5000)


def test_validate_stages__plan_stopping_below_everyone__is_accepted():
    assert validate_stages([1, 10]) == (100, 1000)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([1, 20, 20], "Stage 3 (20) must be larger than stage 2 (20)."),
        ([1, 20.0, 20], "Stage 3 (20) must be larger than stage 2 (20)."),
        ([5, 1], "Stage 2 (1) must be larger than stage 1 (5)."),
        ([0, 5], "Stage 1 (0) must be more than 0 and at most 100 percent."),
        ([-1], "Stage 1 (-1) must be more than 0 and at most 100 percent."),
        ([50, 100.01], "Stage 2 (100.01) must be more than 0 and at most 100 percent."),
        (
            [0.005],
            "Stage 1 (0.005) has more than 2 decimal places; stages are whole basis points "
            "(steps of 0.01 percent).",
        ),
        (
            [1, 2.125],
            "Stage 2 (2.125) has more than 2 decimal places; stages are whole basis points "
            "(steps of 0.01 percent).",
        ),
        ([], "A stage plan needs at least one stage, such as [1, 5, 20, 50, 100]."),
        (
            "1,5,20",
            "A stage plan is a list of percentages, such as [1, 5, 20, 50, 100], not text.",
        ),
        ([float("nan")], "Stage 1 (nan) must be a finite number of percent."),
        ([1, float("inf")], "Stage 2 (inf) must be a finite number of percent."),
        ([True], "Stage 1 (True) must be a number of percent, such as 5 or 0.5."),
        ([1, "5"], "Stage 2 ('5') must be a number of percent, such as 5 or 0.5."),
        ([None], "Stage 1 (None) must be a number of percent, such as 5 or 0.5."),
    ],
)
def test_validate_stages__invalid_plan__raises_allocation_error_with_a_sentence(stages, message):
    with pytest.raises(AllocationError) as excinfo:
        validate_stages(stages)

    assert str(excinfo.value) == message


@PROPERTY
@given(
    basis_points=st.lists(st.integers(1, BUCKETS), min_size=1, max_size=8, unique=True).map(sorted),
    spelling=st.sampled_from(["float", "decimal", "int_when_whole"]),
)
def test_validate_stages__any_increasing_plan_in_range__returns_its_basis_points(
    basis_points, spelling
):
    # Given a valid plan in basis points, written in percent the way a client might send it
    def percent(points: int) -> float | Decimal | int:
        if spelling == "float":
            return points / 100
        if spelling == "decimal":
            return Decimal(points) / 100
        return points // 100 if points % 100 == 0 else points / 100

    # When it is validated
    result = validate_stages([percent(points) for points in basis_points])

    # Then the basis points come back unchanged
    assert result == tuple(basis_points)


@PROPERTY
@given(
    thousandths=st.lists(st.integers(-2_000, 102_000), min_size=1, max_size=6),
    as_float=st.booleans(),
)
def test_validate_stages__any_plan_in_thousandths_of_a_percent__raises_exactly_when_invalid(
    thousandths, as_float
):
    # Given a plan with up to 3 decimal places, so that some stages are not whole basis points
    stages = [(k / 1000 if as_float else Decimal(k) / 1000) for k in thousandths]
    in_whole_basis_points = all(0 < k <= 100_000 and k % 10 == 0 for k in thousandths)
    increasing = all(before < after for before, after in pairwise(thousandths))
    valid = in_whole_basis_points and increasing

    # When it is validated, then it is accepted exactly when valid
    if valid:
        assert validate_stages(stages) == tuple(k // 10 for k in thousandths)
    else:
        with pytest.raises(AllocationError):
            validate_stages(stages)


# Segment and ArmAllocation


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, 0), (5, 4), (-1, 10), (0, BUCKETS + 1), (0.0, 10), (0, True)],
)
def test_segment__outside_the_bucket_space_or_empty__raises_allocation_error(start, end):
    with pytest.raises(AllocationError) as excinfo:
        Segment(start, end)

    assert str(excinfo.value) == (
        f"A segment must be whole buckets with 0 <= start < end <= 10000; got [{start!r}, {end!r})."
    )


def test_segment__length__is_end_minus_start():
    assert Segment(500, 2500).length == 2000


@pytest.mark.parametrize("share", [-1, 2001, True, 1.5])
def test_arm_allocation__share_outside_its_segment__raises_allocation_error(share):
    with pytest.raises(AllocationError) as excinfo:
        ArmAllocation("challenger", Segment(500, 2500), share)

    assert str(excinfo.value) == (
        f"Arm 'challenger' has a share of {share!r} basis points; it must be a whole number "
        "from 0 to its segment's length, 2000."
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "baseline",
            "'baseline' names the devices outside every challenger; "
            "give the challenger arm another name.",
        ),
        ("", "An arm needs a non-empty name; got ''."),
        (None, "An arm needs a non-empty name; got None."),
    ],
)
def test_arm_allocation__reserved_or_empty_name__raises_allocation_error(name, message):
    with pytest.raises(AllocationError) as excinfo:
        ArmAllocation(name, Segment(0, 100), 10)

    assert str(excinfo.value) == message


def test_arm_allocation__share_zero_and_full_segment__are_accepted():
    assert ArmAllocation("a", Segment(0, 100), 0).share == 0
    assert ArmAllocation("a", Segment(0, 100), 100).share == 100


# validate_arms


def test_validate_arms__overlapping_segments__raises_allocation_error():
    arms = [ArmAllocation("b", Segment(400, 600), 10), ArmAllocation("a", Segment(0, 500), 10)]

    with pytest.raises(AllocationError) as excinfo:
        validate_arms(arms)

    assert str(excinfo.value) == (
        "Arms 'a' [0, 500) and 'b' [400, 600) overlap; each challenger needs its own segment."
    )


def test_validate_arms__repeated_names__raises_allocation_error():
    arms = [ArmAllocation("a", Segment(0, 100), 10), ArmAllocation("a", Segment(100, 200), 10)]

    with pytest.raises(AllocationError) as excinfo:
        validate_arms(arms)

    assert str(excinfo.value) == "Arm names must be distinct; repeated: a."


@PROPERTY
@given(arms=planned_arms())
def test_validate_arms__arms_from_plan_segments__pass(arms):
    assert validate_arms(arms) is None


# arm_for_bucket


def test_arm_for_bucket__edges_of_active_ranges__map_to_the_right_arm():
    # Given A owning [0, 500) at 1 % and B owning [500, 2500) at 10 %
    arms = [
        ArmAllocation("a", Segment(0, 500), 100),
        ArmAllocation("b", Segment(500, 2500), 1000),
    ]

    # Then each arm holds the start of its segment up to its share, and the rest is baseline
    assert {b: arm_for_bucket(b, arms) for b in (0, 99, 100, 499, 500, 1499, 1500, 9999)} == {
        0: "a",
        99: "a",
        100: None,
        499: None,
        500: "b",
        1499: "b",
        1500: None,
        9999: None,
    }


def test_arm_for_bucket__no_arms__returns_baseline():
    assert arm_for_bucket(1234, []) is None


@pytest.mark.parametrize("outside", [-1, BUCKETS, 2**64])
def test_arm_for_bucket__bucket_outside_the_space__raises_value_error(outside):
    with pytest.raises(ValueError) as excinfo:
        arm_for_bucket(outside, [])

    assert str(excinfo.value) == f"A bucket is in [0, 10000); got {outside!r}."


@PROPERTY
@given(segment=segments(), data=st.data(), b=buckets)
def test_arm_for_bucket__share_grows__only_adds_buckets(segment, data, b):
    # Given any two shares s1 <= s2 of the same segment
    smaller = data.draw(st.integers(0, segment.length), label="smaller")
    larger = data.draw(st.integers(smaller, segment.length), label="larger")
    before = arm_for_bucket(b, [ArmAllocation("c", segment, smaller)])
    after = arm_for_bucket(b, [ArmAllocation("c", segment, larger)])

    # Then a bucket on the challenger at s1 is still on it at s2
    if before == "c":
        assert after == "c"
    # and it is on the challenger exactly when it lies in [start, start + share)
    assert (after == "c") == (segment.start <= b < segment.start + larger)


@settings(database=None, max_examples=40)
@given(segment=segments(), data=st.data())
def test_arm_for_bucket__every_bucket_at_two_shares__held_set_grows_by_exactly_the_difference(
    segment, data
):
    smaller = data.draw(st.integers(0, segment.length), label="smaller")
    larger = data.draw(st.integers(smaller, segment.length), label="larger")

    def held(share: int) -> set[int]:
        arms = [ArmAllocation("c", segment, share)]
        return {b for b in range(BUCKETS) if arm_for_bucket(b, arms) == "c"}

    held_before, held_after = held(smaller), held(larger)

    assert held_before <= held_after
    assert len(held_before) == smaller
    assert len(held_after) == larger
    assert held_after == set(range(segment.start, segment.start + larger))


@PROPERTY
@given(arms=planned_arms(), b=buckets)
def test_arm_for_bucket__planned_arms__never_assign_outside_the_arms_own_active_range(arms, b):
    # Given several challengers laid out by plan_segments at random current shares
    name = arm_for_bucket(b, arms)
    holders = [arm for arm in arms if arm.segment.start <= b < arm.segment.start + arm.share]

    # Then at most one arm's active range holds the bucket, and that arm is the answer
    assert len(holders) <= 1
    if name is None:
        assert holders == []
    else:
        (arm,) = holders
        assert arm.name == name
        assert arm.segment.start <= b < arm.segment.end


@settings(database=None, max_examples=25)
@given(arms=planned_arms())
def test_expected_shares__planned_arms__equal_the_share_of_buckets_each_arm_holds(arms):
    # Given every bucket mapped once
    counts: dict[str, int] = {}
    for b in range(BUCKETS):
        name = arm_for_bucket(b, arms) or BASELINE
        counts[name] = counts.get(name, 0) + 1

    # Then the expected fractions are exactly the counted ones
    expected = expected_shares(arms)
    assert {name: round(share * BUCKETS) for name, share in expected.items() if share} == counts
    assert sum(expected.values()) == pytest.approx(1.0)


# expected_shares and arm_for_device


def test_expected_shares__two_challengers__fill_the_rest_with_baseline():
    arms = [
        ArmAllocation("a", Segment(0, 500), 100),
        ArmAllocation("b", Segment(500, 2500), 1000),
    ]

    assert expected_shares(arms) == {"a": 0.01, "b": 0.1, BASELINE: 0.89}


def test_expected_shares__no_challengers__is_all_baseline():
    assert expected_shares([]) == {BASELINE: 1.0}


def test_expected_shares__overlapping_arms__raise_allocation_error():
    arms = [ArmAllocation("a", Segment(0, 500), 10), ArmAllocation("b", Segment(499, 600), 10)]

    with pytest.raises(AllocationError):
        expected_shares(arms)


def test_arm_for_device__ids_under_a_salt__use_the_device_bucket():
    arms = [ArmAllocation("c", Segment(0, 5000), 5000)]
    ids = [f"device-{n}" for n in range(200)]

    results = [arm_for_device("salt", device_id, arms) for device_id in ids]

    assert results == [("c" if bucket("salt", d) < 5000 else None) for d in ids]
    assert {"c", None} == set(results)


# Simulations of a staged rollout


def test_staged_rollout__one_challenger_through_default_stages__hits_targets_and_keeps_devices():
    # Given 50 000 devices and one challenger owning everything, raised 1 → 5 → 20 → 50 → 100 %
    devices = simulated_device_ids(SIMULATED_DEVICES, SEED)
    (segment,) = plan_segments([validate_stages(DEFAULT_STAGES)[-1]])
    salt = "simulated-rollout"
    previous: set[str] = set()

    for share in validate_stages(DEFAULT_STAGES):
        arms = [ArmAllocation("challenger", segment, share)]

        # When every device polls (twice: nothing changed in between)
        on_challenger = {d for d in devices if arm_for_device(salt, d, arms) == "challenger"}
        repoll = {d for d in devices if arm_for_device(salt, d, arms) == "challenger"}

        # Then the challenger's share is within 3 standard errors of the stage's target
        assert within_three_standard_errors(len(on_challenger), len(devices), share / BUCKETS), (
            share,
            len(on_challenger),
        )
        # and every device that had the challenger at an earlier stage still has it
        assert previous <= on_challenger
        # and a device's answer does not flip between polls
        assert repoll == on_challenger
        previous = on_challenger

    assert previous == set(devices)


def test_staged_rollout__two_challengers_to_half_each__stay_disjoint_and_keep_devices():
    # Given two challengers, each with stages 1 → 5 → 20 → 50 %, sharing one salt
    devices = simulated_device_ids(SIMULATED_DEVICES, SEED + 1)
    stages = validate_stages([1, 5, 20, 50])
    segment_a, segment_b = plan_segments([stages[-1], stages[-1]])
    device_buckets = {d: bucket("two-challengers", d) for d in devices}
    previous: dict[str, set[str]] = {"a": set(), "b": set()}

    for share in stages:
        arms = [ArmAllocation("a", segment_a, share), ArmAllocation("b", segment_b, share)]

        # When every device is assigned
        assigned: dict[str | None, set[str]] = {"a": set(), "b": set(), None: set()}
        for device, device_bucket in device_buckets.items():
            assigned[arm_for_bucket(device_bucket, arms)].add(device)

        # Then each arm and the baseline are within 3 standard errors of their targets
        targets = expected_shares(arms)
        for name, key in (("a", "a"), ("b", "b"), (BASELINE, None)):
            assert within_three_standard_errors(len(assigned[key]), len(devices), targets[name]), (
                share,
                name,
                len(assigned[key]),
            )
        # and no device is on both challengers; each challenger only gains devices
        assert assigned["a"].isdisjoint(assigned["b"])
        assert previous["a"] <= assigned["a"]
        assert previous["b"] <= assigned["b"]
        previous = {"a": assigned["a"], "b": assigned["b"]}

    assert targets == {"a": 0.5, "b": 0.5, BASELINE: 0.0}
    assert assigned[None] == set()
