"""Tables of the registry: customer apps, their SDK keys, flows, model versions and baselines."""

import uuid

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from .ids import time_ordered_uuid

flow_name_validator = RegexValidator(
    r"^[a-z][a-z0-9_]{0,63}$",
    "A flow name is 1-64 characters: lowercase letters, digits and underscores, "
    "starting with a letter (e.g. onboarding_upsell).",
)


class App(models.Model):
    """A customer app that ships the Cohort SDK."""

    id = models.UUIDField(
        primary_key=True, default=uuid.uuid4, editable=False, verbose_name="app id"
    )
    name = models.CharField(max_length=100, unique=True)
    bundle_identifiers = models.JSONField(
        default=list, blank=True, help_text="iOS bundle identifiers, e.g. com.example.shop."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class SdkKey(models.Model):
    """A publishable key the SDK sends: it reads the app's assignments and writes its events."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="sdk_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=24, help_text="The first characters, to recognise it.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "SDK key"

    def __str__(self):
        return f"{self.prefix}… ({self.app})"


class Flow(models.Model):
    """A decision point in an app that runs one model, with the interface its models must fit."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    app = models.ForeignKey(App, on_delete=models.PROTECT, related_name="flows")
    name = models.CharField(max_length=64, validators=[flow_name_validator])
    flow_id = models.PositiveIntegerField(
        validators=[MinValueValidator(1)], help_text="The numeric id the app's code uses."
    )
    positive_label = models.CharField(
        max_length=200,
        blank=True,
        help_text="The class label that counts as success (e.g. Purchased); "
        "empty for a regression model.",
    )
    interface = models.JSONField(
        null=True,
        blank=True,
        help_text="The inputs the SDK sends; empty until the first model is uploaded, "
        "whose inputs it then adopts.",
    )
    signals = models.JSONField(
        default=dict,
        blank=True,
        help_text="Signal catalog: input name → the first SDK version that sends it.",
    )
    attribution_window_hours = models.PositiveIntegerField(
        default=72,
        help_text="An outcome counts for a rollout arm when it happens within this many hours "
        "after the device entered the arm.",
    )
    baseline = models.ForeignKey(
        "ModelVersion",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The model every device gets unless a rollout says otherwise.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["app__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["app", "name"], name="flow_name_unique_per_app"),
            models.UniqueConstraint(fields=["app", "flow_id"], name="flow_id_unique_per_app"),
        ]

    def __str__(self):
        return f"{self.app.name} / {self.name}"


class ModelFormat(models.TextChoices):
    MLMODEL = "mlmodel", ".mlmodel"
    MLPACKAGE = "mlpackage", ".mlpackage (zip)"


class ModelVersion(models.Model):
    """One immutable Core ML file for a flow, described by what was read from it."""

    id = models.UUIDField(
        primary_key=True, default=time_ordered_uuid, editable=False, verbose_name="model id"
    )
    flow = models.ForeignKey(Flow, on_delete=models.PROTECT, related_name="model_versions")
    storage_key = models.CharField(max_length=255, editable=False)
    sha256 = models.CharField(max_length=64, editable=False)
    size = models.PositiveBigIntegerField(editable=False)
    format = models.CharField(max_length=16, choices=ModelFormat.choices, editable=False)
    original_filename = models.CharField(max_length=255, blank=True, editable=False)
    spec_version = models.PositiveIntegerField(editable=False)
    model_type = models.CharField(max_length=64, editable=False)
    description = models.JSONField(
        default=dict, editable=False, help_text="Everything read from the file."
    )
    min_sdk_version = models.CharField(max_length=32)
    max_sdk_version = models.CharField(max_length=32, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Offline metrics of training.")
    notes = models.TextField(blank=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["flow", "sha256"], name="model_bytes_unique_per_flow"),
        ]

    def __str__(self):
        return f"{self.flow.name} {self.id}"

    @property
    def file_name(self) -> str:
        return self.storage_key.rsplit("/", 1)[-1]


class BaselineChange(models.Model):
    """Append-only history of a flow's baseline: devices too old for the newest fall back along it."""

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="baseline_changes")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    previous = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    actor = models.CharField(max_length=200)
    reason = models.TextField(blank=True)
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-changed_at", "-id"]
        get_latest_by = "changed_at"

    def __str__(self):
        return f"{self.flow}: {self.previous_id} → {self.model_version_id}"
