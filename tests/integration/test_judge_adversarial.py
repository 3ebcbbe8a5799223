"""The judge on stored values no event could bring today (they may predate the ±1e9 bound):
float8 extremes, denormals, NaN and infinities in `DeviceOutcome.value_sum`, on PostgreSQL."""

import json
import math

import pytest
from django.db import connection

from experiments import judge
from experiments.judge import rollout_analyze
from experiments.models import Alert, AlertChannel, AlertDelivery, Analysis, DeviceOutcome
from experiments.selectors import (
    VALUE_SUM_CLIP,
    arm_sufficient_statistics,
    exposure_counts,
)
from rollout import services
from rollout.arms import BASELINE
from rollout.models import RolloutState

from .builders import populate
from .counting_reference import counting_reference

pytestmark = pytest.mark.django_db

CHALLENGER = "challenger-1"
MANY_DECIMALS = 0.1234567890123456789
# Per device: what is stored, and what the aggregates must count (clipped to ±1e12; NaN and
# magnitudes whose square underflows count as 0).
EXTREMES = [
    (1e308, VALUE_SUM_CLIP),
    (-1e308, -VALUE_SUM_CLIP),
    (1.7976931348623157e308, VALUE_SUM_CLIP),
    (5e-324, 0.0),
    (-1e-200, 0.0),
    (math.nan, 0.0),
    (math.inf, VALUE_SUM_CLIP),
    (-math.inf, -VALUE_SUM_CLIP),
    (0.1 + 0.2, 0.1 + 0.2),
    (MANY_DECIMALS, MANY_DECIMALS),
    (-MANY_DECIMALS * 1e6, -MANY_DECIMALS * 1e6),
]


@pytest.fixture
def value_guarded(sdk_setup):
    rollout = services.rollout_create(
        flow=sdk_setup["flow"],
        challengers=[{"model_id": str(sdk_setup["challenger"].pk), "stages": [50]}],
        actor="test",
        planned_sample=4000,
        guardrails=["value"],
    )
    return services.rollout_start(rollout=rollout, actor="test")


def store_extremes(rollout, arm: str) -> None:
    """The EXTREMES in the arm's first devices: finite ones through the ORM, the non-finite
    ones as SQL literals (as a restore or an old writer could have left them)."""
    table = DeviceOutcome._meta.db_table
    for i, (stored, _) in enumerate(EXTREMES):
        rows = DeviceOutcome.objects.filter(rollout=rollout, device_id=f"{arm}-{i}")
        if math.isfinite(stored):
            assert rows.update(value_sum=stored) == 1
            continue
        literal = "NaN" if math.isnan(stored) else ("Infinity" if stored > 0 else "-Infinity")
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET value_sum = %s::float8 WHERE rollout_id = %s AND device_id = %s",
                [literal, rollout.pk, f"{arm}-{i}"],
            )
            assert cursor.rowcount == 1
    stored = list(
        DeviceOutcome.objects.filter(rollout=rollout, arm=arm)
        .order_by("device_id")
        .values_list("value_sum", flat=True)
    )
    assert any(math.isnan(v) for v in stored) and math.inf in stored and -math.inf in stored


def assert_json_clean(analysis: Analysis) -> None:
    stored = Analysis.objects.get(pk=analysis.pk)  # what PostgreSQL's jsonb accepted
    for part in (stored.body, stored.inputs, stored.sequential_state):
        json.dumps(part, allow_nan=False)


