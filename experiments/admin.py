"""Admin of experiments: alert channels per app, and read-only analyses and alerts."""

import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join
from django.utils.translation import ngettext

from controlplane.admin_mixins import ReadOnlyAdmin, ServiceAdminMixin, ServiceFormMixin
from rollout.arms import BASELINE
from rollout.metrics import PRIMARY
from rollout.models import Rollout

from .console.rollout_admin import ConsoleRolloutAdmin
from .models import Alert, AlertChannel, AlertDelivery, Analysis
from .services import channel_create, channel_delete, channel_update


class AlertChannelForm(ServiceFormMixin, forms.ModelForm):
    class Meta:
        model = AlertChannel
        fields = ("app", "name", "kind", "target", "enabled")

    def service_call(self, cleaned_data):
        given = {name: cleaned_data[name] for name in self.Meta.fields}
        if self.instance._state.adding:
            self.saved = channel_create(**given)
        else:
            self.saved = channel_update(channel=self.instance, **given)
        return self.saved.channel


@admin.register(AlertChannel)
class AlertChannelAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = AlertChannelForm
    list_display = ("name", "app", "kind", "target", "enabled")
    list_filter = ("app", "kind", "enabled")
    search_fields = ("name", "target", "app__name")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)  # the form's service saved it
        if count := form.saved.cancelled:
            self.message_user(
                request,
                ngettext(
                    "%(count)d pending alert to this channel was cancelled.",
                    "%(count)d pending alerts to this channel were cancelled.",
                    count,
                )
                % {"count": count},
                messages.SUCCESS,
            )
        if count := form.saved.backfilled:
            self.message_user(
                request,
                ngettext(
                    "Sending %(count)d alert of the last %(hours)d hours to this channel.",
                    "Sending %(count)d alerts of the last %(hours)d hours to this channel.",
                    count,
                )
                % {"count": count, "hours": settings.ALERT_BACKFILL_HOURS},
                messages.SUCCESS,
            )

    def service_delete(self, obj):
        channel_delete(channel=obj)


class AlertDeliveryInline(admin.TabularInline):
    model = AlertDelivery
    extra = 0
    fields = ("channel", "status", "attempts", "last_error", "sent_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "title", "kind", "rollout", "delivery_status")
    list_filter = ("kind", "rollout__flow__app")
    search_fields = ("title", "text", "rollout__id")
    list_select_related = ("rollout", "rollout__flow", "rollout__flow__app")
    inlines = [AlertDeliveryInline]
    fields = ("created_at", "kind", "title", "text", "rollout", "analysis", "payload")
    readonly_fields = fields

    @admin.display(description="deliveries")
    def delivery_status(self, alert):
        return ", ".join(f"{d.channel.name}: {d.status}" for d in alert.deliveries.all()) or "none"


@admin.register(Analysis)
class AnalysisAdmin(ReadOnlyAdmin):
    list_display = (
        "computed_at",
        "rollout",
        "decision",
        "action",
        "primary_summary",
        "srm_p_value",
    )
    list_filter = ("decision", "rollout__flow__app", "rollout__flow")
    search_fields = ("rollout__id",)
    list_select_related = ("rollout", "rollout__flow", "rollout__flow__app")
    date_hierarchy = "computed_at"
    fields = ("computed_at", "watermark", "rollout", "decision", "action", "result", "inputs_block")
    readonly_fields = fields

    @admin.display(description=f"{PRIMARY} (challenger vs {BASELINE})")
    def primary_summary(self, analysis):
        parts = []
        for arm in analysis.body.get("arms", []):
            metric = arm.get("metrics", {}).get(PRIMARY, {})
            if metric.get("mean") is None:
                continue
            text = f"{arm['arm']} {metric['mean']:.2%} (n={metric.get('n')})"
            if metric.get("lift") is not None:
                text += f", lift {metric['lift']:+.1%}"
            parts.append(text)
        return "; ".join(parts) or "—"

    @admin.display(description="result")
    def result(self, analysis):
        body = analysis.body
        rows = []
        for arm in body.get("arms", []):
            for metric, values in arm.get("metrics", {}).items():
                rows.append(
                    (
                        arm["arm"],
                        metric,
                        values.get("n"),
                        _fmt(values.get("mean")),
                        _fmt(values.get("diff")),
                        _interval(values.get("sequential_ci")),
                        _fmt(values.get("p_value")),
                        "yes" if values.get("significant") else "",
                    )
                )
        table = format_html_join("", "<tr>" + "<td>{}</td>" * 8 + "</tr>", rows)
        reasons = format_html_join("", "<li>{}</li>", ((r,) for r in body.get("reasons", [])))
        return format_html(
            "<p><strong>{}</strong></p><ul>{}</ul><table class='analysis-result'><thead><tr>"
            "<th>arm</th><th>metric</th><th>n</th><th>mean</th><th>diff</th>"
            "<th>always-valid interval</th><th>p (fixed)</th><th>significant</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            body.get("decision"),
            reasons,
            table,
        )

    @admin.display(description="inputs (to recompute it)")
    def inputs_block(self, analysis):
        return format_html("<pre>{}</pre>", json.dumps(analysis.inputs, indent=2))


def _fmt(value):
    return "—" if value is None else f"{value:.4g}"


def _interval(value):
    return "—" if not value else f"[{value[0]:+.4g}, {value[1]:+.4g}]"


# The rollout page shows the rollout with its analyses: registered from here, the layer that
# reads both (rollout's own admin cannot import experiments).
admin.site.unregister(Rollout)
admin.site.register(Rollout, ConsoleRolloutAdmin)
