"""Rollouts through the management API: the state machine, roles, the audit log, and 409s."""

import pytest

from rollout.models import Rollout, RolloutEvent

pytestmark = pytest.mark.django_db


def create(client, setup, **extra):
    body = {
        "flow": str(setup["flow"].pk),
        "challengers": [{"model_id": str(setup["challenger"].pk)}],
        **extra,
    }
    return client.post("/api/v1/rollouts", body, format="json")


def act(client, rollout_id, action, **body):
    return client.post(f"/api/v1/rollouts/{rollout_id}/{action}", body, format="json")


def test_rollout_create__default_plan__draft_with_stages_and_segment(ds_api, sdk_setup):
    response = create(ds_api, sdk_setup)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["state"] == "draft"
    assert body["arms"][0]["name"] == "challenger-1"
    assert body["arms"][0]["stages"] == [1, 5, 20, 50, 100]
    assert body["arms"][0]["share"] == 0
    assert body["arms"][0]["segment"] == [0, 10_000]
    assert body["audit_log"][0]["action"] == "create"
    assert body["audit_log"][0]["actor"].startswith("token:data_scientist/")


def test_rollout_lifecycle__start_advance_pause_resume_promote__audited(pm_api, sdk_setup):
    rollout_id = create(pm_api, sdk_setup).json()["id"]

    started = act(pm_api, rollout_id, "start", reason="go")
    advanced = act(pm_api, rollout_id, "advance")
    paused = act(pm_api, rollout_id, "pause", reason="weekend")
    resumed = act(pm_api, rollout_id, "resume")
    promoted = act(pm_api, rollout_id, "promote", reason="clear win")

    assert started.json()["arms"][0]["share"] == 0.01
    assert started.json()["baseline_model_id"] == str(sdk_setup["baseline"].pk)
    assert advanced.json()["arms"][0]["share"] == 0.05
    assert paused.json()["state"] == "paused"
    assert resumed.json()["state"] == "running"
    assert promoted.json()["state"] == "completed"
    sdk_setup["flow"].refresh_from_db()
    assert sdk_setup["flow"].baseline_id == sdk_setup["challenger"].pk
    log = promoted.json()["audit_log"]
    assert [e["action"] for e in log] == [
        "create",
        "start",
        "advance",
        "pause",
        "resume",
        "promote",
    ]
    assert log[1]["reason"] == "go"
    assert log[2]["before"]["arms"]["challenger-1"]["share"] == 100
    assert log[2]["after"]["arms"]["challenger-1"]["share"] == 500


def test_rollout_start__second_active_rollout_on_flow__409(pm_api, sdk_setup):
    first = create(pm_api, sdk_setup).json()["id"]
    second = create(pm_api, sdk_setup).json()["id"]
    act(pm_api, first, "start")

    response = act(pm_api, second, "start")

    assert response.status_code == 409
    assert response.json()["error"] == "rollout_active"


@pytest.mark.parametrize(
    ("action", "state_after_setup"),
    [("advance", "paused"), ("resume", "running"), ("pause", "draft"), ("start", "running")],
)
def test_rollout_transition__not_allowed_from_state__409(
    pm_api, sdk_setup, action, state_after_setup
):
    rollout_id = create(pm_api, sdk_setup).json()["id"]
    if state_after_setup != "draft":
        act(pm_api, rollout_id, "start")
    if state_after_setup == "paused":
        act(pm_api, rollout_id, "pause")

    response = act(pm_api, rollout_id, action)

    assert response.status_code == 409
    assert response.json()["error"] == "invalid_state"


def test_rollout_advance__at_final_stage__409(pm_api, sdk_setup):
    rollout_id = create(
        pm_api,
        sdk_setup,
        challengers=[{"model_id": str(sdk_setup["challenger"].pk), "stages": [10, 50]}],
    ).json()["id"]
    act(pm_api, rollout_id, "start")
    act(pm_api, rollout_id, "advance")

    response = act(pm_api, rollout_id, "advance")

    assert response.status_code == 409
    assert response.json()["error"] == "final_stage"


