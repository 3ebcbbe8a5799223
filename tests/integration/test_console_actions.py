"""The rollout page's actions (CONSOLE.md, page 4): buttons from the state machine with the
reason a disabled one is disabled, the impact on each confirmation, the flow's name typed to go
past a gate or against the recommendation (checked on the server, said in the audit row), the
conclusion of an ending, alerts acknowledged / dismissed (with a reason) / resolved, 0 % after a
rollback everywhere, and the audit log as CSV."""

import csv
import html as html_lib
import io
import re

import pytest
from django.contrib.auth.models import Group

from controlplane.actors import SYSTEM
from controlplane.errors import Conflict, InvalidInput
from controlplane.roles import role_groups_sync
from experiments.judge import rollout_analyze
from experiments.models import Alert, AlertStatus, AlertStatusChange
from experiments.services import alert_status_change
from rollout import services
from rollout.downloads import bytes_text
from rollout.models import RolloutConclusion, RolloutState

from .builders import populate, started_rollout

pytestmark = pytest.mark.django_db


def text_of(response) -> str:
    return " ".join(response.content.decode().split())


def action_url(rollout, action: str) -> str:
    return f"/admin/rollout/rollout/{rollout.pk}/action/{action}/"


def page_url(rollout) -> str:
    return f"/admin/rollout/rollout/{rollout.pk}/change/"


@pytest.fixture
def client_with_role(client, django_user_model):
    def log_in(role: str):
        role_groups_sync()
        user = django_user_model.objects.create_user(role, password="pw-secret-1", is_staff=True)
        user.groups.add(Group.objects.get(name=role))
        client.force_login(user)
        return client

    return log_in


@pytest.fixture
def ramping(sdk_setup):
    """Running at 5 % of a 5 → 20 → 50 plan, with no minimum time in the stage."""
    return started_rollout(sdk_setup, [5, 20, 50], stage_min_minutes=0)


def buttons_of(html: str) -> dict[str, str]:
    """Each action on the page: "enabled", or the reason it is disabled."""
    found = {}
    for name in re.findall(r'<a class="rollout-action rollout-action-(\w+)', html):
        found[name] = "enabled"
    for name, reason in re.findall(
        r'<button type="button" class="rollout-action rollout-action-(\w+)[^"]*" disabled '
        r'aria-describedby="[^"]+">[^<]*</button> <span class="action-reason" id="[^"]+">'
        r"([^<]*)</span>",
        html,
    ):
        found[name] = reason
    return found


# --- Buttons from the state machine ----------------------------------------------------------


def test_buttons__product_manager_running__each_action_shown_the_others_say_why(
    client_with_role, ramping
):
    html = text_of(client_with_role("product_manager").get(page_url(ramping)))

    assert buttons_of(html) == {
        "start": "Only a draft can start",
        "advance": "enabled",
        "pause": "enabled",
        "resume": "Only a paused rollout can resume",
        "promote": "enabled",
        "rollback": "enabled",
    }
    assert "rollout-action-rollback rollout-action-danger" in html
    assert "rollout-action-pause rollout-action-danger" not in html


def test_buttons__last_stage__advance_disabled_with_why(admin_client, running):
    html = text_of(admin_client.get(page_url(running)))

    assert buttons_of(html)["advance"] == "Already at its last stage"
    response = admin_client.get(action_url(running, "advance"))
    assert "Already at its last stage" in text_of(response)
    assert 'name="confirm"' not in text_of(response)


def test_buttons__data_scientist__advance_needs_the_product_manager_role(client_with_role, ramping):
    client = client_with_role("data_scientist")
    html = text_of(client.get(page_url(ramping)))

    buttons = buttons_of(html)
    assert buttons["advance"] == "Needs the product manager role"
    assert buttons["promote"] == "Needs the product manager role"
    assert buttons["pause"] == buttons["rollback"] == "enabled"
    response = client.post(action_url(ramping, "advance"), {"reason": "x", "revision": 1})
    assert response.status_code == 403
    assert "Needs the product manager role" in text_of(response)
    assert ramping.arms.get().share == 500


