"""The flows overview and the model version page in a real browser: landing, badges, legend,
filters, the make-baseline button by role, layout at 1280 and 1920 px, and an axe scan."""

from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe

from experiments import readout
from experiments.judge import rollout_analyze
from registry import services as registry
from rollout import services as rollouts
from tests.integration.builders import flow_with_models, populate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
WIDTHS = (1280, 1920)


def _flow(app, name, number, trained_models, notes=""):
    return flow_with_models(
        trained_models,
        app=app,
        name=name,
        number=number,
        baseline_notes=notes,
        challenger_notes="challenger with the new signals",
    )


def _rollout(setup, stages):
    rollout = rollouts.rollout_create(
        flow=setup["flow"],
        challengers=[{"model_id": str(setup["challenger"].pk), "stages": stages}],
        actor="user:dana",
        planned_sample=4000,
    )
    return rollouts.rollout_start(rollout=rollout, actor="user:dana")


@pytest.fixture
def fleet(transactional_db, trained_models):
    """Two apps' flows in most states, with analyses stored by the real judge."""
    shop = registry.app_create(name="Demo Shop")
    news = registry.app_create(name="Daily News")
    harmful = _flow(shop, "onboarding_upsell", 8362, trained_models, "gradient boosting, March")
    failing = _rollout(harmful, [5, 50, 100])
    rollouts.rollout_advance(rollout=failing, actor="user:pat", reason="clean at 5 %")
    failing.refresh_from_db()
    populate(failing, "baseline", 3000, 600, errors=60)
    populate(failing, "challenger-1", 3000, 300, errors=60)
    rollout_analyze(rollout=failing, act=False)

    winning = _flow(shop, "checkout_offer", 8363, trained_models, "logistic regression")
    ready = _rollout(winning, [50])
    populate(ready, "baseline", 3000, 300, errors=30)
    populate(ready, "challenger-1", 3000, 450, errors=30)
    rollout_analyze(rollout=ready, act=False)

    paused = _rollout(_flow(news, "paywall_prompt", 11, trained_models), [5, 20])
    rollouts.rollout_pause(rollout=paused, actor="user:pat", reason="support ticket #12")
    collecting = _rollout(_flow(news, "push_timing", 12, trained_models), [10, 50])
    populate(collecting, "baseline", 40, 4)
    populate(collecting, "challenger-1", 30, 3)
    rollout_analyze(rollout=collecting, act=False)
    _flow(news, "article_ranking", 13, trained_models, "bundled replacement")
    return {"shop": shop, "news": news, "harmful": harmful, "winning": winning}


def _shoot(page, name: str):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)


def _assert_layout_holds(page):
    """No horizontal scroll of the page; the object tools do not overlap the title."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page scrolls sideways at {width} px"
        overlap = page.evaluate(
            """() => {
              const title = document.querySelector('#content > h1');
              const tools = document.querySelector('.object-tools');
              if (!title || !tools || !tools.children.length) return false;
              const a = title.getBoundingClientRect(), b = tools.getBoundingClientRect();
              return !(b.left >= a.right || b.right <= a.left || b.top >= a.bottom ||
                       b.bottom <= a.top);
            }"""
        )
        assert not overlap, f"the object tools overlap the title at {width} px"


def test_overview__product_manager_lands_on_it_and_reads_states_and_legend(login, fleet):
    errors = []
    page = login("product_manager")
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.goto("/admin/")  # home, as after logging in

    page.wait_for_selector("#result_list")
    assert page.url.endswith("/admin/registry/flow/")
    assert page.inner_text("#content h1") == "Flows overview"
    harmful = page.locator("#result_list tr", has_text="onboarding_upsell")
    badge = harmful.locator(".console-badge")
    assert badge.inner_text() == readout.GUARDRAIL_FAILING
    assert badge.get_attribute("title").startswith("Roll back recommended: challenger-1 conversion")
    assert harmful.locator(".field-stage").inner_text() == "2/3 · 50 %"
    assert "Worse" in harmful.locator(".field-primary_lift").inner_text()
    assert harmful.locator(".field-primary_lift svg[role=img]").count() == 1
    winning = page.locator("#result_list tr", has_text="checkout_offer")
    assert winning.locator(".console-badge").inner_text() == readout.READY_TO_PROMOTE
    paused = page.locator("#result_list tr", has_text="paywall_prompt")
    assert "support ticket #12" in paused.locator(".console-badge").get_attribute("title")
    legend = page.inner_text(".console-legend")
    for label, _, meaning in readout.STATE_LEGEND:
        assert label in legend and meaning in legend
    _assert_layout_holds(page)
    _shoot(page, "overview")

    page.click("#changelist-filter a:text-is('Daily News')")
    page.wait_for_url("**app__id__exact=*")
    names = page.locator("#result_list .field-name").all_inner_texts()
    assert sorted(names) == ["article_ranking", "paywall_prompt", "push_timing"]
    page.click("#changelist-filter a:text-is('Paused')")
    page.wait_for_url("**state=paused*")
    assert page.locator("#result_list .field-name").all_inner_texts() == ["paywall_prompt"]
    assert errors == []


def test_overview__accessibility_scan__no_violations(login, fleet):
    page = login("product_manager")
    page.goto("/admin/registry/flow/")
    page.wait_for_selector(".console-legend")

    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        results = Axe().run(page)
        assert results.violations_count == 0, results.generate_report()
        assert len(results.response["passes"]) > 10  # it did look at the page


def test_model_page__make_baseline_for_a_product_manager_not_for_a_viewer(
    page, login, fleet, django_user_model
):
    challenger = fleet["winning"]["challenger"]
    url = f"/admin/registry/modelversion/{challenger.pk}/change/"
    login("product_manager")
    page.goto(url)

    button = page.locator(".console-make-baseline button")
    assert button.is_enabled() and button.inner_text() == "Make baseline…"
    assert "Rollouts that used it" in page.inner_text("#content")
    assert page.locator(".field-rollouts_used a").count() == 1
    assert page.locator("a.console-download").count() == 1
    _assert_layout_holds(page)
    _shoot(page, "model-page")
    scan = Axe().run(page)
    assert scan.violations_count == 0, scan.generate_report()
    button.click()
    page.wait_for_selector("#id_reason")
    page.fill("#id_reason", "won at 50 %")
    page.click("input[type=submit][value='Yes, make it the baseline']")
    page.wait_for_selector(".messagelist .success")
    fleet["winning"]["flow"].refresh_from_db()
    assert fleet["winning"]["flow"].baseline_id == challenger.pk

    page.context.clear_cookies()
    login("viewer")
    page.goto(url)
    assert page.locator("#content-main").count() == 1
    assert page.get_by_text("Make baseline").count() == 0
    assert page.locator("a.console-download").count() == 1


def test_forbidden_page__viewer__styled_with_the_way_back(login, fleet):
    page = login("viewer")
    page.goto("/admin/registry/flow/")

    response = page.goto("/admin/registry/modelversion/add/")

    assert response.status == 403
    assert "You need the product manager role to do this." in page.inner_text(".errornote")
    assert page.locator("#user-tools").count() == 1
    _shoot(page, "forbidden")
    scan = Axe().run(page)
    assert scan.violations_count == 0, scan.generate_report()
    page.click("text=Go back")
    page.wait_for_url("**/admin/registry/flow/")
