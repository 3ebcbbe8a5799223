"""The rollout page in a real browser: results that agree with the API and with themselves."""

import pathlib

import pytest
from axe_playwright_python.sync_playwright import Axe

from experiments import readout
from experiments.judge import rollout_analyze
from rollout import services
from tests.integration.builders import flow_with_models, populate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def setup(transactional_db, trained_models):
    return flow_with_models(trained_models)


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


def test_rollout_page__better_challenger__chip_text_and_api_agree(login, setup, console_errors):
    rollout, analysis = analysed_rollout(setup, baseline=300, challenger=600)
    page = login("product_manager")

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
    assert console_errors == []


def test_rollout_page__sample_ratio_mismatch__banner_hides_every_chip(login, setup):
    rollout, analysis = analysed_rollout(setup, baseline=300, challenger=100, srm=True)
    assert analysis.body["srm"]
    page = login("product_manager")

    page.goto(f"/admin/rollout/rollout/{rollout.pk}/change/")

    assert "Do not act on these results" in page.inner_text("[role=alert]")
    assert page.locator(".chip-good, .chip-bad, .chip-neutral").count() == 0
    assert page.locator(".chip-hidden").count() == page.locator("table.results tbody tr").count()


@pytest.mark.parametrize("width", [1280, 1920])
def test_rollout_page__layout_and_accessibility(login, setup, width):
    rollout, _ = analysed_rollout(setup, baseline=300, challenger=150)
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
