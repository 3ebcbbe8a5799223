"""Creating a rollout from the console: flow → plan → review with the power estimate → create."""

import re

import pytest
from django.utils import timezone

from experiments import stats
from experiments.console.create_form import RolloutPlanForm
from experiments.judge import rollout_analyze
from registry import services as registry_services
from rollout.models import Rollout, RolloutState

from .builders import populate

pytestmark = pytest.mark.django_db

ADD = "/admin/rollout/rollout/add/"


@pytest.fixture(scope="module")
def third_model(tmp_path_factory):
    """A third model of the demo interface, so a flow can have two challengers."""
    from registry import training

    rows = training.demo_rows(300, seed=3, purchase_bias=0.3)
    names = [c for c in rows[0] if c != "Outcome"]
    x = [[float(row[c]) for c in names] for row in rows]
    result = training.train_outcome_classifier(
        names, x, [row["Outcome"] for row in rows], seed=3, n_estimators=5
    )
    path = tmp_path_factory.mktemp("third") / "third.mlmodel"
    path.write_bytes(result.model_bytes)
    return path


@pytest.fixture
def two_challengers(sdk_setup, third_model, trained_models):
    """The demo flow (baseline, challenger, a newer challenger) and another app's flow with the
    same files."""
    newer, _ = registry_services.model_version_upload(
        flow=sdk_setup["flow"],
        file=third_model.open("rb"),
        filename="newer.mlmodel",
        notes="Newer: trained on the spring data",
        metrics={"accuracy": 0.8123, "Purchased": {"precision": 0.7, "recall": 0.6}, "n_test": 90},
    )
    other_app = registry_services.app_create(name="Other Shop")
    other_flow = registry_services.flow_create(
        app=other_app, name="onboarding_upsell", flow_id=1, positive_label="Purchased"
    )
    other, _ = registry_services.model_version_upload(
        flow=other_flow, file=trained_models["challenger"].open("rb"), filename="o.mlmodel"
    )
    return {**sdk_setup, "newer": newer, "other": other}


