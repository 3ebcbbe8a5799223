"""The rollout page reads the latest analysis through experiments.readout: what it shows."""

import pytest

from experiments import readout
from experiments.judge import rollout_analyze
from experiments.models import Analysis
from rollout.models import RolloutState

from .builders import populate

pytestmark = pytest.mark.django_db


def page_of(admin_client, rollout) -> str:
    response = admin_client.get(f"/admin/rollout/rollout/{rollout.pk}/change/")
    assert response.status_code == 200
    return " ".join(response.content.decode().split())


def test_rollout_page__harmful_challenger__recommendation_and_worse_chip_agree(
    admin_client, running
):
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 3000, 150)
    analysis = rollout_analyze(rollout=running, act=False)

    html = page_of(admin_client, running)

    said = readout.recommendation(analysis.body, look=1)
    assert said.title == "Roll back recommended"
    assert said.sentence in html
    assert "chip-bad" in html and "Worse" in html
    assert "chip-good" not in html
    assert "analysis 1 at" in html or "Intervals are always-valid" in html


def test_rollout_page__before_any_analysis__says_so_and_shows_no_chip(admin_client, running):
    html = page_of(admin_client, running)

    assert "Not analysed yet" in html
    assert 'class="chip' not in html


def test_rollout_page__srm__blocking_banner_hides_chips(admin_client, running):
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 1000, 100, start=3000)
    analysis = rollout_analyze(rollout=running, act=False)
    assert analysis.body["srm"], "the fixture must produce a sample-ratio mismatch"

    html = page_of(admin_client, running)

    assert "Do not act on these results" in html
    assert "chip-hidden" in html
    assert "chip-good" not in html and "chip-bad" not in html


def test_rollout_page__rolled_back__set_share_zero_and_propagation(admin_client, running):
    from rollout import services

    populate(running, "challenger-1", 10, 1)
    rolled_back = services.rollout_rollback(rollout=running, actor="pm", reason="bad")
    assert rolled_back.state == RolloutState.ROLLED_BACK

    html = page_of(admin_client, rolled_back)

    assert "<td>0 %</td>" in html
    assert "Rollback propagation: 0 of 10 devices" in html
    assert Analysis.objects.count() == 0