def test_buttons__viewer__no_actions_and_a_direct_post_refused(client_with_role, ramping):
    client = client_with_role("viewer")
    html = text_of(client.get(page_url(ramping)))

    assert buttons_of(html) == {}
    assert "rollout-actions" not in html
    for action in ("advance", "pause", "rollback", "promote"):
        response = client.post(
            action_url(ramping, action), {"reason": "x", "revision": ramping.revision}
        )
        assert response.status_code == 403
    ramping.refresh_from_db()
    assert ramping.state == RolloutState.RUNNING
    assert ramping.events.count() == 2  # create, start


def test_buttons__wrong_state_post__a_message_not_an_error(admin_client, ramping):
    response = admin_client.post(
        action_url(ramping, "resume"), {"reason": "x", "revision": ramping.revision}, follow=True
    )

    assert response.status_code == 200
    assert "Resume: Only a paused rollout can resume (it is running now); nothing was" in text_of(
        response
    )
    assert ramping.events.count() == 2


# --- Impact on the confirmation pages ---------------------------------------------------------


def test_rollback_confirmation__share_devices_and_the_model_they_return_to(
    admin_client, ramping, sdk_setup
):
    populate(ramping, "challenger-1", 40, 4)

    html = text_of(admin_client.get(action_url(ramping, "rollback")))

    assert "<dt>Share now</dt> <dd>challenger-1 5 %</dd>" in html
    assert "<dt>Devices exposed to the challenger</dt> <dd>40</dd>" in html
    assert f"<dd>model {sdk_setup['baseline'].pk}, b.mlmodel (the flow" in html
    assert 'name="confirm_name"' not in html  # roll back is fast: no name to type
    assert "button-danger" in html


def test_advance_confirmation__downloads_bytes_and_egress_estimated(
    admin_client, ramping, sdk_setup, settings
):
    settings.EGRESS_PRICE_PER_GB = 2.5
    populate(ramping, "challenger-1", 100, 10)
    populate(ramping, "baseline", 1900, 190)
    size = sdk_setup["challenger"].size
    devices = 100 * (2000 - 500) // 500  # exposed times added share over current share

    html = text_of(admin_client.get(action_url(ramping, "advance")))

    assert devices == 300
    row = re.search(r"<th scope=\"row\">challenger-1</th>(.*?)</tr>", html).group(1)
    cells = [html_lib.unescape(cell) for cell in re.findall(r"<td[^>]*>([^<]*)</td>", row)]
    assert cells[0] == "5 % → 20 %"
    assert cells[1] == "300"
    assert cells[2] == bytes_text(300 * size)
    expected = [300 * size / 1e9 * price for price in (2.5, 0.09, 0.0)]
    shown = [f"${c:,.2f}" if c == 0 or c >= 0.01 else "< $0.01" for c in expected]
    assert cells[3:] == shown
    assert "at $2.5/GB (configured)" in html and "S3 $0.09/GB" in html and "R2 $0/GB" in html
    assert "100 devices exposed to challenger-1 at 5 % \u00d7 15 % added / 5 %." in html
    assert "Every gate is met." in html
    assert 'name="confirm_name"' not in html


def test_advance_confirmation__no_exposure_of_the_arm__estimated_from_all_devices(
    admin_client, ramping
):
    populate(ramping, "baseline", 1000, 100)

    html = text_of(admin_client.get(action_url(ramping, "advance")))

    assert "1,000 devices exposed in this rollout \u00d7 15 % added (5 % → 20 %)." in html
    assert re.search(r"<td[^>]*>150</td>", html)


# --- The flow's name typed past a gate or against the recommendation --------------------------


