"""The decision record: an analysis' page, from the stored analysis alone, agreeing with the API."""

import html
import re

import pytest

from experiments import readout
from experiments.console.decision_record import interval, number
from experiments.judge import rollout_analyze
from rollout.models import RolloutState

from .builders import populate

pytestmark = pytest.mark.django_db


def record_of(admin_client, analysis) -> str:
    response = admin_client.get(f"/admin/experiments/analysis/{analysis.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def text(markup: str) -> str:
    return html.unescape(" ".join(re.sub(r"<[^>]+>", " ", markup).split()))


def row_of(markup: str, arm: str, metric: str) -> str:
    found = re.search(
        rf'<tr [^>]*data-metric="{re.escape(metric)}" data-arm="{arm}">(.*?)</tr>', markup, re.S
    )
    assert found, f"no row for {arm} {metric}"
    return text(found.group(1))


def test_decision_record__automatic_rollback__numbers_agree_with_the_api(
    admin_client, admin_api, running
):
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 3000, 150, start=3000)
    analysis = rollout_analyze(rollout=running)  # acts: rolls back, citing the analysis
    running.refresh_from_db()
    assert running.state == RolloutState.ROLLED_BACK

    api = admin_api.get(f"/api/v1/rollouts/{running.pk}/analysis").json()
    markup = record_of(admin_client, analysis)

    page = text(markup)
    [baseline] = [a for a in api["arms"] if a["arm"] == "baseline"]
    [challenger] = [a for a in api["arms"] if a["arm"] == "challenger-1"]
    assert set(challenger["metrics"]) == {"conversion", "model_error"}
    for metric, c in challenger["metrics"].items():
        row = row_of(markup, "challenger-1", metric)
        base = baseline["metrics"][metric]
        for shown in (
            number(base["n"]), number(base["mean"]), number(c["n"]), number(c["mean"]),
            number(c["diff"]), interval(c["sequential_ci"]),
            f"{number(c['sequential_p'], 3)} / {number(c['sequential_p_adjusted'], 3)}",
            f"{number(c['p_value'], 3)} / {number(c['p_value_adjusted'], 3)}",
        ):  # fmt: skip
            assert shown in row, (metric, shown, row)
        chip = readout.chip(c)
        assert (chip.label if chip else "collecting data") in row
    assert "Worse" in row_of(markup, "challenger-1", "conversion")
    # The decision and its sentence, as the rollout page and the alerts say it.
    assert readout.recommendation(api, look=1).sentence in page
    # Data cutoff and thresholds.
    assert f"{analysis.watermark:%Y-%m-%d %H:%M:%S} UTC" in page
    thresholds = api["thresholds"]
    assert f"(alpha), shared by every challenger and metric {number(thresholds['alpha'])}" in page
    assert f"minimum devices per arm before any result {number(100)}" in page
    assert f"planned sample (devices; tunes the always-valid test) {number(4000)}" in page
    assert f"sample-ratio mismatch flagged below p {number(thresholds['srm_p_value'])}" in page
    # Who acted, and why: the judge's audit row cites this analysis.
    [event] = running.events.filter(action="rollback")
    assert event.evidence["analysis_id"] == analysis.pk
    assert f"Cohort (automatic) rollback {event.reason}" in page
    assert "Cohort rolled the rollout back automatically." in page
    # How to reproduce it: the API path, and the raw JSON of this analysis.
    assert f"GET /api/v1/rollouts/{running.pk}/analysis returns this body now" in page
    raw = admin_client.get(f"/admin/experiments/analysis/{analysis.pk}/json/").json()
    assert raw["body"] == api
    assert raw["inputs"]["arms"]["baseline"]["converted"] == 300
    # Printable: its stylesheet hides the admin's chrome on paper.
    assert "console/decision_record.css" in markup


def test_decision_record__older_analysis_without_action__says_so(admin_client, running):
    populate(running, "baseline", 50, 5)
    populate(running, "challenger-1", 50, 5, start=50)
    first = rollout_analyze(rollout=running, act=False)
    rollout_analyze(rollout=running, act=False)

    page = text(record_of(admin_client, first))

    assert "No audit row cites this analysis" in page
    assert "look 1 " in page
    assert "A newer analysis of the rollout exists" in page
    assert "Collecting data" in page
    assert "collecting data" in page  # no chip before the minimums


def test_decision_record__viewer_may_read_it(client, django_user_model, running):
    from django.contrib.auth.models import Group

    from controlplane.roles import role_groups_sync

    analysis = rollout_analyze(rollout=running, act=False)
    role_groups_sync()
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.groups.add(Group.objects.get(name="viewer"))
    client.force_login(viewer)

    assert client.get(f"/admin/experiments/analysis/{analysis.pk}/change/").status_code == 200
    assert client.get(f"/admin/experiments/analysis/{analysis.pk}/json/").status_code == 200
    assert client.get("/admin/experiments/analysis/999999/change/").status_code == 404
