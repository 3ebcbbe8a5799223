"""The judge on real data in PostgreSQL: analysis, decisions, automatic actions, alerts once."""

from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from experiments import readout, stats
from experiments.judge import rollout_analyze
from experiments.models import Alert, AlertChannel, AlertDelivery, Analysis
from rollout import services
from rollout.models import Exposure, Rollout, RolloutEvent, RolloutState

from .builders import populate, started_rollout

pytestmark = pytest.mark.django_db


def test_analysis__matches_stats_module_on_the_same_sufficient_statistics(running):
    populate(running, "baseline", 2000, 200)
    populate(running, "challenger-1", 2000, 230)

    analysis = rollout_analyze(rollout=running, act=False)

    arms = {a["arm"]: a for a in analysis.body["arms"]}
    assert arms["baseline"]["exposed"] == 2000
    assert arms["baseline"]["metrics"]["conversion"] == {"n": 2000, "mean": 0.1}
    challenger = arms["challenger-1"]["metrics"]["conversion"]
    expected = stats.compare_arms(
        stats.ArmStats.proportion(2000, 200),
        {"challenger-1": stats.ArmStats.proportion(2000, 230)},
        stats.MetricSpec("conversion", "proportion"),
        planned_sample=4000,
        metrics=2,  # conversion and model_error share alpha
    )["challenger-1"]
    assert challenger["p_value"] == pytest.approx(expected.p_value, abs=1e-12)
    assert challenger["sequential_ci"] == pytest.approx(list(expected.sequential_ci), abs=1e-12)
    assert analysis.inputs["arms"]["challenger-1"]["converted"] == 230
    assert analysis.decision in {"continue", "insufficient_data"}


def test_analysis__devices_that_never_reported__counted_as_exposed(running):
    populate(running, "baseline", 1000, 100)
    populate(running, "challenger-1", 1000, 100)
    now = timezone.now()
    Exposure.objects.bulk_create(
        Exposure(
            rollout=running, device_id=f"silent-{i}", arm="challenger-1", bucket=0,
            sdk_version="1.5.0", first_exposed_at=now, arm_since=now,
        )
        for i in range(500)
    )  # fmt: skip

    analysis = rollout_analyze(rollout=running, act=False)

    arms = {a["arm"]: a for a in analysis.body["arms"]}
    assert arms["challenger-1"]["exposed"] == 1500
    assert arms["challenger-1"]["metrics"]["conversion"]["mean"] == pytest.approx(100 / 1500)
    assert arms["challenger-1"]["reporting"] == 1000


def test_judge__clearly_harmful_challenger__rolls_back_once_and_alerts_once(
    running, webhook_receiver, django_capture_on_commit_callbacks
):
    AlertChannel.objects.create(
        app=running.flow.app, name="on-call", kind="webhook", target=webhook_receiver.url
    )
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 3000, 150)

    with django_capture_on_commit_callbacks(execute=True):  # delivery is queued on commit
        first = rollout_analyze(rollout=running, act=True)
        second = rollout_analyze(rollout=running, act=True)

    running.refresh_from_db()
    assert first.decision == "rollback"
    assert first.action == "rolled_back"
    assert running.state == RolloutState.ROLLED_BACK
    event = running.events.get(action="rollback")
    assert event.actor == "system"
    assert event.evidence["analysis_id"] == first.pk
    assert "conversion" in event.reason
    assert second.action == ""
    assert Alert.objects.count() == 1
    assert len(webhook_receiver.received) == 1
    message = webhook_receiver.received[0]
    assert "Rolled back challenger-1" in message["text"]
    assert message["decision"] == "rollback"
    assert message["rollout_id"] == str(running.pk)
    # The alert says what the console says about the same analysis, word for word.
    console = readout.recommendation(first.body).sentence
    assert console.startswith("Roll back recommended: challenger-1 conversion")
    assert message["summary"] == console and console in message["text"]
    assert AlertDelivery.objects.get().status == "sent"


def test_judge__model_errors__guardrail_rolls_back(running):
    populate(running, "baseline", 2000, 200, errors=10)
    populate(running, "challenger-1", 2000, 200, errors=200)

    analysis = rollout_analyze(rollout=running, act=True)

    assert analysis.decision == "rollback"
    assert any("model_error" in reason for reason in analysis.body["reasons"])


def test_judge__equal_arms__never_rolls_back(running):
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 3000, 300)

    analysis = rollout_analyze(rollout=running, act=True)

    running.refresh_from_db()
    assert analysis.decision == "continue"
    assert running.state == RolloutState.RUNNING


def test_judge__too_few_devices__insufficient_data(running):
    populate(running, "baseline", 50, 5)
    populate(running, "challenger-1", 50, 1)

    analysis = rollout_analyze(rollout=running, act=True)

    assert analysis.decision == "insufficient_data"
    running.refresh_from_db()
    assert running.state == RolloutState.RUNNING


def test_judge__sample_ratio_mismatch__srm_alert_no_action(running):
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 2000, 200)

    analysis = rollout_analyze(rollout=running, act=True)

    assert analysis.decision == "srm_alert"
    assert analysis.body["srm_p_value"] < 0.001
    assert Alert.objects.get().kind == "srm_alert"


def test_judge__auto_advance_when_stage_done__advances_audited_as_system(sdk_setup):
    rollout = started_rollout(sdk_setup, [20, 50], auto_advance=True, stage_min_minutes=0)
    populate(rollout, "baseline", 4000, 400)
    populate(rollout, "challenger-1", 1000, 100)

    analysis = rollout_analyze(rollout=rollout, act=True)

    assert analysis.decision == "advance"
    assert analysis.action == "advanced"
    assert rollout.arms.get().share == 5_000
    assert rollout.events.get(action="advance").actor == "system"


