"""Tables of rollouts: the rollout and its arms, the append-only audit log, and the exposure ledger."""

from django.db import models
from django.db.models import Q

from registry.ids import time_ordered_uuid
from registry.models import Flow, ModelVersion

from .shares import percent_text


class RolloutState(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    ROLLED_BACK = "rolled_back", "Rolled back"


ACTIVE_STATES = (RolloutState.RUNNING, RolloutState.PAUSED)
ENDED_STATES = (RolloutState.COMPLETED, RolloutState.ROLLED_BACK)


class RolloutConclusion(models.TextChoices):
    """What ending a rollout concluded (CONSOLE.md, page 4), recorded by whoever ended it."""

    WON = "won", "Won"
    LOST = "lost", "Lost"
    INCONCLUSIVE = "inconclusive", "Inconclusive"
    STOPPED_EARLY = "stopped_early", "Stopped early"
    INVALID = "invalid", "Invalid"


class Rollout(models.Model):
    """A challenger (or several) on one flow, rolled out in stages next to the baseline."""

    id = models.UUIDField(primary_key=True, default=time_ordered_uuid, editable=False)
    flow = models.ForeignKey(Flow, on_delete=models.PROTECT, related_name="rollouts")
    baseline = models.ForeignKey(
        ModelVersion,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The flow's baseline when the rollout started; empty: the bundled model.",
    )
    state = models.CharField(
        max_length=16, choices=RolloutState.choices, default=RolloutState.DRAFT
    )
    salt = models.CharField(max_length=64, editable=False)
    auto_advance = models.BooleanField(default=False)
    stage_min_minutes = models.PositiveIntegerField(default=60)
    min_devices_per_arm = models.PositiveIntegerField(default=100)
    advance_detectable_lift = models.FloatField(
        default=0.5,
        help_text="Automatic advancing waits until each arm has the devices to detect a relative "
        "change this large in the primary metric (0.5 = a model that halves conversion).",
    )
    planned_sample = models.PositiveIntegerField(
        default=5000, help_text="Total devices planned; tunes the sequential test."
    )
    guardrails = models.JSONField(default=list, blank=True)
    revision = models.PositiveIntegerField(
        default=0, help_text="Bumped on every change: a stale revision gets a 409."
    )
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    conclusion = models.CharField(
        max_length=16,
        choices=RolloutConclusion.choices,
        blank=True,
        help_text="What ending it concluded; empty while it has not ended.",
    )
    conclusion_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["flow"],
                condition=Q(state__in=["running", "paused"]),
                name="one_active_rollout_per_flow",
            ),
        ]

    def __str__(self):
        return f"{self.flow} rollout {str(self.id)[:8]} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES


class RolloutArm(models.Model):
    """A challenger: its model, stage plan and current share inside its own bucket segment."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="arms")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=64)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    stages = models.JSONField(help_text="Shares of the plan, in basis points (100 = 1 %).")
    stage_index = models.SmallIntegerField(
        default=-1, help_text="Index into stages of the current stage; -1 before start."
    )
    share = models.PositiveIntegerField(default=0, help_text="Current share, in basis points.")
    segment_start = models.PositiveIntegerField()
    segment_end = models.PositiveIntegerField()

    class Meta:
        ordering = ["rollout", "position"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "name"], name="arm_name_unique_per_rollout"),
        ]

    def __str__(self):
        return f"{self.name} ({percent_text(self.share)})"

    @property
    def share_now(self) -> int:
        """The share devices get now, in basis points: none after a rollback, whatever stage
        the arm had reached (`share` and `stage_index` keep how far it went)."""
        return 0 if self.rollout.state == RolloutState.ROLLED_BACK else self.share


class RolloutEvent(models.Model):
    """Append-only audit log: every change of state or share, who made it, and why."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=32)
    actor = models.CharField(max_length=200)
    reason = models.TextField(blank=True)
    before = models.JSONField(default=dict)
    after = models.JSONField(default=dict)
    evidence = models.JSONField(
        default=dict, blank=True, help_text="What justified an automatic action (the analysis)."
    )
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M %Z} {self.action} by {self.actor}"


class Exposure(models.Model):
    """A device's membership of a rollout arm, recorded the first time it is assigned that arm.

    The analysis counts every exposed device, including the ones that never report anything.
    """

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="exposures")
    device_id = models.CharField(max_length=128)
    arm = models.CharField(max_length=64)
    bucket = models.PositiveSmallIntegerField()
    sdk_version = models.CharField(max_length=32)
    first_exposed_at = models.DateTimeField()
    arm_since = models.DateTimeField(help_text="When the device entered its current arm.")
    comparable = models.BooleanField(
        default=True, help_text="False once the device changed arm (a share grew or was lowered)."
    )
    baseline_confirmed_at = models.DateTimeField(
        null=True, blank=True, help_text="After a rollback: when the device confirmed the baseline."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rollout", "device_id"], name="one_exposure_per_device_and_rollout"
            ),
        ]
        indexes = [models.Index(fields=["rollout", "arm"])]

    def __str__(self):
        return f"{self.device_id} in {self.arm}"
