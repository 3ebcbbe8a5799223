"""The console's history reads: analyses over time, thinned in SQL, and stage changes from the
audit log."""

import pytest

from experiments.judge import rollout_analyze
from experiments.models import Analysis
from experiments.selectors import analysis_history, rollout_stage_changes
from rollout import services

from .builders import populate, started_rollout

pytestmark = pytest.mark.django_db

LOOKS = 13


def kept_looks(looks: int, limit: int) -> list[int]:
    """Looks (from 1) an even thinning keeps: the first at or after each of `limit` evenly
    spaced positions from the first to the last."""
    if looks <= limit:
        return list(range(1, looks + 1))
    return sorted({1 - (-k * (looks - 1) // (limit - 1)) for k in range(limit)})


@pytest.fixture
def judged(running):
    """A rollout judged `LOOKS` times, with 50 more devices per arm before each look."""
    for look in range(LOOKS):
        populate(running, "baseline", 50, 5, start=50 * look)
        populate(running, "challenger-1", 50, 3, start=50 * look)
        rollout_analyze(rollout=running, act=False, catch_up=False)
    return running


def test_analysis_history__few_looks__every_look_oldest_first_from_the_bodies(
    judged, django_assert_num_queries
):
    with django_assert_num_queries(1):
        history = analysis_history(rollout=judged)

    stored = list(Analysis.objects.filter(rollout=judged).order_by("computed_at", "id"))
    assert [point["look"] for point in history] == list(range(1, LOOKS + 1))
    assert [point["at"] for point in history] == [a.computed_at for a in stored]
    last, body = history[-1], stored[-1].body
    assert last["decision"] == body["decision"]
    assert last["interval_level"] == body["thresholds"]["interval_level"]
    arms = {arm["arm"]: arm for arm in last["arms"]}
    assert arms["baseline"]["exposed"] == arms["challenger-1"]["exposed"] == 50 * LOOKS
    assert arms["challenger-1"]["share"] == pytest.approx(0.5)
    conversion = next(a for a in body["arms"] if a["arm"] == "challenger-1")["metrics"][
        "conversion"
    ]
    assert arms["challenger-1"]["metrics"]["conversion"] == {
        "diff": conversion["diff"],
        "sequential_ci": conversion["sequential_ci"],
        "direction": conversion["direction"],
        "insufficient": conversion["insufficient"],
    }
    assert [p["arms"][0]["exposed"] for p in history] == [50 * (i + 1) for i in range(LOOKS)]


@pytest.mark.parametrize("limit", [2, 3, 5, 12])
def test_analysis_history__more_looks_than_the_limit__thinned_evenly_first_and_last_kept(
    judged, limit, django_assert_num_queries
):
    with django_assert_num_queries(1):
        history = analysis_history(rollout=judged, limit=limit)

    looks = [point["look"] for point in history]
    assert looks == kept_looks(LOOKS, limit)
    assert len(looks) == limit
    assert looks[0] == 1 and looks[-1] == LOOKS
    stored = list(
        Analysis.objects.filter(rollout=judged)
        .order_by("computed_at", "id")
        .values_list("computed_at", flat=True)
    )
    assert [point["at"] for point in history] == [stored[look - 1] for look in looks]


def test_analysis_history__one_or_no_analysis__kept_as_it_is(running):
    assert analysis_history(rollout=running) == []

    rollout_analyze(rollout=running, act=False, catch_up=False)

    (only,) = analysis_history(rollout=running, limit=1)
    assert only["look"] == 1


def test_analysis_history__other_rollouts__not_mixed_in(judged, sdk_setup):
    services.rollout_rollback(rollout=judged, actor="test")
    other = started_rollout(sdk_setup, [5])
    rollout_analyze(rollout=other, act=False, catch_up=False)

    assert len(analysis_history(rollout=other)) == 1
    assert len(analysis_history(rollout=judged)) == LOOKS


def test_rollout_stage_changes__a_rollout_lived__labels_from_the_audit_log(
    sdk_setup, django_assert_num_queries
):
    rollout = started_rollout(sdk_setup, [5, 20, 50])
    rollout = services.rollout_advance(rollout=rollout, actor="test")
    services.rollout_pause(rollout=rollout, actor="test")  # not a change of shares
    rollout = services.rollout_resume(rollout=rollout, actor="test")
    rollout = services.rollout_set_share(rollout=rollout, arm="challenger-1", share=1000, actor="t")
    services.rollout_rollback(rollout=rollout, actor="test")

    with django_assert_num_queries(1):
        changes = rollout_stage_changes(rollout=rollout)

    assert [label for _, label in changes] == [
        "start 5 %",
        "\u2192 20 %",
        "\u2192 10 %",
        "rolled back",
    ]
    times = [at for at, _ in changes]
    assert times == sorted(times)
    assert times[0] == rollout.events.get(action="start").at
