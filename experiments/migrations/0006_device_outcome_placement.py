"""Outcome rows carry their device's placement (when it entered its arm, its bucket), and a
device that changed arm is no longer comparable (experiments.counting). Rows and exposures
written before that rule are brought in line once."""

from django.db import migrations, models
from django.db.models import Exists, F, OuterRef, Subquery


def place_device_outcomes(apps, schema_editor):
    Exposure = apps.get_model("rollout", "Exposure")
    DeviceOutcome = apps.get_model("experiments", "DeviceOutcome")
    Exposure.objects.filter(comparable=True, arm_since__gt=F("first_exposed_at")).update(
        comparable=False
    )
    current = Exposure.objects.filter(
        rollout_id=OuterRef("rollout_id"),
        device_id=OuterRef("device_id"),
        arm=OuterRef("arm"),
        comparable=True,
    )
    DeviceOutcome.objects.exclude(Exists(current)).delete()
    DeviceOutcome.objects.update(
        arm_since=Subquery(current.values("arm_since")[:1]),
        bucket=Subquery(current.values("bucket")[:1]),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0005_outcome_event_fewer_indexes"),
        ("rollout", "0003_exposure_comparable_after_any_move"),
    ]

    operations = [
        migrations.AddField(
            model_name="deviceoutcome",
            name="arm_since",
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name="deviceoutcome",
            name="bucket",
            field=models.PositiveSmallIntegerField(null=True),
        ),
        migrations.RunPython(place_device_outcomes, migrations.RunPython.noop),
    ]