def test_advance_past_an_unmet_gate__name_required_on_the_server_and_said_in_the_audit(
    admin_client, sdk_setup
):
    rollout = started_rollout(sdk_setup, [5, 20], stage_min_minutes=60)
    url = action_url(rollout, "advance")

    html = text_of(admin_client.get(url))
    assert "Minimum time in stage" in html
    assert 'data-expected="onboarding_upsell"' in html

    for typed in (None, "onboarding", "ONBOARDING_UPSELL"):
        data = {"reason": "enough", "revision": rollout.revision}
        if typed is not None:
            data["confirm_name"] = typed
        response = admin_client.post(url, data)
        assert response.status_code == 200, typed
        assert "errorlist" in text_of(response)
    assert rollout.arms.get().share == 500

    response = admin_client.post(
        url,
        {"reason": "enough", "revision": rollout.revision, "confirm_name": " onboarding_upsell "},
    )

    assert response.status_code == 302
    assert rollout.arms.get().share == 2000
    event = rollout.events.get(action="advance")
    assert event.evidence["past_gates"] == ["Minimum time in stage"]
    assert event.evidence["against_recommendation"] is False
    assert event.reason == "[Past unmet gates: Minimum time in stage] enough"
    assert event.actor == "user:admin"


def test_advance_with_every_gate_met__no_name_and_the_audit_says_nothing_was_passed(
    admin_client, ramping
):
    response = admin_client.post(
        action_url(ramping, "advance"), {"reason": "on plan", "revision": ramping.revision}
    )

    assert response.status_code == 302
    event = ramping.events.get(action="advance")
    assert event.reason == "on plan"
    assert event.evidence == {"past_gates": [], "against_recommendation": False}


def test_advance_against_a_rollback_recommendation__name_required_and_evidence(
    admin_client, sdk_setup
):
    rollout = started_rollout(sdk_setup, [50, 100], stage_min_minutes=0, planned_sample=4000)
    populate(rollout, "baseline", 3000, 300)
    populate(rollout, "challenger-1", 3000, 150)
    analysis = rollout_analyze(rollout=rollout, act=False)
    assert analysis.decision == "rollback"
    url = action_url(rollout, "advance")

    html = text_of(admin_client.get(url))
    assert "This goes against the recommendation." in html
    assert "Roll back recommended" in html
    refused = admin_client.post(url, {"reason": "I insist", "revision": rollout.revision})
    assert "errorlist" in text_of(refused)

    admin_client.post(
        url,
        {"reason": "I insist", "revision": rollout.revision, "confirm_name": "onboarding_upsell"},
    )

    event = rollout.events.get(action="advance")
    assert event.evidence["against_recommendation"] is True
    assert event.evidence["recommendation"] == "rollback"
    assert event.evidence["analysis_id"] == analysis.pk
    assert event.evidence["past_gates"] == []
    assert event.reason == "[Against the recommendation (Roll back recommended)] I insist"


def test_promote__always_takes_the_name_and_records_the_conclusion(admin_client, ramping):
    url = action_url(ramping, "promote")
    html = text_of(admin_client.get(url))
    assert "data-needs-name" in html
    assert "5 % → 100 %" in html
    assert "Final stage reached" in html  # promoting at 5 % skips the plan
    base = {"reason": "clear win", "revision": ramping.revision, "conclusion": "won"}

    assert "errorlist" in text_of(admin_client.post(url, base))
    admin_client.post(
        url, {**base, "confirm_name": "onboarding_upsell", "conclusion_note": "+3 pp"}
    )

    ramping.refresh_from_db()
    assert ramping.state == RolloutState.COMPLETED
    assert (ramping.conclusion, ramping.conclusion_note) == (RolloutConclusion.WON, "+3 pp")
    event = ramping.events.get(action="promote")
    assert event.evidence["conclusion"] == "won"
    assert "Final stage reached" in event.evidence["past_gates"]


# --- Roll back: a reason, a conclusion; shown in lists, on the page and in the API ------------


def test_rollback__without_a_reason__refused(admin_client, ramping):
    response = admin_client.post(
        action_url(ramping, "rollback"),
        {"reason": "", "revision": ramping.revision, "conclusion": "lost"},
    )

    assert response.status_code == 200
    assert "This field is required." in text_of(response)
    ramping.refresh_from_db()
    assert ramping.state == RolloutState.RUNNING


