"""Which model a device runs, decided from a snapshot: eligibility, arms, fallbacks."""

from rollout.allocation import ArmAllocation, Segment
from rollout.assignment import (
    ArmDoc,
    FlowDoc,
    ModelEntry,
    RolloutDoc,
    assign,
    baseline_for,
)
from rollout.hashing import bucket


def entry(model_id: str, min_sdk=(1, 0, 0), max_sdk=None) -> ModelEntry:
    return ModelEntry(
        model_id=model_id,
        storage_key=f"models/{'0' * 64}/{model_id}.mlmodel",
        sha256="0" * 64,
        size=10,
        format="mlmodel",
        min_sdk=min_sdk,
        max_sdk=max_sdk,
    )


BASE = entry("base", min_sdk=(1, 2, 0))
OLD = entry("old", min_sdk=(1, 0, 0))
CHALLENGER = entry("challenger", min_sdk=(1, 4, 0))


def flow_with(share: int, challenger=CHALLENGER, baseline=BASE) -> FlowDoc:
    rollout = RolloutDoc(
        id="r1",
        state="running",
        salt="salt",
        baseline=baseline,
        arms=(ArmDoc(ArmAllocation("challenger-1", Segment(0, 10_000), share), challenger),),
    )
    return FlowDoc("upsell", 8362, baseline, fallbacks=(OLD,), rollout=rollout)


def test_assign__no_rollout__baseline_without_rollout():
    flow = FlowDoc("upsell", 8362, BASE, fallbacks=(OLD,))

    result = assign(flow, "device-1", (1, 5, 0))

    assert result.model == BASE
    assert result.rollout_id is None
    assert result.arm is None


def test_assign__device_in_challenger_segment__gets_challenger():
    device = next(d for d in (f"d{i}" for i in range(1000)) if bucket("salt", d) < 500)

    result = assign(flow_with(500), device, (1, 5, 0))

    assert result.model == CHALLENGER
    assert (result.rollout_id, result.arm) == ("r1", "challenger-1")
    assert result.bucket == bucket("salt", device)


def test_assign__device_outside_share__gets_rollout_baseline_arm():
    device = next(d for d in (f"d{i}" for i in range(1000)) if bucket("salt", d) >= 500)

    result = assign(flow_with(500), device, (1, 5, 0))

    assert result.model == BASE
    assert (result.rollout_id, result.arm) == ("r1", "baseline")


def test_assign__sdk_too_old_for_challenger__not_in_experiment_gets_baseline():
    result = assign(flow_with(10_000), "device-1", (1, 3, 9))

    assert result.model == BASE
    assert result.rollout_id is None


def test_assign__sdk_too_old_for_baseline__falls_back_to_older_baseline():
    result = assign(flow_with(10_000), "device-1", (1, 1, 0))

    assert result.model == OLD
    assert result.rollout_id is None


def test_assign__sdk_too_old_for_every_model__bundled_model():
    result = assign(flow_with(10_000), "device-1", (0, 9, 0))

    assert result.model is None
    assert result.rollout_id is None


def test_assign__sdk_above_max__not_eligible():
    capped = entry("capped", min_sdk=(1, 0, 0), max_sdk=(1, 9, 9))

    result = assign(flow_with(10_000, challenger=capped), "device-1", (2, 0, 0))

    assert result.model == BASE
    assert result.rollout_id is None


def test_assign__rollout_on_bundled_baseline__baseline_arm_runs_bundled_model():
    device = next(d for d in (f"d{i}" for i in range(1000)) if bucket("salt", d) >= 500)
    flow = flow_with(500, baseline=None)

    result = assign(flow, device, (1, 5, 0))

    assert result.model is None
    assert result.arm == "baseline"


def test_baseline_for__newest_fitting_first():
    flow = FlowDoc("upsell", 1, BASE, fallbacks=(entry("mid", min_sdk=(1, 1, 0)), OLD))

    assert baseline_for(flow, (1, 2, 0)) == BASE
    assert baseline_for(flow, (1, 1, 5)).model_id == "mid"
    assert baseline_for(flow, (1, 0, 0)) == OLD


def test_assign__same_device_twice__same_answer():
    flow = flow_with(2_000)

    answers = {assign(flow, "device-7", (1, 5, 0)).model.model_id for _ in range(5)}

    assert len(answers) == 1
