"""A product manager runs a rollout from the admin, in a real browser: confirm, reason, audit."""

import pytest

from rollout.models import Rollout, RolloutState
from tests.integration.builders import flow_with_models

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def models(transactional_db, trained_models):
    return flow_with_models(trained_models)


def confirm(page, action: str, reason: str):
    page.click(f"a.rollout-action-{action}")
    page.wait_for_selector("#id_reason")
    page.fill("#id_reason", reason)
    if page.locator("#id_confirm_name").count():  # past an unmet gate: the flow's name
        page.fill("#id_confirm_name", "onboarding_upsell")
    page.click("input[name=confirm]")
    page.wait_for_selector(".messagelist")


def test_rollout_admin__product_manager_runs_the_whole_lifecycle(login, models):
    page = login("product_manager")
    page.goto(f"/admin/rollout/rollout/add/?flow={models['flow'].pk}")
    page.check(f"input[name=challenger][value='{models['challenger'].pk}']")
    page.fill("#id_stages", "1, 5, 20")
    page.click("button[name=step][value=review]")
    page.click("button[name=step][value=create]")
    page.wait_for_selector(".messagelist")
    rollout = Rollout.objects.get()
    page.goto(f"/admin/rollout/rollout/{rollout.pk}/change/")

    confirm(page, "start", "ship it to 1 %")
    assert "1 %" in page.inner_text("table.shares")
    confirm(page, "advance", "no crashes at 1 %")
    assert "5 %" in page.inner_text("table.shares")
    confirm(page, "pause", "checking a support ticket")
    assert page.inner_text(".rollout-summary .state-badge") == "Paused"
    confirm(page, "resume", "ticket unrelated")
    confirm(page, "rollback", "conversion dropped")

    rollout.refresh_from_db()
    assert rollout.state == RolloutState.ROLLED_BACK
    audit = page.inner_text("#content")
    assert "conversion dropped" in audit
    assert "user:product_manager" in audit
    assert [e.action for e in rollout.events.all()] == [
        "create", "start", "advance", "pause", "resume", "rollback",
    ]  # fmt: skip


def test_rollout_admin__bad_stage_plan__error_in_form(login, models):
    page = login("product_manager")
    page.goto(f"/admin/rollout/rollout/add/?flow={models['flow'].pk}")
    page.fill("#id_stages", "20, 5")
    page.click("button[name=step][value=review]")

    page.wait_for_selector(".errornote, .errorlist")
    assert "must be larger" in page.inner_text("#content")
    assert Rollout.objects.count() == 0


def test_rollout_admin__data_scientist__may_stop_but_not_advance(login, models):
    from rollout import services

    rollout = services.rollout_create(
        flow=models["flow"],
        challengers=[{"model_id": str(models["challenger"].pk)}],
        actor="test",
    )
    services.rollout_start(rollout=rollout, actor="test")
    page = login("data_scientist")
    page.goto(f"/admin/rollout/rollout/{rollout.pk}/change/")

    assert page.locator("a.rollout-action-rollback").count() == 1
    assert page.locator("a.rollout-action-pause").count() == 1
    assert page.locator("a.rollout-action-advance").count() == 0
    response = page.goto(f"/admin/rollout/rollout/{rollout.pk}/action/advance/")
    assert response.status == 403


def test_rollout_admin__stale_confirmation_page__refused_not_applied(login, models):
    from rollout import services

    rollout = services.rollout_create(
        flow=models["flow"],
        challengers=[{"model_id": str(models["challenger"].pk)}],
        actor="test",
    )
    services.rollout_start(rollout=rollout, actor="test")
    page = login("product_manager")
    page.goto(f"/admin/rollout/rollout/{rollout.pk}/action/advance/")
    page.fill("#id_reason", "looks fine")
    page.fill("#id_confirm_name", "onboarding_upsell")  # the stage's minimum time is not met
    services.rollout_advance(rollout=rollout, actor="someone else")  # meanwhile
    page.click("input[name=confirm]")

    page.wait_for_selector(".messagelist .error")
    assert "changed since you loaded it" in page.inner_text(".messagelist")
    assert Rollout.objects.get().arms.get().share == 500