def test_rollback__conclusion_shown_in_the_list_and_on_the_page_and_share_zero(
    admin_client, ramping
):
    admin_client.post(
        action_url(ramping, "rollback"),
        {
            "reason": "conversion dropped",
            "revision": ramping.revision,
            "conclusion": "lost",
            "conclusion_note": "-2 pp on conversion",
        },
    )
    ramping.refresh_from_db()
    assert ramping.conclusion == RolloutConclusion.LOST

    listing = text_of(admin_client.get("/admin/rollout/rollout/"))
    assert "challenger-1 0 %" in listing
    assert "Lost: -2 pp on conversion" in listing
    page = text_of(admin_client.get(page_url(ramping)))
    assert "Conclusion: Lost — -2 pp on conversion" in page


def test_conclusion__defaults_and_validation(sdk_setup):
    judged = started_rollout(sdk_setup, [5])
    assert services.rollout_rollback(rollout=judged, actor=SYSTEM).conclusion == "lost"
    manual = started_rollout(sdk_setup, [5])
    assert services.rollout_rollback(rollout=manual, actor="user:pm").conclusion == (
        "stopped_early"
    )
    other = started_rollout(sdk_setup, [5])
    with pytest.raises(InvalidInput) as refused:
        services.rollout_promote(rollout=other, actor="user:pm", conclusion="great")
    assert refused.value.code == "invalid_conclusion"
    other.refresh_from_db()
    assert other.state == RolloutState.RUNNING


def test_conclusion__the_judge_rolls_back__lost_on_the_page(admin_client, running):
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 3000, 150)

    analysis = rollout_analyze(rollout=running, act=True)

    running.refresh_from_db()
    assert analysis.action == "rolled_back"
    assert running.conclusion == RolloutConclusion.LOST
    assert running.events.get(action="rollback").evidence["conclusion"] == "lost"
    assert "Conclusion: Lost" in text_of(admin_client.get(page_url(running)))


def test_api__rolled_back__share_zero_stages_kept_conclusion_given(pm_api, ramping):
    response = pm_api.post(
        f"/api/v1/rollouts/{ramping.pk}/rollback",
        {"reason": "crash", "conclusion": "invalid", "conclusion_note": "bad build"},
        format="json",
    )

    assert response.status_code == 200, response.json()
    arm = response.json()["arms"][0]
    assert (arm["share"], arm["share_basis_points"]) == (0, 0)
    assert arm["stages"] == [5.0, 20.0, 50.0]
    assert arm["stage_index"] == 0
    assert response.json()["conclusion"] == "invalid"
    assert response.json()["conclusion_note"] == "bad build"
    listed = pm_api.get("/api/v1/rollouts").json()
    assert listed[0]["arms"][0]["share"] == 0


def test_api__unknown_conclusion__400_nothing_changed(pm_api, ramping):
    response = pm_api.post(
        f"/api/v1/rollouts/{ramping.pk}/promote", {"conclusion": "great"}, format="json"
    )

    assert response.status_code == 400
    assert "conclusion" in response.json()["fields"]
    ramping.refresh_from_db()
    assert ramping.state == RolloutState.RUNNING


# --- A change made meanwhile -----------------------------------------------------------------


def test_concurrent_change__the_form_carries_the_revision__a_message_on_the_page(
    admin_client, ramping
):
    html = text_of(admin_client.get(action_url(ramping, "pause")))
    seen = re.search(r'name="revision" value="(\d+)"', html).group(1)
    services.rollout_advance(rollout=ramping, actor="user:someone")  # meanwhile

    response = admin_client.post(
        action_url(ramping, "pause"), {"reason": "look", "revision": seen}, follow=True
    )

    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == page_url(ramping)
    assert "The rollout changed since you loaded it" in text_of(response)
    ramping.refresh_from_db()
    assert ramping.state == RolloutState.RUNNING


# --- The audit log: newest first, as CSV -----------------------------------------------------


