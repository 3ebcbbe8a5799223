"""A product manager creates a rollout from the console, and reads a decision record, in a real
browser: flow → challenger → review with the power estimate → create; accessible at 1280 px."""

import pathlib

import pytest
from axe_playwright_python.sync_playwright import Axe

from experiments.judge import rollout_analyze
from rollout import services
from rollout.models import Rollout, RolloutState
from tests.integration.builders import flow_with_models, populate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = pathlib.Path("var/screenshots")


@pytest.fixture
def setup(transactional_db, trained_models):
    return flow_with_models(
        trained_models,
        challenger_notes="Trained on the spring data, with the charging signal",
        challenger_metrics={
            "accuracy": 0.8123,
            "Purchased": {"precision": 0.71, "recall": 0.64},
            "n_test": 60,
        },
    )


def screenshot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the admin's sidebar is sticky
    page.screenshot(path=str(SHOTS / name), full_page=True)


def no_axe_violations(page) -> None:
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


def test_create__pm_picks_flow_challenger_reviews_power_and_lands_on_the_rollout(
    login, setup, console_errors
):
    page = login("product_manager")
    page.set_viewport_size({"width": 1280, "height": 1000})

    page.goto("/admin/rollout/rollout/add/")
    page.select_option("#id_flow", str(setup["flow"].pk))
    page.click("input[type=submit][value^='Next']")

    # Only this flow's challenger, labelled; never the baseline.
    page.wait_for_selector("table.challenger-options")
    options = page.locator("table.challenger-options input[name=challenger]")
    assert options.count() == 1
    assert options.first.get_attribute("value") == str(setup["challenger"].pk)
    assert "Trained on the spring data" in page.inner_text("table.challenger-options")
    page.check("table.challenger-options input[name=challenger]")
    page.fill("#id_stages", "5, 20, 50")
    page.fill("#id_advance_detectable_lift", "30")
    page.fill("#id_baseline_rate", "12")
    page.check("input[name=guard_value]")
    screenshot(page, "create-rollout-plan-1280.png")
    no_axe_violations(page)
    page.click("button[name=step][value=review]")

    page.wait_for_selector("table.power-figures")
    figures = page.inner_text("table.power-figures")
    assert "Devices per arm before advancing" in figures
    assert "Power of the planned sample" in figures
    assert "12.0 %" in figures and "entered for this estimate" in figures
    assert Rollout.objects.count() == 0  # the review creates nothing
    screenshot(page, "create-rollout-review-1280.png")
    no_axe_violations(page)
    page.click("button[name=step][value=create]")

    page.wait_for_selector(".messagelist .success")
    rollout = Rollout.objects.get()
    assert page.url.endswith(f"/admin/rollout/rollout/{rollout.pk}/change/")
    assert rollout.state == RolloutState.DRAFT
    assert rollout.created_by == "user:product_manager"
    assert rollout.advance_detectable_lift == pytest.approx(0.3)
    assert rollout.guardrails == ["value"]
    assert [a.stages for a in rollout.arms.all()] == [[500, 2000, 5000]]
    assert "Segments — Exploratory" in page.inner_text("#content")
    assert console_errors == []


def test_decision_record__printable_accessible_at_1280(login, setup, console_errors):
    rollout = services.rollout_create(
        flow=setup["flow"],
        challengers=[{"model_id": str(setup["challenger"].pk), "stages": [50]}],
        actor="test",
        planned_sample=4000,
        guardrails=["outcome:Dismissed"],
    )
    rollout = services.rollout_start(rollout=rollout, actor="test")
    populate(rollout, "baseline", 3000, 300)
    populate(rollout, "challenger-1", 3000, 150, start=3000)
    analysis = rollout_analyze(rollout=rollout)  # rolls back
    page = login("product_manager")
    page.set_viewport_size({"width": 1280, "height": 1000})

    page.goto(f"/admin/experiments/analysis/{analysis.pk}/change/")

    assert "Roll back recommended" in page.inner_text(".recommendation")
    assert "Cohort (automatic)" in page.inner_text("table.record-actions")
    table = page.locator("table.record-statistics").bounding_box()
    assert table["x"] + table["width"] <= 1280, "the statistics table is clipped"
    screenshot(page, "decision-record-1280.png")
    no_axe_violations(page)
    # On paper only the record remains.
    page.emulate_media(media="print")
    assert not page.locator("#header").is_visible()
    assert not page.locator("#nav-sidebar").is_visible()
    assert page.locator("table.record-statistics").is_visible()
    page.emulate_media(media="screen")
    assert console_errors == []
