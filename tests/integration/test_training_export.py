"""Training data from the field: events exported as a CSV that train_model reads and trains on."""

import io
import json
import uuid
from datetime import UTC, datetime, time, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from experiments.exports import training_csv_write
from registry import services as registry_services
from registry import training
from rollout.cache import assignment_cache

pytestmark = pytest.mark.django_db


def send(client, key, events):
    assignment_cache.clear()
    response = client.post(
        "/api/v1/sdk/events",
        data=json.dumps({"device_id": "IDFV-1", "sdk_version": "1.5.0", "events": events}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 200
    assert response.json()["rejected"] == []
    return response.json()["accepted"]


def event(outcome, signals, ts):
    return {
        "id": str(uuid.uuid4()),
        "flow": "onboarding_upsell",
        "outcome": outcome,
        "ts": ts.isoformat(),
        "signals": signals,
    }


@pytest.fixture
def field_data(client, sdk_setup):
    """200 demo outcomes yesterday, plus events the export must leave out or skip."""
    yesterday = timezone.now().date() - timedelta(days=1)
    noon = datetime.combine(yesterday, time(12), tzinfo=UTC)
    rows = training.demo_rows(200, seed=7)
    events = [
        event(
            row["Outcome"],
            {"Battery Level": row["Battery Level"], "Phone Charging?": row["Phone Charging?"]},
            noon + timedelta(seconds=index),
        )
        for index, row in enumerate(rows)
    ]
    late = noon + timedelta(hours=1)  # after the demo rows, so the export's order is known
    extra = [
        # A model failure carries no label to learn from.
        event("model_error", {"Battery Level": 0.5, "Phone Charging?": True}, late),
        # Three days earlier: outside the range exported.
        event("Purchased", {"Battery Level": 0.7, "Phone Charging?": False}, noon - timedelta(3)),
        # No signals at all, and one missing a column: nothing to write for them.
        event("Dismissed", None, late),
        event("Dismissed", {"Battery Level": 0.1}, late),
        # Text is no numeric feature: the signal is left out, the event kept.
        event("Purchased", {"Battery Level": 0.8, "Phone Charging?": True, "net": "wifi"}, late),
    ]
    assert send(client, sdk_setup["key"], events + extra) == len(events) + len(extra)
    labels = [row["Outcome"] for row in rows] + ["Purchased"]
    return {**sdk_setup, "day": yesterday, "labels": labels}


def test_export__round_trip__read_trained_and_accepted_by_the_flow(field_data, tmp_path):
    output = tmp_path / "field.csv"
    stdout, stderr = io.StringIO(), io.StringIO()

    call_command(
        "export_training_csv",
        str(field_data["flow"].pk),
        "--since",
        field_data["day"].isoformat(),
        "--until",
        field_data["day"].isoformat(),
        "--output",
        str(output),
        stdout=stdout,
        stderr=stderr,
    )

    lines = output.read_text().splitlines()
    assert lines[0] == "Outcome,Battery Level,Phone Charging?"
    names, x, y = training.read_outcome_csv(output)
    assert names == ["Battery Level", "Phone Charging?"]
    assert y == field_data["labels"]
    assert {value for _, value in x} == {0.0, 1.0}
    assert "Wrote 201 rows" in stdout.getvalue()
    assert "Left out signals that carry text: net" in stderr.getvalue()
    assert "Skipped 1 events" in stderr.getvalue()

    result = training.train_outcome_classifier(names, x, y, seed=0, n_estimators=10)
    version, created = registry_services.model_version_upload(
        flow=field_data["flow"], file=io.BytesIO(result.model_bytes), filename="field.mlmodel"
    )
    assert created is True
    assert result.report["features"] == ["Battery Level", "Phone Charging?"]
    assert result.report["n_train"] + result.report["n_test"] == 201
    assert version.flow_id == field_data["flow"].pk


def test_export__outcomes_filter__only_those_labels(field_data, tmp_path):
    output = tmp_path / "purchases.csv"

    call_command(
        "export_training_csv",
        str(field_data["flow"].pk),
        since=field_data["day"].isoformat(),
        until=field_data["day"].isoformat(),
        output=str(output),
        outcomes="Purchased,model_error",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )

    _, _, labels = training.read_outcome_csv(output)
    assert labels.count("model_error") == 1
    assert labels.count("Purchased") == field_data["labels"].count("Purchased")
    assert "Dismissed" not in labels


def test_export__chosen_signals__only_those_columns_and_events_having_them(field_data):
    out = io.StringIO()
    start = datetime.combine(field_data["day"], time.min, tzinfo=UTC)

    result = training_csv_write(
        flow=field_data["flow"],
        start=start,
        end=start + timedelta(days=1),
        out=out,
        outcome_column="Label",
        signals=["Battery Level"],
    )

    out.seek(0)
    names, x, labels = training.read_outcome_csv(out, outcome_column="Label")
    assert names == ["Battery Level"]
    assert (result.rows, result.skipped_missing, result.columns) == (202, 0, ["Battery Level"])
    assert len(x) == len(labels) == 202


def test_export__no_events_in_range__command_error(field_data, tmp_path):
    with pytest.raises(CommandError, match="nothing to train on"):
        call_command(
            "export_training_csv",
            str(field_data["flow"].pk),
            since="2020-01-01",
            until="2020-01-31",
            output=str(tmp_path / "empty.csv"),
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"since": "yesterday", "until": "2026-01-01"}, "is not a date"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "--until is before --since"),
    ],
)
def test_export__bad_dates__command_error(field_data, tmp_path, args, message):
    with pytest.raises(CommandError, match=message):
        call_command(
            "export_training_csv",
            str(field_data["flow"].pk),
            output=str(tmp_path / "x.csv"),
            **args,
        )


def test_export__unknown_flow__command_error(db, tmp_path):
    with pytest.raises(CommandError, match="No flow"):
        call_command(
            "export_training_csv",
            str(uuid.uuid4()),
            since="2026-01-01",
            until="2026-01-02",
            output=str(tmp_path / "x.csv"),
        )
