"""Outcome rows now exist only for comparable devices in the arm they name: the analysis sums
them without checking the ledger. Rows written before that rule are brought in line once."""

from django.db import migrations
from django.db.models import Exists, OuterRef


def discard_stale(apps, schema_editor):
    DeviceOutcome = apps.get_model("experiments", "DeviceOutcome")
    Exposure = apps.get_model("rollout", "Exposure")
    current = Exposure.objects.filter(
        rollout_id=OuterRef("rollout_id"),
        device_id=OuterRef("device_id"),
        arm=OuterRef("arm"),
        comparable=True,
    )
    DeviceOutcome.objects.exclude(Exists(current)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0002_outcome_event_without_db_constraints"),
        ("rollout", "0002_rollout_advance_detectable_lift"),
    ]

    operations = [migrations.RunPython(discard_stale, migrations.RunPython.noop)]
