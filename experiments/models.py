"""Tables of experiments: outcome events, per-device outcomes, analyses, alerts."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from registry.models import App, Flow
from rollout.models import Rollout

from . import decisions, webhook_targets


class OutcomeEvent(models.Model):
    """What a device reported. Append-only; de-duplicated by the device's event id per app."""

    # No database constraints on this append-only, high-volume table: checking them costs
    # about a tenth of each batch's insert, and ingestion takes app and flow from the snapshot.
    # Deleting an app or flow still cascades here, through Django. Every index costs each
    # insert: app and flow are served by the composite indexes that start with them.
    app = models.ForeignKey(
        App, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    event_id = models.UUIDField()
    flow = models.ForeignKey(
        Flow, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    device_id = models.CharField(max_length=128)
    sdk_version = models.CharField(max_length=32)
    model_id = models.UUIDField(null=True, blank=True, help_text="Empty: the bundled model.")
    outcome = models.CharField(max_length=100)
    value = models.FloatField(null=True, blank=True)
    occurred_at = models.DateTimeField(help_text="When the device says it happened.")
    received_at = models.DateTimeField()  # read through event_unattributed_idx only
    signals = models.JSONField(null=True, blank=True)
    # Attribution to a rollout arm happens after ingestion, once the exposure is in the ledger.
    attributed = models.BooleanField(default=False)
    rollout = models.ForeignKey(
        Rollout, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    arm = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app", "event_id"], name="event_id_unique_per_app"),
        ]
        indexes = [
            models.Index(fields=["flow", "occurred_at"]),
            models.Index(
                fields=["received_at"],
                condition=models.Q(attributed=False),
                name="event_unattributed_idx",
            ),
        ]

    def __str__(self):
        return f"{self.outcome} from {self.device_id}"


class DeviceOutcome(models.Model):
    """One device's outcomes in one rollout, kept up to date as events are attributed.

    The analysis aggregates these per arm (n, sums, sums of squares): it never reads raw events.
    """

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="+")
    device_id = models.CharField(max_length=128)
    arm = models.CharField(max_length=64)
    # Copied from the device's exposure, so the analysis places the device (its stratum, and
    # whether its bucket is still in its arm) without a join to the ledger.
    arm_since = models.DateTimeField(null=True)
    bucket = models.PositiveSmallIntegerField(null=True)
    events = models.PositiveIntegerField(default=0)
    conversions = models.PositiveIntegerField(default=0)
    value_sum = models.FloatField(default=0.0)
    model_errors = models.PositiveIntegerField(default=0)
    ran_assigned_model = models.BooleanField(default=False)
    outcome_counts = models.JSONField(default=dict)
    last_event_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rollout", "device_id"], name="one_outcome_row_per_device_and_rollout"
            ),
        ]

    def __str__(self):
        return f"{self.device_id} in {self.arm}"


class Decision(models.TextChoices):
    CONTINUE = decisions.CONTINUE
    ADVANCE = decisions.ADVANCE
    ROLLBACK = decisions.ROLLBACK
    PROMOTE_RECOMMENDED = decisions.PROMOTE_RECOMMENDED
    SRM_ALERT = decisions.SRM_ALERT
    INSUFFICIENT_DATA = decisions.INSUFFICIENT_DATA


class Analysis(models.Model):
    """A stored snapshot of one run of the judge: its result, inputs and decision."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="analyses")
    computed_at = models.DateTimeField(db_index=True)
    watermark = models.DateTimeField(help_text="Data complete up to this time.")
    decision = models.CharField(max_length=32, choices=Decision.choices)
    action = models.CharField(max_length=32, blank=True, help_text="What the judge did.")
    srm_p_value = models.FloatField(null=True, blank=True)
    body = models.JSONField(help_text="The analysis as the API returns it.")
    inputs = models.JSONField(help_text="Sufficient statistics and thresholds, to recompute it.")
    sequential_state = models.JSONField(
        default=dict, help_text="Running always-valid p-values and intervals per arm and metric."
    )

    class Meta:
        ordering = ["-computed_at", "-id"]
        verbose_name_plural = "analyses"

    def __str__(self):
        return f"{self.rollout} at {self.computed_at:%Y-%m-%d %H:%M %Z}: {self.decision}"


class LedgerCheckpoint(models.Model):
    """How far the ledger is known complete: one row (pk 1).

    Every exposure noted before `complete_through` is in the database, and every event received
    before it has been attributed or is waiting for an exposure noted later. Moved forward by
    each catch-up that drained the exposure buffer and attributed to the end; an analysis that
    does not catch up itself takes it as its watermark.
    """

    complete_through = models.DateTimeField()

    def __str__(self):
        return f"ledger complete through {self.complete_through:%Y-%m-%d %H:%M:%S %Z}"


class ChannelKind(models.TextChoices):
    WEBHOOK = "webhook", "Webhook (Slack-compatible JSON)"
    EMAIL = "email", "E-mail"


class AlertChannel(models.Model):
    """Where an app's alerts go: a webhook URL or e-mail addresses."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="alert_channels")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=ChannelKind.choices)
    target = models.CharField(
        max_length=1000, help_text="The webhook URL, or comma-separated e-mail addresses."
    )
    enabled = models.BooleanField(default=True)

    def __str__(self):
        return f"{self.name} ({self.get_kind_display()})"

    def clean(self):
        # A webhook is posted to from inside the network: only public addresses, unless the
        # setting allows others. The send checks again, as a name may resolve elsewhere later.
        if self.kind != ChannelKind.WEBHOOK:
            return
        try:
            webhook_targets.target_check(
                self.target, allow_private=settings.ALERT_WEBHOOK_ALLOW_PRIVATE
            )
        except webhook_targets.TargetRefused as error:
            raise ValidationError({"target": str(error)}) from None
        except OSError as error:
            raise ValidationError(
                {"target": f"The webhook URL's host could not be resolved ({error})."}
            ) from None


class AlertStatus(models.TextChoices):
    """Where people are with an alert: open until someone acknowledges, dismisses (with a
    reason) or resolves it."""

    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    DISMISSED = "dismissed", "Dismissed"
    RESOLVED = "resolved", "Resolved"


class Alert(models.Model):
    """Something people must know, raised once per decision (the key makes it once)."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="alerts")
    key = models.CharField(max_length=200, unique=True, help_text="Raises it at most once.")
    kind = models.CharField(max_length=32)
    title = models.CharField(max_length=300)
    text = models.TextField()
    payload = models.JSONField(default=dict)
    analysis = models.ForeignKey(
        Analysis, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=16, choices=AlertStatus.choices, default=AlertStatus.OPEN)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.title


class AlertStatusChange(models.Model):
    """Append-only log of an alert's status: who moved it, when, and why."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="status_changes")
    before = models.CharField(max_length=16, choices=AlertStatus.choices)
    after = models.CharField(max_length=16, choices=AlertStatus.choices)
    actor = models.CharField(max_length=200)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M %Z} {self.before} \u2192 {self.after} by {self.actor}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled", "Cancelled (channel disabled)"


class AlertDelivery(models.Model):
    """One alert to one channel, with its delivery status and retries."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(AlertChannel, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["alert", "channel"], name="one_delivery_per_channel"),
        ]
        verbose_name_plural = "alert deliveries"

    def __str__(self):
        return f"{self.alert} → {self.channel}: {self.status}"
