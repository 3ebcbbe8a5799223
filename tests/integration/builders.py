"""Builders of ledger rows for integration tests that need many devices quickly."""

from datetime import timedelta

from experiments.models import DeviceOutcome
from rollout import services
from rollout.arms import BASELINE
from rollout.models import Exposure


def bucket_in(rollout, arm: str) -> int:
    """A bucket that maps to `arm` under the rollout's current shares."""
    arms = list(rollout.arms.all())
    if arm != BASELINE:
        target = next(a for a in arms if a.name == arm)
        return target.segment_start
    held = {b for a in arms for b in range(a.segment_start, a.segment_start + a.share)}
    return next(b for b in range(10_000 - 1, -1, -1) if b not in held)


def populate(rollout, arm: str, devices: int, converted: int, errors: int = 0, start: int = 0):
    """Exposed devices of one arm, the first `converted` of which purchased."""
    now = rollout.stage_started_at + timedelta(seconds=1)
    bucket = bucket_in(rollout, arm)
    Exposure.objects.bulk_create(
        Exposure(
            rollout=rollout, device_id=f"{arm}-{i}", arm=arm, bucket=bucket, sdk_version="1.5.0",
            first_exposed_at=now, arm_since=now,
        )
        for i in range(start, start + devices)
    )  # fmt: skip
    DeviceOutcome.objects.bulk_create(
        DeviceOutcome(
            rollout=rollout,
            device_id=f"{arm}-{i}",
            arm=arm,
            arm_since=now,
            bucket=bucket,
            events=1,
            conversions=1 if i - start < converted else 0,
            model_errors=1 if i - start < errors else 0,
            outcome_counts={"Purchased": 1} if i - start < converted else {"Dismissed": 1},
        )
        for i in range(start, start + devices)
    )


def started_rollout(setup, stages, **options):
    """A running rollout of the setup's challenger with this stage plan (percent)."""
    rollout = services.rollout_create(
        flow=setup["flow"],
        challengers=[{"model_id": str(setup["challenger"].pk), "stages": list(stages)}],
        actor="test",
        **options,
    )
    return services.rollout_start(rollout=rollout, actor="test")


def flow_with_models(
    trained_models,
    *,
    app=None,
    name: str = "onboarding_upsell",
    number: int = 8362,
    baseline_notes: str = "",
    challenger_notes: str = "",
    challenger_metrics: dict | None = None,
) -> dict:
    """A flow (of the Demo Shop, unless `app` is given) with a baseline, set, and a challenger
    uploaded: real trained Core ML files, through the services."""
    from registry import services

    app = app or services.app_create(name="Demo Shop")
    flow = services.flow_create(app=app, name=name, flow_id=number, positive_label="Purchased")
    baseline, _ = services.model_version_upload(
        flow=flow,
        file=trained_models["baseline"].open("rb"),
        filename="b.mlmodel",
        notes=baseline_notes,
    )
    challenger, _ = services.model_version_upload(
        flow=flow,
        file=trained_models["challenger"].open("rb"),
        filename="c.mlmodel",
        notes=challenger_notes,
        metrics=challenger_metrics,
    )
    services.flow_baseline_set(flow=flow, model_version=baseline, actor="test")
    return {"app": app, "flow": flow, "baseline": baseline, "challenger": challenger}
