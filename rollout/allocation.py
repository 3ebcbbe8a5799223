"""Allocation: give each challenger a fixed segment of the bucket space and map a bucket to an arm.

Contract (stdlib only, no Django):

- Shares are whole basis points of the `BUCKETS` = 10 000 buckets (1 bp = 0.01 % of devices);
  stage plans are written in percent and converted by `validate_stages`.
- `plan_segments` lays the challengers out one after another from bucket 0, each segment as
  long as that challenger's maximum share (the last stage of its plan). Segments never overlap.
- A challenger at share `s` holds buckets `[segment.start, segment.start + s)`. Raising `s` only
  adds buckets, so a device that had the challenger keeps it; an unchanged allocation gives
  every device the same answer on every poll; pausing (keeping `s`) freezes who has what.
- A bucket held by no challenger belongs to the baseline (`arm_for_bucket` returns None).
- Bad input raises `AllocationError` (a ValueError) with a sentence an operator can act on.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate, pairwise

from . import hashing
from .arms import BASELINE
from .hashing import BUCKETS
from .shares import ALL_DEVICES, basis_points_from_percent, fraction

DEFAULT_STAGES = (1, 5, 20, 50, 100)


class AllocationError(ValueError):
    pass


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True as "1 basis point" is always a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Segment:
    """Half-open range of buckets `[start, end)` reserved for one challenger."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not (
            _is_int(self.start) and _is_int(self.end) and 0 <= self.start < self.end <= BUCKETS
        ):
            raise AllocationError(
                f"A segment must be whole buckets with 0 <= start < end <= {BUCKETS}; "
                f"got [{self.start!r}, {self.end!r})."
            )

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ArmAllocation:
    """A challenger arm: its segment and its current share (basis points) inside it."""

    name: str
    segment: Segment
    share: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise AllocationError(f"An arm needs a non-empty name; got {self.name!r}.")
        if self.name == BASELINE:
            raise AllocationError(
                f"'{BASELINE}' names the devices outside every challenger; "
                "give the challenger arm another name."
            )
        if not (_is_int(self.share) and 0 <= self.share <= self.segment.length):
            raise AllocationError(
                f"Arm '{self.name}' has a share of {self.share!r} basis points; it must be a "
                f"whole number from 0 to its segment's length, {self.segment.length}."
            )


def plan_segments(max_shares: Sequence[int]) -> tuple[Segment, ...]:
    """Lay out one segment per challenger, in the given order, from bucket 0."""
    max_shares = tuple(max_shares)
    for position, share in enumerate(max_shares, start=1):
        if not _is_int(share):
            raise AllocationError(
                f"Challenger {position}'s maximum share ({share!r}) must be a whole number "
                "of basis points."
            )
        if not 0 < share <= ALL_DEVICES:
            raise AllocationError(
                f"Challenger {position}'s maximum share ({share} basis points) must be "
                f"between 1 and {ALL_DEVICES} basis points (0.01 % to 100 %)."
            )
    total = sum(max_shares)
    if total > ALL_DEVICES:
        raise AllocationError(
            f"The challengers' maximum shares add up to {total} basis points, more than "
            f"the {ALL_DEVICES} there are; lower their final stages."
        )
    ends = list(accumulate(max_shares))
    return tuple(Segment(end - share, end) for share, end in zip(max_shares, ends, strict=True))


def _show(number: Decimal) -> str:
    # Echo "20" for 20.0 and "0.5" for 0.50, as the operator would have written it.
    return format(number.normalize(), "f")


def _stage_percent(position: int, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise AllocationError(
            f"Stage {position} ({value!r}) must be a number of percent, such as 5 or 0.5."
        )
    # str() of a float is its shortest round-trip spelling, so 0.07 stays 0.07 (not 0.0700…01).
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise AllocationError(f"Stage {position} ({value!r}) must be a finite number of percent.")
    return number


def validate_stages(stages: Sequence[float]) -> tuple[int, ...]:
    """Check a stage plan given in percent and return it in basis points."""
    if isinstance(stages, str | bytes):
        raise AllocationError(
            "A stage plan is a list of percentages, such as [1, 5, 20, 50, 100], not text."
        )
    if not stages:
        raise AllocationError("A stage plan needs at least one stage, such as [1, 5, 20, 50, 100].")
    basis_points: list[int] = []
    previous: Decimal | None = None
    for position, value in enumerate(stages, start=1):
        percent = _stage_percent(position, value)
        if not 0 < percent <= 100:
            raise AllocationError(
                f"Stage {position} ({_show(percent)}) must be more than 0 and at most 100 percent."
            )
        points = basis_points_from_percent(percent)
        if points != points.to_integral_value():
            raise AllocationError(
                f"Stage {position} ({_show(percent)}) has more than 2 decimal places; stages are "
                "whole basis points (steps of 0.01 percent)."
            )
        if previous is not None and percent <= previous:
            raise AllocationError(
                f"Stage {position} ({_show(percent)}) must be larger than stage {position - 1} "
                f"({_show(previous)})."
            )
        basis_points.append(int(points))
        previous = percent
    return tuple(basis_points)


def validate_arms(arms: Sequence[ArmAllocation]) -> None:
    """Raise AllocationError unless the arms have distinct names and disjoint segments."""
    duplicates = sorted(
        name for name, count in Counter(arm.name for arm in arms).items() if count > 1
    )
    if duplicates:
        raise AllocationError(f"Arm names must be distinct; repeated: {', '.join(duplicates)}.")
    ordered = sorted(arms, key=lambda arm: arm.segment.start)
    for before, after in pairwise(ordered):
        if after.segment.start < before.segment.end:
            raise AllocationError(
                f"Arms '{before.name}' [{before.segment.start}, {before.segment.end}) and "
                f"'{after.name}' [{after.segment.start}, {after.segment.end}) overlap; "
                "each challenger needs its own segment."
            )


def arm_for_bucket(bucket: int, arms: Sequence[ArmAllocation]) -> str | None:
    """Return the name of the challenger holding this bucket, or None for the baseline.

    The arms must pass `validate_arms`; that check belongs where the allocation is built,
    not on every device's poll.
    """
    if not 0 <= bucket < BUCKETS:
        raise ValueError(f"A bucket is in [0, {BUCKETS}); got {bucket!r}.")
    for arm in arms:
        if arm.segment.start <= bucket < arm.segment.start + arm.share:
            return arm.name
    return None


def arm_for_device(salt: str, device_id: str, arms: Sequence[ArmAllocation]) -> str | None:
    """Return the challenger arm this device gets under the rollout's salt, or None."""
    return arm_for_bucket(hashing.bucket(salt, device_id), arms)


def expected_shares(arms: Sequence[ArmAllocation]) -> dict[str, float]:
    """Return the fraction of devices each arm should get, the rest under `BASELINE`."""
    validate_arms(arms)
    shares = {arm.name: fraction(arm.share) for arm in arms}
    shares[BASELINE] = fraction(ALL_DEVICES - sum(arm.share for arm in arms))
    return shares
