"""The rollout page in a real browser: results that agree with the API and with themselves."""

import pathlib

import pytest
from axe_playwright_python.sync_playwright import Axe

from experiments import readout
from experiments.judge import rollout_analyze
from registry import services as registry_services
from rollout import services
from tests.integration.builders import populate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def flow_with_models(transactional_db, trained_models):
    app = registry_services.app_create(name="Demo Shop")
    flow = registry_services.flow_create(
        app=app, name="onboarding_upsell", flow_id=8362, positive_label="Purchased"
    )
    baseline, _ = registry_services.model_version_upload(
        flow=flow, file=trained_models["baseline"].open("rb"), filename="b.mlmodel"
    )
    challenger, _ = registry_services.model_version_upload(
        flow=flow, file=trained_models["challenger"].open("rb"), filename="c.mlmodel"
    )
    registry_services.flow_baseline_set(flow=flow, model_version=baseline, actor="test")
    return {"flow": flow, "challenger": challenger}


def analysed_rollout(setup, *, baseline, challenger, srm=False):
    rollout = services.rollout_create(
        flow=setup["flow"],
        challengers=[{"model_id": str(setup["challenger"].pk), "stages": [50]}],
        actor="test",
        planned_sample=4000,
    )
    rollout = services.rollout_start(rollout=rollout, actor="test")
    # Three looks, a third of the devices more each time, so the charts have a course.
    analysis = None
    for look in range(3):
        populate(rollout, "baseline", 1000, baseline // 3, start=look * 1000)
        populate(
            rollout,
            "challenger-1",
            333 if srm else 1000,
            challenger // 3,
            start=10_000 + look * 1000,
        )
        analysis = rollout_analyze(rollout=rollout, act=False)
    return rollout, analysis


def console_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def test_rollout_page__better_challenger__chip_text_and_api_agree(login, flow_with_models):
    rollout, analysis = analysed_rollout(flow_with_models, baseline=300, challenger=600)
    page = login("product_manager")
    errors = console_errors(page)

    page.goto(f"/admin/rollout/rollout/{rollout.pk}/change/")

    api = page.request.get(f"/api/v1/rollouts/{rollout.pk}/analysis").json()
    assert api == analysis.body
    [arm] = [a for a in api["arms"] if a["arm"] == "challenger-1"]
    primary = arm["metrics"]["conversion"]
    assert primary["sequential_ci"][0] > 0 and primary["direction"] == "better"
    row = page.locator("table.results tr.primary")
    assert "Better" in row.inner_text()
    assert readout.difference_text(primary, proportion=True) in row.inner_text()
    assert readout.recommendation(api, look=3).sentence in page.inner_text(".recommendation")
    lift = page.locator("figure.console-chart svg[role=img]").first
    assert "conversion" in lift.get_attribute("aria-label")
    assert page.locator("figure.console-chart").count() == 2
    # "Better" only where the interval lies wholly on the good side: nowhere else.
    for metric, comparison in arm["metrics"].items():
        if comparison.get("direction") != "better":
            assert (
                "Better"
                not in page.locator(
                    "table.results tr", has_text=readout.metric_title(metric)
                ).first.inner_text()
            )
    assert errors == []


def test_rollout_page__sample_ratio_mismatch__banner_hides_every_chip(login, flow_with_models):
    rollout, analysis = analysed_rollout(flow_with_models, baseline=300, challenger=100, srm=True)
    assert analysis.body["srm"]
    page = login("product_manager")

    page.goto(f"/admin/rollout/rollout/{rollout.pk}/change/")

    assert "Do not act on these results" in page.inner_text("[role=alert]")
    assert page.locator(".chip-good, .chip-bad, .chip-neutral").count() == 0
    assert page.locator(".chip-hidden").count() == page.locator("table.results tbody tr").count()


@pytest.mark.parametrize("width", [1280, 1920])
def test_rollout_page__layout_and_accessibility(login, flow_with_models, width):
    rollout, _ = analysed_rollout(flow_with_models, baseline=300, challenger=150)
    page = login("product_manager")
    page.set_viewport_size({"width": width, "height": 1000})

    page.goto(f"/admin/rollout/rollout/{rollout.pk}/change/")

    shots = pathlib.Path("var/screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"rollout-page-{width}.png"), full_page=True)
    title = page.locator("#content h1").bounding_box()
    for button in page.locator(".rollout-actions a").all():
        box = button.bounding_box()
        overlaps = not (
            box["x"] + box["width"] <= title["x"]
            or title["x"] + title["width"] <= box["x"]
            or box["y"] + box["height"] <= title["y"]
            or title["y"] + title["height"] <= box["y"]
        )
        assert not overlaps, "an action button overlaps the title"
    table = page.locator("table.results").bounding_box()
    assert table["x"] + table["width"] <= width, "the results table is clipped"
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()