def test_rollout_action__stale_revision__409(pm_api, sdk_setup):
    body = create(pm_api, sdk_setup).json()
    act(pm_api, body["id"], "start")

    response = act(pm_api, body["id"], "pause", revision=body["revision"])

    assert response.status_code == 409
    assert response.json()["error"] == "stale_revision"


def test_rollback__data_scientist_may_stop_harm(ds_api, pm_api, sdk_setup):
    rollout_id = create(pm_api, sdk_setup).json()["id"]
    act(pm_api, rollout_id, "start")

    response = act(ds_api, rollout_id, "rollback", reason="crash reports")

    assert response.status_code == 200
    assert response.json()["state"] == "rolled_back"
    assert response.json()["rollback_progress"] == {
        "challenger_devices": 0,
        "confirmed_baseline": 0,
        "share_confirmed": None,
    }


@pytest.mark.parametrize(
    ("role", "action", "status"),
    [
        ("viewer", "start", 403),
        ("viewer", "rollback", 403),
        ("data_scientist", "advance", 403),
        ("data_scientist", "promote", 403),
        ("data_scientist", "pause", 200),
        (None, "pause", 401),
    ],
)
def test_rollout_action__by_role(make_api_client, pm_api, sdk_setup, role, action, status):
    rollout_id = create(pm_api, sdk_setup).json()["id"]
    if action != "start":
        act(pm_api, rollout_id, "start")

    response = act(make_api_client(role), rollout_id, action)

    assert response.status_code == status


def test_rollout_create__challenger_is_baseline__400(pm_api, sdk_setup):
    response = pm_api.post(
        "/api/v1/rollouts",
        {
            "flow": str(sdk_setup["flow"].pk),
            "challengers": [{"model_id": str(sdk_setup["baseline"].pk)}],
        },
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["error"] == "challenger_is_baseline"


def test_rollout_create__model_of_another_flow__404(pm_api, sdk_setup, trained_models):
    from registry import services

    other = services.flow_create(app=sdk_setup["flow"].app, name="other", flow_id=2)
    foreign, _ = services.model_version_upload(
        flow=other, file=trained_models["three_signals"].open("rb"), filename="x.mlmodel"
    )

    response = pm_api.post(
        "/api/v1/rollouts",
        {"flow": str(sdk_setup["flow"].pk), "challengers": [{"model_id": str(foreign.pk)}]},
        format="json",
    )

    assert response.status_code == 404
    assert response.json()["error"] == "model_not_found"


@pytest.mark.parametrize(
    ("stages", "fragment"),
    [([5, 1], "must be larger"), ([0, 10], "more than 0"), ([1, 101], "at most 100")],
)
def test_rollout_create__bad_stage_plan__400_says_why(pm_api, sdk_setup, stages, fragment):
    response = create(
        pm_api,
        sdk_setup,
        challengers=[{"model_id": str(sdk_setup["challenger"].pk), "stages": stages}],
    )

    assert response.status_code == 400
    assert fragment in response.json()["detail"]


def test_rollout_get__unknown__404(pm_api):
    response = pm_api.get("/api/v1/rollouts/0b6f1c2e-7a55-4c1e-9a77-1f0d3a1b9c44")

    assert response.status_code == 404
    assert response.json()["error"] == "rollout_not_found"


def test_rollout_list__filters_by_state(pm_api, sdk_setup):
    first = create(pm_api, sdk_setup).json()["id"]
    create(pm_api, sdk_setup)
    act(pm_api, first, "start")

    response = pm_api.get("/api/v1/rollouts", {"state": "running"})

    assert [r["id"] for r in response.json()] == [first]


def test_audit_log__is_append_only_rows(pm_api, sdk_setup):
    rollout_id = create(pm_api, sdk_setup).json()["id"]
    act(pm_api, rollout_id, "start")
    act(pm_api, rollout_id, "rollback")

    rollout = Rollout.objects.get(pk=rollout_id)
    assert RolloutEvent.objects.filter(rollout=rollout).count() == 3
    assert rollout.revision == 2