def test_judge__plan_ending_at_100__holds_the_last_stage_with_a_baseline(sdk_setup):
    rollout = started_rollout(sdk_setup, [50, 100], auto_advance=True, stage_min_minutes=0)
    populate(rollout, "baseline", 1000, 100)
    populate(rollout, "challenger-1", 1000, 100)

    analysis = rollout_analyze(rollout=rollout, act=True)

    # At 100 % no device would be left to compare with: the step there is a promotion.
    assert analysis.decision == "continue"
    assert "automatic advancing stops here" in analysis.body["reasons"][0]
    assert rollout.arms.get().share == 5_000
    assert not rollout.events.filter(action="advance").exists()


def test_judge__plan_ending_at_100__better_at_50__promotion_recommended(sdk_setup):
    rollout = started_rollout(sdk_setup, [50, 100], planned_sample=4000)
    populate(rollout, "baseline", 2000, 200)
    populate(rollout, "challenger-1", 2000, 320)

    analysis = rollout_analyze(rollout=rollout, act=True)

    assert analysis.decision == "promote_recommended"
    assert Alert.objects.get().kind == "promote_recommended"


def test_judge__sequential_state__carried_between_looks(running):
    populate(running, "baseline", 1000, 100)
    populate(running, "challenger-1", 1000, 110)

    first = rollout_analyze(rollout=running, act=False)
    second = rollout_analyze(rollout=running, act=False)

    state = second.sequential_state["conversion"]["challenger-1"]
    assert state["looks"] == 2
    assert first.sequential_state["conversion"]["challenger-1"]["looks"] == 1


def test_analyze_api__runs_judge_and_get_returns_latest(pm_api, viewer_api, running):
    populate(running, "baseline", 500, 50)
    populate(running, "challenger-1", 500, 50)

    missing = viewer_api.get(f"/api/v1/rollouts/{running.pk}/analysis")
    posted = pm_api.post(f"/api/v1/rollouts/{running.pk}/analyze")
    latest = viewer_api.get(f"/api/v1/rollouts/{running.pk}/analysis")
    forbidden = viewer_api.post(f"/api/v1/rollouts/{running.pk}/analyze")

    assert missing.status_code == 404
    assert missing.json()["error"] == "no_analysis"
    assert posted.status_code == 200
    body = posted.json()
    assert set(body) >= {"computed_at", "srm_p_value", "decision", "arms"}
    assert body["arms"][1]["metrics"]["conversion"]["n"] == 500
    assert latest.json() == body
    assert forbidden.status_code == 403
    assert Analysis.objects.count() == 1


def test_judge__challenger_failing_on_every_device__rolled_back(running):
    populate(running, "baseline", 373, 40)
    populate(running, "challenger-1", 130, 0, errors=130)

    analysis = rollout_analyze(rollout=running, act=True)

    assert analysis.decision == "rollback"
    assert any("clearly worse on model_error" in reason for reason in analysis.body["reasons"])


def test_judge__auto_advance__waits_for_the_power_plan(sdk_setup):
    rollout = services.rollout_create(
        flow=sdk_setup["flow"],
        challengers=[{"model_id": str(sdk_setup["challenger"].pk), "stages": [50, 100]}],
        actor="test",
        auto_advance=True,
        stage_min_minutes=0,
        advance_detectable_lift=0.2,
    )
    rollout = services.rollout_start(rollout=rollout, actor="test")
    populate(rollout, "baseline", 1000, 100)
    populate(rollout, "challenger-1", 1000, 100)

    analysis = rollout_analyze(rollout=rollout, act=True)

    # A 20 % drop from 10 % needs about 3 800 devices per arm at power 0.8.
    assert analysis.decision == "continue"
    assert rollout.arms.get().share == 5000


def test_documented_recompute_script__reproduces_a_stored_analysis(sdk_setup, capsys):
    """docs/experiments.md's script recomputes intervals, p-values and SRM from `inputs`."""
    import re
    from pathlib import Path

    rollout = started_rollout(sdk_setup, [20, 50], guardrails=["value"])
    # The first phase an hour ago, so its devices cannot fall after the advance below.
    hour = timedelta(hours=1)
    RolloutEvent.objects.filter(rollout=rollout).update(at=F("at") - hour)
    Rollout.objects.filter(pk=rollout.pk).update(
        started_at=F("started_at") - hour, stage_started_at=F("stage_started_at") - hour
    )
    rollout.refresh_from_db()
    populate(rollout, "baseline", 4000, 400)
    populate(rollout, "challenger-1", 1000, 90)
    rollout = services.rollout_advance(rollout=rollout, actor="test")
    populate(rollout, "baseline", 1000, 100, start=4000)
    populate(rollout, "challenger-1", 1000, 80, start=1000)
    rollout_analyze(rollout=rollout, act=False)
    stored = rollout_analyze(rollout=rollout, act=False)
    assert stored.inputs["previous_sequential_state"]

    docs = (Path(__file__).resolve().parents[2] / "docs" / "experiments.md").read_text()
    section = docs[docs.index("### Recomputing an analysis from its `inputs`") :]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(script.replace("pk=3", f"pk={stored.pk}"), {})
    printed = capsys.readouterr().out.splitlines()

    challenger = next(a for a in stored.body["arms"] if a["arm"] == "challenger-1")
    for metric, body in challenger["metrics"].items():
        line = next(p for p in printed if p.startswith(f"{metric} challenger-1 "))
        assert str(tuple(body["sequential_ci"]) if body["sequential_ci"] else None) in line
        assert str(body["p_value"]) in line
        assert body["strata"] in (0, 2)  # 0: insufficient
    assert printed[-1].startswith(f"{stored.body['srm_p_value']} ")