def plan_data(setup, **overrides) -> dict:
    data = {
        "flow": str(setup["flow"].pk),
        "challenger": str(setup["challenger"].pk),
        "stages": "1, 5, 20, 50",
        "stage_min_minutes": "30",
        "min_devices_per_arm": "200",
        "advance_detectable_lift": "25",
        "planned_sample": "8000",
        "auto_advance": "on",
        "baseline_rate": "10",
        "guard_value": "on",
        "margin_value": "0.5",
        "margin_model_error": "0.2",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def text_of(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


def test_create__without_a_flow__asks_for_one_first(admin_client, sdk_setup):
    response = admin_client.get(ADD)

    assert response.status_code == 200
    assert response.context["step"] == "flow"
    assert str(sdk_setup["flow"].pk) in response.content.decode()
    assert 'name="challenger"' not in response.content.decode()


def test_create__picker_lists_only_this_flows_challengers_newest_first(
    admin_client, two_challengers
):
    setup = two_challengers

    response = admin_client.get(ADD, {"flow": setup["flow"].pk})

    assert response.context["step"] == "plan"
    listed = [option.pk for option in response.context["options"]]
    assert listed == [str(setup["newer"].pk), str(setup["challenger"].pk)]
    html = response.content.decode()
    assert str(setup["baseline"].pk) not in re.findall(
        r'name="challenger" [^>]*value="([^"]+)"', html
    )
    assert str(setup["other"].pk) not in html
    # Labelled with notes, format, size and offline metrics; the newest is picked already.
    text = text_of(response)
    assert "Newer: trained on the spring data" in text
    assert "accuracy 0.812, Purchased precision 0.700, Purchased recall 0.600" in text
    assert ".mlmodel" in text and "KB" in text
    assert re.search(rf'value="{setup["newer"].pk}" checked', html)


def test_create__guardrails_offered_are_what_the_flow_can_judge(admin_client, sdk_setup):
    response = admin_client.get(ADD, {"flow": sdk_setup["flow"].pk})

    metrics = [row["choice"].metric for row in response.context["form"].guardrail_rows()]
    # The demo models' labels are Purchased (the primary metric's) and Dismissed.
    assert metrics == ["model_error", "value", "outcome:Dismissed"]


def test_create__review__shows_the_power_estimate_and_creates_nothing(admin_client, sdk_setup):
    response = admin_client.post(f"{ADD}?flow={sdk_setup['flow'].pk}", {
        **plan_data(sdk_setup), "step": "review",
    })  # fmt: skip

    assert response.status_code == 200
    assert response.context["step"] == "review", response.context["form"].errors
    needed = stats.devices_per_arm_for_lift(0.10, -0.25, alpha=0.05)
    at_min_lift = stats.devices_per_arm_for_lift(0.10, 0.10, alpha=0.05)
    power = stats.power_for(4000, 0.10, -0.25)
    text = text_of(response)
    assert f"Devices per arm before advancing {needed:,}" in text
    assert f"Devices per arm to detect a 10 % change {at_min_lift:,}" in text
    assert f"Power of the planned sample {power * 100:.0f} % for the 25 % drop" in text
    assert "4,000 devices per arm" in text
    assert "not measured yet" in text  # no rollout of this flow has run: no days
    assert "1 % → 5 % → 20 % → 50 %" in text
    assert not Rollout.objects.exists()
    # "Back to edit" returns to the plan with what was entered.
    back = admin_client.post(f"{ADD}?flow={sdk_setup['flow'].pk}", {
        **plan_data(sdk_setup), "step": "edit",
    })  # fmt: skip
    assert back.context["step"] == "plan"
    assert back.context["form"]["stages"].value() == "1, 5, 20, 50"
    assert not Rollout.objects.exists()


def test_create__create__through_the_service_with_guardrails_and_gates(admin_client, sdk_setup):
    data = plan_data(
        sdk_setup,
        guard_outcome_dismissed=None,
    )
    form = RolloutPlanForm(flow=sdk_setup["flow"])
    dismissed = next(c for c in form.guardrail_choices if c.metric == "outcome:Dismissed")
    data[f"guard_{dismissed.key}"] = "on"
    data[f"margin_{dismissed.key}"] = "1"
    data[f"better_{dismissed.key}"] = "lower"

    response = admin_client.post(f"{ADD}?flow={sdk_setup['flow'].pk}", {**data, "step": "create"})

    assert response.status_code == 302, text_of(response)[:2000]
    rollout = Rollout.objects.get()
    assert response["Location"] == f"/admin/rollout/rollout/{rollout.pk}/change/"
    assert rollout.state == RolloutState.DRAFT
    assert (
        rollout.auto_advance,
        rollout.stage_min_minutes,
        rollout.min_devices_per_arm,
        rollout.advance_detectable_lift,
        rollout.planned_sample,
    ) == (True, 30, 200, 0.25, 8000)
    assert rollout.guardrails == [
        {"metric": "model_error", "margin": 0.002},
        {"metric": "value", "margin": 0.5},
        {"metric": "outcome:Dismissed", "margin": 0.01},
    ]
    [arm] = rollout.arms.all()
    assert (arm.model_version_id, arm.stages) == (
        sdk_setup["challenger"].pk,
        [100, 500, 2000, 5000],
    )
    assert [(e.action, e.actor) for e in rollout.events.all()] == [("create", "user:admin")]


def test_create__baseline_posted_as_challenger__refused_nothing_created(admin_client, sdk_setup):
    response = admin_client.post(
        f"{ADD}?flow={sdk_setup['flow'].pk}",
        {**plan_data(sdk_setup, challenger=str(sdk_setup["baseline"].pk)), "step": "create"},
    )

    assert response.status_code == 200
    assert "not a challenger of this flow" in response.context["form"].errors["challenger"][0]
    assert not Rollout.objects.exists()


def test_create__bad_stage_plan__refused_at_review(admin_client, sdk_setup):
    response = admin_client.post(
        f"{ADD}?flow={sdk_setup['flow'].pk}",
        {**plan_data(sdk_setup, stages="20, 5"), "step": "review"},
    )

    assert response.context["step"] == "plan"
    assert "must be larger" in response.context["form"].errors["stages"][0]


def test_create__viewer__refused(client, django_user_model, sdk_setup):
    from django.contrib.auth.models import Group

    from controlplane.roles import role_groups_sync

    role_groups_sync()
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.groups.add(Group.objects.get(name="viewer"))
    client.force_login(viewer)

    response = client.post(
        f"{ADD}?flow={sdk_setup['flow'].pk}", {**plan_data(sdk_setup), "step": "create"}
    )

    assert response.status_code == 403
    assert not Rollout.objects.exists()


def test_create__after_an_analysis__rate_and_traffic_measured_and_gate_agrees_with_judge(
    admin_client, running, sdk_setup
):
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 3000, 310, start=3000)
    analysis = rollout_analyze(rollout=running, act=False)
    # The traffic is measured over at least an hour of the rollout.
    Rollout.objects.filter(pk=running.pk).update(
        started_at=timezone.now() - timezone.timedelta(hours=2)
    )
    from rollout.models import Exposure

    Exposure.objects.filter(rollout=running).update(
        first_exposed_at=timezone.now() - timezone.timedelta(hours=1)
    )

    page = admin_client.get(ADD, {"flow": sdk_setup["flow"].pk})
    assert page.context["form"].initial["baseline_rate"] == 10.0
    assert page.context["traffic"].devices == 6000
    response = admin_client.post(f"{ADD}?flow={sdk_setup['flow'].pk}", {
        **plan_data(sdk_setup, advance_detectable_lift="50", min_devices_per_arm="100",
                    stages="50", stage_min_minutes="60"),
        "step": "review",
    })  # fmt: skip

    estimate = response.context["estimate"]
    # The gate the estimate shows is the one the judge computes for the same plan and rate.
    assert (
        estimate.devices_per_arm_to_advance == analysis.body["power"]["devices_per_arm_to_advance"]
    )
    assert estimate.daily_devices == pytest.approx(6000 / (2 / 24), rel=1e-3)
    assert estimate.days_first_stage == 1  # hundreds of devices a minute: the minimum time rules
    assert "(estimate)" in text_of(response)
