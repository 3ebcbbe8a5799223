"""The rollout page's segments: devices exposed and model errors by SDK version, per arm."""

import html
import re
from datetime import timedelta

import pytest

from experiments.console.segments import rollout_segments
from experiments.judge import rollout_analyze
from experiments.models import DeviceOutcome
from experiments.selectors import exposures_by_sdk
from rollout.models import Exposure

from .builders import bucket_in, populate

pytestmark = pytest.mark.django_db


def old_sdk_devices(rollout, arm: str, devices: int, errors: int):
    """Devices of `arm` on SDK 1.4.2, the first `errors` of which reported a model error."""
    now = rollout.stage_started_at + timedelta(seconds=1)
    bucket = bucket_in(rollout, arm)
    Exposure.objects.bulk_create(
        Exposure(
            rollout=rollout, device_id=f"old-{arm}-{i}", arm=arm, bucket=bucket,
            sdk_version="1.4.2", first_exposed_at=now, arm_since=now,
        )
        for i in range(devices)
    )  # fmt: skip
    DeviceOutcome.objects.bulk_create(
        DeviceOutcome(
            rollout=rollout, device_id=f"old-{arm}-{i}", arm=arm, arm_since=now, bucket=bucket,
            events=1, model_errors=1, outcome_counts={"model_error": 1},
        )
        for i in range(errors)
    )  # fmt: skip


def test_segments__exposed_and_model_errors_by_sdk_version_and_arm(
    admin_client, running, django_assert_num_queries
):
    populate(running, "baseline", 40, 4, errors=1)
    populate(running, "challenger-1", 30, 3, errors=2, start=40)
    old_sdk_devices(running, "challenger-1", 10, errors=6)
    old_sdk_devices(running, "baseline", 12, errors=0)
    # A device that moved arms is exposed, but no longer compared.
    Exposure.objects.filter(device_id="baseline-0").update(comparable=False)
    DeviceOutcome.objects.filter(device_id="baseline-0").delete()

    with django_assert_num_queries(1):
        counts = exposures_by_sdk(rollout=running)
    assert counts == {
        "1.5.0": {
            "baseline": {"exposed": 40, "comparable": 39, "errored": 0},
            "challenger-1": {"exposed": 30, "comparable": 30, "errored": 2},
        },
        "1.4.2": {
            "baseline": {"exposed": 12, "comparable": 12, "errored": 0},
            "challenger-1": {"exposed": 10, "comparable": 10, "errored": 6},
        },
    }

    segments = rollout_segments(running)

    assert segments.arms == ("baseline", "challenger-1")
    assert [row.sdk_version for row in segments.rows] == ["1.5.0", "1.4.2"]  # newest first
    old = segments.rows[1]
    assert [(c.exposed, c.exposed_share, c.errored, c.error_rate) for c in old.cells] == [
        (12, "54.5%", 0, "0.0%"),
        (10, "45.5%", 6, "60.0%"),
    ]
    assert segments.expected_split == "baseline 50 %, challenger-1 50 %"

    response = admin_client.get(f"/admin/rollout/rollout/{running.pk}/change/")
    page = html.unescape(" ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split()))
    assert "Segments — Exploratory: more slices, more false positives" in page
    assert "These slices never drive a decision" in page
    assert "1.4.2 0 of 12 (0.0%) 6 of 10 (60.0%)" in page
    assert "1.5.0 40 (57.1%) 30 (42.9%) 70" in page


def test_segments__sample_ratio_finding_of_a_slice__shown_from_the_analysis(admin_client, running):
    populate(running, "baseline", 3000, 300)
    populate(running, "challenger-1", 1000, 100, start=3000)
    analysis = rollout_analyze(rollout=running, act=False)
    assert any(f["slice"] == "SDK 1.5.0" for f in analysis.body["srm"])

    [row] = rollout_segments(running).rows

    assert row.srm_flag.startswith("sample ratio mismatch (p = ")


def test_segments__nothing_exposed__says_so(admin_client, running):
    assert rollout_segments(running).empty
    response = admin_client.get(f"/admin/rollout/rollout/{running.pk}/change/")
    assert "No device has been exposed yet." in response.content.decode()
