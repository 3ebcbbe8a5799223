"""Admin of experiments: alert channels per app, and read-only analyses and alerts."""

from functools import partial

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.urls import path
from django.utils.translation import ngettext

from controlplane.admin_mixins import ReadOnlyAdmin, ServiceAdminMixin, ServiceFormMixin
from registry.models import Flow, ModelVersion
from rollout.arms import BASELINE
from rollout.metrics import PRIMARY
from rollout.models import Rollout

from .console.alert_actions import AlertStatusAdminMixin, AlertStatusChangeInline
from .console.decision_record import analysis_json_view, decision_record_view
from .console.model_page import ModelVersionPageAdmin
from .console.overview import FlowOverviewAdmin
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
class AlertAdmin(AlertStatusAdminMixin, ReadOnlyAdmin):
    list_display = ("created_at", "title", "kind", "status", "rollout", "delivery_status")
    list_filter = ("status", "kind", "rollout__flow__app")
    search_fields = ("title", "text", "rollout__id")
    list_select_related = ("rollout", "rollout__flow", "rollout__flow__app")
    inlines = [AlertDeliveryInline, AlertStatusChangeInline]
    fields = ("created_at", "kind", "status", "title", "text", "rollout", "analysis", "payload")
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

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The decision record, rendered from the stored analysis alone."""
        return decision_record_view(self, request, object_id, extra_context)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/json/",
                self.admin_site.admin_view(partial(analysis_json_view, self)),
                name="experiments_analysis_json",
            ),
            *super().get_urls(),
        ]

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


# The rollout page shows the rollout with its analyses: registered from here, the layer that
# reads both (rollout's own admin cannot import experiments).
admin.site.unregister(Rollout)
admin.site.register(Rollout, ConsoleRolloutAdmin)

# The flows overview and the model version page show rollouts and analyses next to the
# registry's flows and models: registered from here for the same reason.
admin.site.unregister(Flow)
admin.site.register(Flow, FlowOverviewAdmin)
admin.site.unregister(ModelVersion)
admin.site.register(ModelVersion, ModelVersionPageAdmin)
