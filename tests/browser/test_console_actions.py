"""The rollout's actions in a real browser (CONSOLE.md, page 4 and its tests): a product manager
advances with the impact in front of them and the audit row appears; promote stays disabled
until the flow's name is typed; a rollback without a reason is refused; a viewer sees no
actions and a direct POST is refused; and the browser reports no error on the way."""

import pathlib

import pytest
from axe_playwright_python.sync_playwright import Axe

from rollout import services
from rollout.models import Rollout, RolloutState
from tests.integration.builders import flow_with_models, populate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = pathlib.Path(__file__).resolve().parents[2] / "var" / "screenshots"
FLOW_NAME = "onboarding_upsell"


@pytest.fixture
def ramping(transactional_db, trained_models):
    """Running at 5 % of a 5 → 20 → 50 plan, with exposed devices on both sides."""
    setup = flow_with_models(trained_models, name=FLOW_NAME)
    rollout = services.rollout_create(
        flow=setup["flow"],
        challengers=[{"model_id": str(setup["challenger"].pk), "stages": [5, 20, 50]}],
        actor="test",
        stage_min_minutes=0,
    )
    rollout = services.rollout_start(rollout=rollout, actor="test")
    populate(rollout, "challenger-1", 120, 12)
    populate(rollout, "baseline", 2280, 228)
    return rollout


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_actions__product_manager_advances__impact_shown_and_audit_row_appears(
    login, ramping, console_errors
):
    page = login("product_manager")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"/admin/rollout/rollout/{ramping.pk}/change/")
    assert "Only a paused rollout can resume" in page.inner_text(".rollout-actions")
    assert page.locator("button.rollout-action-resume").is_disabled()
    screenshot(page, "rollout-actions-1280")

    page.click("a.rollout-action-advance")
    page.wait_for_selector("#id_reason")
    impact = page.inner_text("section.impact")
    assert "5 % → 20 %" in impact
    assert "360" in impact  # 120 devices at 5 %, times 15 % added over 5 %
    assert "S3 $0.09/GB" in impact and "R2 $0/GB" in impact
    assert "Every gate is met." in impact
    assert page.locator("#id_confirm_name").count() == 0
    assert Axe().run(page).violations_count == 0
    screenshot(page, "confirm-advance-1280")
    page.fill("#id_reason", "no crashes at 5 %")
    page.click("input[name=confirm]")

    page.wait_for_selector(".messagelist .success")
    history = page.locator("table.history tbody tr").first.inner_text()
    assert "advance" in history and "no crashes at 5 %" in history
    assert Rollout.objects.get().arms.get().share == 2000
    assert console_errors == []


def test_actions__promote__disabled_until_the_flow_name_is_typed(login, ramping, console_errors):
    page = login("product_manager")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"/admin/rollout/rollout/{ramping.pk}/action/promote/")
    confirm = page.locator("input[name=confirm]")
    page.fill("#id_reason", "clear win")
    page.select_option("#id_conclusion", "won")

    assert confirm.is_disabled()
    page.fill("#id_confirm_name", "onboarding")
    assert confirm.is_disabled()
    page.fill("#id_confirm_name", FLOW_NAME.upper())
    assert confirm.is_disabled()
    screenshot(page, "confirm-promote-1280")
    page.fill("#id_confirm_name", FLOW_NAME)
    assert confirm.is_enabled()
    confirm.click()

    page.wait_for_selector(".messagelist .success")
    rollout = Rollout.objects.get()
    assert (rollout.state, rollout.conclusion) == (RolloutState.COMPLETED, "won")
    assert "Conclusion: Won" in page.inner_text(".rollout-summary")
    event = rollout.events.get(action="promote")
    assert "Final stage reached" in event.evidence["past_gates"]
    assert console_errors == []


def test_actions__rollback_without_a_reason__refused(login, ramping, console_errors):
    page = login("product_manager")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"/admin/rollout/rollout/{ramping.pk}/change/")
    rollback = page.locator("a.rollout-action-rollback")
    pause = page.locator("a.rollout-action-pause")
    # Roll back looks apart from pause: it undoes the rollout.
    assert rollback.evaluate("e => getComputedStyle(e).backgroundColor") != pause.evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    rollback.click()
    page.wait_for_selector("#id_reason")
    facts = page.inner_text(".impact-facts")
    assert "challenger-1 5 %" in facts and "120" in facts
    assert page.locator("#id_confirm_name").count() == 0
    screenshot(page, "confirm-rollback-1280")

    page.click("input[name=confirm]")

    page.wait_for_selector(".errorlist")
    assert "This field is required." in page.inner_text("#content-main")
    assert Rollout.objects.get().state == RolloutState.RUNNING
    page.fill("#id_reason", "conversion dropped")
    page.click("input[name=confirm]")
    page.wait_for_selector(".messagelist .success")
    assert Rollout.objects.get().state == RolloutState.ROLLED_BACK
    assert console_errors == []


def test_actions__viewer__sees_none_and_a_direct_post_is_refused(login, ramping, console_errors):
    page = login("viewer")
    page.goto(f"/admin/rollout/rollout/{ramping.pk}/change/")
    assert page.locator(".rollout-actions").count() == 0
    assert page.locator(".rollout-action").count() == 0
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")

    response = page.request.post(
        f"/admin/rollout/rollout/{ramping.pk}/action/advance/",
        form={"csrfmiddlewaretoken": token, "reason": "sneaky", "revision": str(ramping.revision)},
        headers={"X-CSRFToken": token, "Referer": page.url},
    )

    assert response.status == 403
    assert "Needs the product manager role" in response.text()  # the role, not the CSRF check
    assert Rollout.objects.get().arms.get().share == 500
    assert console_errors == []