def test_selector__extreme_value_sums__clipped_and_nan_counts_as_zero(value_guarded):
    populate(value_guarded, BASELINE, 200, 20)
    populate(value_guarded, CHALLENGER, 200, 20)
    store_extremes(value_guarded, CHALLENGER)

    counted = exposure_counts(rollout=value_guarded).counted
    sums = arm_sufficient_statistics(rollout=value_guarded, counted=counted)

    challenger = sums[CHALLENGER][0]
    expected = [counts for _, counts in EXTREMES]
    # ±1e12 cancel exactly; the decimals are then summed beside 1e12 (float8: ~1e-4 apart).
    assert challenger["value_total"] == pytest.approx(math.fsum(expected), abs=1e-3)
    assert challenger["value_squares"] == pytest.approx(
        math.fsum(v * v for v in expected), rel=1e-12
    )
    assert sums[BASELINE][0]["value_total"] == 0.0
    reference = counting_reference(value_guarded)[CHALLENGER][0]
    assert challenger["value_squares"] == pytest.approx(reference["value_squares"], rel=1e-12)
    assert challenger["value_total"] == pytest.approx(reference["value_total"], abs=1e-3)


def test_judge__extreme_values_in_both_arms__stored_json_clean_and_harm_rolled_back_once(
    value_guarded, webhook_receiver, django_capture_on_commit_callbacks
):
    AlertChannel.objects.create(
        app=value_guarded.flow.app, name="on-call", kind="webhook", target=webhook_receiver.url
    )
    populate(value_guarded, BASELINE, 3000, 300)
    populate(value_guarded, CHALLENGER, 3000, 150)
    store_extremes(value_guarded, BASELINE)
    store_extremes(value_guarded, CHALLENGER)

    with django_capture_on_commit_callbacks(execute=True):
        first = rollout_analyze(rollout=value_guarded, act=True)
        second = rollout_analyze(rollout=value_guarded, act=True)

    assert_json_clean(first)
    assert_json_clean(second)
    assert first.decision == "rollback"
    assert first.action == "rolled_back"
    assert second.action == ""
    value_guarded.refresh_from_db()
    assert value_guarded.state == RolloutState.ROLLED_BACK
    assert Alert.objects.count() == 1
    assert len(webhook_receiver.received) == 1
    assert AlertDelivery.objects.get().status == "sent"
    # Clipped in SQL, the stored extremes are finite sums: the value metric is computed too.
    assert first.body["metric_failures"] == {}
    arms = {a["arm"]: a for a in first.body["arms"]}
    assert arms[CHALLENGER]["metrics"]["conversion"]["direction"] == "worse"
    value = arms[CHALLENGER]["metrics"]["value"]
    assert "error" not in value
    assert value["mean"] == pytest.approx(arms[BASELINE]["metrics"]["value"]["mean"], abs=1e-6)
    assert math.isfinite(first.inputs["arms"][CHALLENGER]["value_squares"])


def test_judge__value_sums_beyond_range__value_fails_visibly_and_conversion_still_rolls_back(
    value_guarded, monkeypatch
):
    # Sums beyond floating-point range (from a selector without the clip, say) reach the
    # analysis: the value metric fails alone, and the analysis can still be stored.
    read = judge.arm_sufficient_statistics

    def beyond_range(**kwargs):
        sums = read(**kwargs)
        sums[BASELINE][0].update(value_total=math.inf, value_squares=math.nan)
        return sums

    monkeypatch.setattr(judge, "arm_sufficient_statistics", beyond_range)
    populate(value_guarded, BASELINE, 3000, 300)
    populate(value_guarded, CHALLENGER, 3000, 150)

    analysis = rollout_analyze(rollout=value_guarded, act=True)

    assert_json_clean(analysis)
    assert analysis.decision == "rollback"
    assert analysis.action == "rolled_back"
    assert Alert.objects.count() == 1
    assert set(analysis.body["metric_failures"]) == {"value"}
    failure = analysis.body["metric_failures"]["value"]
    assert "beyond floating-point range" in failure
    for entry in analysis.body["arms"]:
        assert entry["metrics"]["value"] == {"n": 3000, "error": failure}
        assert "error" not in entry["metrics"]["conversion"]
        assert "error" not in entry["metrics"]["model_error"]
    assert analysis.inputs["arms"][BASELINE]["value_total"] is None
    assert "value" not in analysis.sequential_state
    assert analysis.sequential_state["conversion"][CHALLENGER]["looks"] == 1
