"""
Which devices and which outcomes a rollout's analysis counts, and in which stratum (no Django).

This is the one statement of the rule. The database paths apply it (attribution and counting
on arrival call `event_counts`; `experiments.selectors` writes `device_counts` and `stratum_of`
as SQL, pinned to these functions by a test), and the decision simulator
(`benchmarks/decisions.py`) calls these functions on whole fleets at once: every function
works on scalars (datetimes and timedeltas) and on numpy arrays (seconds) alike, so they use
`&` and `|`, never `and`, `or` or `not`.

Why the rule is what it is (the reasoning and the figures are in docs/experiments.md,
"Equal footing across stages"):

- **A device counts in the arm it got at its first exposure, and only while it has never
  changed arm** (`comparable`). A device moved by a growing share (or a lowered one) has run
  both models; its outcomes mix them, and counting it from its move onward compares devices
  that have had less time to convert with devices that have had more.
- **...and only while its bucket still maps to that arm** (`arm == arm_of_bucket_now`). A
  growing share takes buckets from the baseline; the baseline devices in those buckets that
  have not polled since have not moved yet, and the ones that did poll are excluded above. The
  moved range is excluded whole, whoever polled, so what stays in the baseline is still a
  random, hash-chosen part of it. (Excluding only the devices that moved would leave the less
  active ones of that range in the baseline: a selection on activity.)
- **Devices are compared within the phase of their first exposure** (`stratum_of`). A phase
  starts at every change of shares (start, advance, a share set by hand). Within a phase both
  arms receive new devices at the same moments, in the proportion of the shares, so each
  stratum compares devices of the same age; across phases the arms' mixes of old and young
  devices differ, and pooling them is what made an equal challenger look worse after every
  advance. `experiments.stats.stratified` combines the strata.
- **An event counts for the arm when the rollout covers its time and it happened inside the
  arm's window** (`event_counts`), as before.
"""

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import numpy as np


def event_counts(
    *,
    moment: Any,
    arm_since: Any,
    comparable: Any,
    started_at: Any,
    ended_at: Any,
    window: Any,
    skew: Any,
) -> Any:
    """Whether an outcome at `moment` counts for the arm of a device's exposure.

    The rollout covers the moment (`started_at - skew <= moment`, and `moment <= ended_at +
    skew` once it has ended; `started_at`/`ended_at` may be None), the exposure is comparable,
    and `arm_since - skew <= moment <= arm_since + window`.
    """
    in_window = comparable & (arm_since - skew <= moment) & (moment <= arm_since + window)
    return in_window & rollout_covers(
        moment=moment, started_at=started_at, ended_at=ended_at, skew=skew
    )


def rollout_covers(*, moment: Any, started_at: Any, ended_at: Any, skew: Any) -> Any:
    """Whether the rollout ran at `moment`, give or take the clock skew (None: no bound)."""
    covered = moment == moment  # True, in the shape of `moment` (scalar or array)
    if started_at is not None:
        covered = covered & (moment >= started_at - skew)
    if ended_at is not None:
        covered = covered & (moment <= ended_at + skew)
    return covered


def device_counts(*, arm: Any, arm_of_bucket_now: Any, comparable: Any) -> Any:
    """Whether an exposed device counts in the analysis, in the arm of its exposure.

    `arm_of_bucket_now` is the arm the device's bucket maps to under the current shares
    (`rollout.allocation.arm_for_bucket`, the baseline where no challenger holds it).
    """
    return comparable & (arm == arm_of_bucket_now)


def stratum_of(arm_since: Any, phase_starts: Sequence[Any]) -> Any:
    """The phase (0, 1, ...) in which a device entered its arm, from the sorted phase starts.

    A comparable device never changed arm, so `arm_since` is its first exposure. A moment
    before the first start (clock skew) belongs to phase 0. Arrays in, arrays out.
    """
    if not phase_starts:
        raise ValueError("a started rollout has at least one phase")
    if hasattr(arm_since, "__len__"):
        return np.maximum(np.searchsorted(np.asarray(phase_starts), arm_since, "right") - 1, 0)
    return max(bisect_right(list(phase_starts), arm_since) - 1, 0)
