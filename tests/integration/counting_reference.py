"""The analysis' per-arm, per-stratum sums computed the slow way, with the pure rule of
`experiments.counting` applied to each exposure: what the selectors' SQL must equal."""

import math

from experiments.analysis import empty_sums
from experiments.counting import device_counts, stratum_of
from experiments.models import DeviceOutcome
from experiments.selectors import VALUE_SUM_CLIP, VALUE_SUM_TINY
from rollout.allocation import ArmAllocation, Segment, arm_for_bucket
from rollout.arms import BASELINE
from rollout.models import Exposure
from rollout.selectors import rollout_phase_starts


def counting_reference(rollout, labels=()) -> dict:
    allocation = [
        ArmAllocation(a.name, Segment(a.segment_start, a.segment_end), a.share)
        for a in rollout.arms.all()
    ]
    phase_starts = rollout_phase_starts(rollout=rollout)
    rows = {row.device_id: row for row in DeviceOutcome.objects.filter(rollout=rollout)}
    reference: dict = {}
    for exposure in Exposure.objects.filter(rollout=rollout):
        arm_now = arm_for_bucket(exposure.bucket, allocation) or BASELINE
        if not device_counts(
            arm=exposure.arm, arm_of_bucket_now=arm_now, comparable=exposure.comparable
        ):
            continue
        stratum = stratum_of(exposure.arm_since, phase_starts)
        sums = reference.setdefault(exposure.arm, {}).setdefault(stratum, empty_sums(labels))
        sums["n"] += 1
        row = rows.get(exposure.device_id)
        if row is None:
            continue
        # Outcome rows follow the ledger: a counted device's row names its arm and placement.
        assert (row.arm, row.arm_since, row.bucket) == (
            exposure.arm,
            exposure.arm_since,
            exposure.bucket,
        ), exposure.device_id
        value = row.value_sum
        if math.isnan(value) or abs(value) < VALUE_SUM_TINY:
            value = 0.0
        value = max(-VALUE_SUM_CLIP, min(VALUE_SUM_CLIP, value))
        sums["reporting"] += 1
        sums["converted"] += row.conversions > 0
        sums["errored"] += row.model_errors > 0
        sums["adopted"] += row.ran_assigned_model
        sums["value_total"] += value
        sums["value_squares"] += value * value
        for label in labels:
            sums["labels"][label] += label in row.outcome_counts
    return reference