def test_audit_csv__newest_first_with_state_and_analysis(admin_client, ramping):
    services.rollout_advance(
        rollout=ramping, actor="user:pm", reason="=HYPERLINK(1)", evidence={"analysis_id": 7}
    )
    services.rollout_rollback(rollout=ramping, actor="user:pm", reason='bad, "really"')

    page = text_of(admin_client.get(page_url(ramping)))
    assert "Download audit log (CSV)" in page
    response = admin_client.get(f"/admin/rollout/rollout/{ramping.pk}/audit.csv")

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == [
        "at", "rollout", "actor", "action", "reason", "before state", "after state", "analysis id",
    ]  # fmt: skip
    assert [row[3] for row in rows[1:]] == ["rollback", "advance", "start", "create"]
    assert rows[1][4:7] == ['bad, "really"', "running", "rolled_back"]
    assert rows[2][4] == "'=HYPERLINK(1)"  # not a formula in a spreadsheet
    assert rows[2][7] == "7"


def test_audit_admin__newest_first_and_exported_as_csv(admin_client, ramping):
    services.rollout_pause(rollout=ramping, actor="user:pm", reason="look")

    listing = text_of(admin_client.get("/admin/rollout/rolloutevent/"))
    positions = [listing.index(f">{action}<") for action in ("pause", "start", "create")]
    assert positions == sorted(positions)
    ids = [str(pk) for pk in ramping.events.values_list("pk", flat=True)]
    response = admin_client.post(
        "/admin/rollout/rolloutevent/", {"action": "download_csv", "_selected_action": ids}
    )
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert [row[3] for row in rows[1:]] == ["pause", "start", "create"]


# --- Alerts: open, acknowledged, dismissed with a reason, resolved ----------------------------


@pytest.fixture
def alert(ramping):
    return Alert.objects.create(
        rollout=ramping, key=f"{ramping.pk}:test", kind="rollback", title="Rolled back", text="x"
    )


def test_alert_dismissal__needs_a_reason__then_logged(admin_client, alert, ramping):
    url = f"/admin/experiments/alert/{alert.pk}/status/"
    page = text_of(admin_client.get(page_url(ramping)))
    assert f'action="{url}"' in page and "alert-status-open" in page

    refused = admin_client.post(
        url, {"status": "dismissed", "reason": " ", "next": page_url(ramping)}, follow=True
    )
    assert "Say why you dismiss this alert" in text_of(refused)
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN

    admin_client.post(url, {"status": "dismissed", "reason": "known flaky webhook"})

    alert.refresh_from_db()
    assert alert.status == AlertStatus.DISMISSED
    change = AlertStatusChange.objects.get(alert=alert)
    assert (change.before, change.after) == ("open", "dismissed")
    assert (change.actor, change.reason) == ("user:admin", "known flaky webhook")
    assert change.at is not None
    page = text_of(admin_client.get(page_url(ramping)))
    assert "Dismissed by user:admin at" in page and "known flaky webhook" in page


def test_alert_status__moves_and_refusals(alert):
    acknowledged = alert_status_change(alert=alert, status="acknowledged", actor="user:pm")
    assert acknowledged.status == AlertStatus.ACKNOWLEDGED
    resolved = alert_status_change(alert=alert, status="resolved", actor="user:pm")
    assert resolved.status == AlertStatus.RESOLVED
    with pytest.raises(Conflict):
        alert_status_change(alert=alert, status="dismissed", actor="user:pm", reason="late")
    assert list(alert.status_changes.values_list("after", flat=True)) == [
        "acknowledged", "resolved",
    ]  # fmt: skip


def test_alert_status__viewer_refused(client_with_role, alert):
    client = client_with_role("viewer")

    response = client.post(f"/admin/experiments/alert/{alert.pk}/status/", {"status": "resolved"})

    assert response.status_code == 403
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN


def test_alert_admin__dismiss_action_asks_for_a_reason(admin_client, alert):
    listing = "/admin/experiments/alert/"
    selected = {"action": "dismiss_selected", "_selected_action": [str(alert.pk)]}

    asked = admin_client.post(listing, selected)
    assert "Dismiss 1 alert?" in text_of(asked)
    admin_client.post(listing, {**selected, "apply": "Dismiss", "reason": ""})
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN
    admin_client.post(listing, {**selected, "apply": "Dismiss", "reason": "duplicate"})

    alert.refresh_from_db()
    assert alert.status == AlertStatus.DISMISSED
    assert alert.status_changes.get().reason == "duplicate"
