"""Admin of rollouts for product managers: every action asks for confirmation and a reason."""

from decimal import Decimal, InvalidOperation

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from controlplane.actors import actor_for_user
from controlplane.admin_mixins import ReadOnlyAdmin, ServiceAdminMixin, ServiceFormMixin
from controlplane.errors import DomainError
from controlplane.roles import ROLLOUT_ACTION_ROLES, user_has_role
from registry.models import ModelVersion

from . import selectors, services
from .allocation import DEFAULT_STAGES
from .models import ACTIVE_STATES, Rollout, RolloutEvent, RolloutState
from .shares import percent_text

ACTIONS = {
    # action: (button label, states it applies to, service, what the confirmation page says)
    "start": ("Start", (RolloutState.DRAFT,), services.rollout_start,
              "Devices start getting each challenger at its first stage."),
    "advance": ("Advance to next stage", (RolloutState.RUNNING,), services.rollout_advance,
                "Each challenger moves to its next stage; devices that have it keep it."),
    "pause": ("Pause", (RolloutState.RUNNING,), services.rollout_pause,
              "Shares freeze: every device keeps what it has."),
    "resume": ("Resume", (RolloutState.PAUSED,), services.rollout_resume,
               "The rollout runs again from its current stage."),
    "rollback": ("Roll back", ACTIVE_STATES, services.rollout_rollback,
                 "Every device goes back to the baseline on its next poll."),
    "promote": ("Promote", ACTIVE_STATES, services.rollout_promote,
                "The challenger becomes the flow's baseline and the rollout completes."),
}  # fmt: skip


class RolloutCreateForm(ServiceFormMixin, forms.ModelForm):
    challenger = forms.ModelChoiceField(
        queryset=ModelVersion.objects.select_related("flow"), help_text="The model to roll out."
    )
    stages = forms.CharField(
        initial=", ".join(str(s) for s in DEFAULT_STAGES),
        help_text="Shares in percent, comma-separated.",
    )

    class Meta:
        model = Rollout
        fields = ("flow", "auto_advance", "stage_min_minutes", "min_devices_per_arm")

    def clean_stages(self):
        try:
            return [
                Decimal(part.strip())
                for part in self.cleaned_data["stages"].split(",")
                if part.strip()
            ]
        except InvalidOperation:
            raise forms.ValidationError(
                "Write the stages as numbers of percent, e.g. 1, 5, 20, 50, 100."
            ) from None

    def service_call(self, cleaned_data):
        return services.rollout_create(
            flow=cleaned_data["flow"],
            challengers=[
                {"model_id": str(cleaned_data["challenger"].pk), "stages": cleaned_data["stages"]}
            ],
            actor=actor_for_user(self.request.user),
            auto_advance=cleaned_data["auto_advance"],
            stage_min_minutes=cleaned_data["stage_min_minutes"],
            min_devices_per_arm=cleaned_data["min_devices_per_arm"],
        )


class ActionForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), help_text="Recorded in the audit log."
    )
    revision = forms.IntegerField(widget=forms.HiddenInput)
    arm = forms.ChoiceField(required=False, help_text="The challenger to promote.")


class RolloutEventInline(admin.TabularInline):
    model = RolloutEvent
    extra = 0
    fields = ("at", "action", "actor", "reason", "change")
    readonly_fields = fields
    can_delete = False
    verbose_name_plural = "audit log"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="change")
    def change(self, event):
        before, after = event.before.get("arms", {}), event.after.get("arms", {})
        parts = [
            f"{name}: {percent_text(before.get(name, {}).get('share', 0))} → "
            f"{percent_text(arm['share'])}"
            for name, arm in after.items()
            if before.get(name, {}).get("share") != arm.get("share")
        ]
        state = f"{event.before.get('state', '—')} → {event.after.get('state')}"
        return "; ".join([state, *parts])


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active (running or paused)"), *RolloutState.choices]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(state__in=ACTIVE_STATES)
        if self.value():
            return queryset.filter(state=self.value())
        return queryset


@admin.register(Rollout)
class RolloutAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = ("__str__", "flow", "state_badge", "arms_summary", "started_at", "created_by")
    list_filter = (StateFilter, "flow__app", "flow")
    search_fields = ("id", "flow__name", "flow__app__name", "created_by")
    list_select_related = ("flow", "flow__app")
    inlines = [RolloutEventInline]
    change_form_template = "admin/rollout/rollout/change_form.html"
    readonly_fields = (
        "id", "flow", "state_badge", "baseline", "arms_table", "exposure_table",
        "rollback_progress", "auto_advance", "stage_min_minutes", "min_devices_per_arm",
        "advance_detectable_lift",
        "planned_sample", "revision", "created_by", "created_at", "started_at",
        "stage_started_at", "ended_at",
    )  # fmt: skip

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("arms__model_version")

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = RolloutCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("flow", "challenger", "stages", "auto_advance", "stage_min_minutes",
                    "min_devices_per_arm")  # fmt: skip
        return self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def has_add_permission(self, request):
        return user_has_role(request.user, ROLLOUT_ACTION_ROLES["create"])

    def has_change_permission(self, request, obj=None):
        return False  # state changes only through the confirmed actions

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="state")
    def state_badge(self, obj):
        colours = {
            RolloutState.DRAFT: "#777", RolloutState.RUNNING: "#1a7f37",
            RolloutState.PAUSED: "#9a6700", RolloutState.COMPLETED: "#0969da",
            RolloutState.ROLLED_BACK: "#cf222e",
        }  # fmt: skip
        return format_html(
            "<strong class='rollout-state' style='color:{}'>{}</strong>",
            colours.get(obj.state, "#000"),
            obj.get_state_display(),
        )

    @admin.display(description="challengers")
    def arms_summary(self, obj):
        return ", ".join(f"{arm.name} {percent_text(arm.share)}" for arm in obj.arms.all())

    @admin.display(description="challengers")
    def arms_table(self, obj):
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><strong>{}</strong></td>"
            "<td>{}</td></tr>",
            (
                (
                    arm.name,
                    arm.model_version_id,
                    " → ".join(percent_text(s) for s in arm.stages),
                    percent_text(arm.share),
                    f"buckets {arm.segment_start} to {arm.segment_end}",
                )
                for arm in obj.arms.all()
            ),
        )
        return format_html(
            "<table class='rollout-arms'><thead><tr><th>arm</th><th>model</th><th>stages</th>"
            "<th>share now</th><th>segment</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="exposed devices")
    def exposure_table(self, obj):
        counts = selectors.rollout_exposure_counts(rollout=obj)
        if not counts:
            return "none yet"
        return format_html_join(
            ", ",
            "{}: {} ({} comparable)",
            ((arm, c["exposed"], c["comparable"]) for arm, c in sorted(counts.items())),
        )

    @admin.display(description="rollback progress")
    def rollback_progress(self, obj):
        progress = selectors.rollout_rollback_progress(rollout=obj)
        if progress is None:
            return "—"
        share = progress["share_confirmed"]
        return format_html(
            "{} of {} devices that had a challenger confirmed the baseline{}",
            progress["confirmed_baseline"],
            progress["challenger_devices"],
            f" ({share:.0%})" if share is not None else "",
        )

    def allowed_actions(self, request, obj) -> list[tuple[str, str]]:
        return [
            (name, label)
            for name, (label, states, _, _) in ACTIONS.items()
            if obj.state in states and user_has_role(request.user, ROLLOUT_ACTION_ROLES[name])
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "rollout_actions": self.allowed_actions(request, obj) if obj else [],
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path(
                "<uuid:rollout_id>/action/<str:action>/",
                self.admin_site.admin_view(self.action_view),
                name="rollout_rollout_action",
            ),
            *super().get_urls(),
        ]

    def action_view(self, request, rollout_id, action):
        """Confirm an action with a reason (GET), then perform it through its service (POST)."""
        rollout = get_object_or_404(Rollout.objects.select_related("flow"), pk=rollout_id)
        if action not in ACTIONS:
            raise PermissionDenied
        label, states, service, consequence = ACTIONS[action]
        # admin_view only checks is_staff: the role is checked here, like the API does.
        if not user_has_role(request.user, ROLLOUT_ACTION_ROLES[action]):
            raise PermissionDenied
        change_url = reverse("admin:rollout_rollout_change", args=[rollout.pk])
        arms = [(arm.name, arm.name) for arm in rollout.arms.all()]
        form = ActionForm(
            request.POST if request.method == "POST" else None,
            initial={"revision": rollout.revision, "arm": arms[0][0] if arms else ""},
        )
        form.fields["arm"].choices = arms
        if action != "promote" or len(arms) < 2:
            del form.fields["arm"]
        if request.method == "POST" and form.is_valid():
            kwargs = {}
            if "arm" in form.fields:
                kwargs["arm"] = form.cleaned_data["arm"]
            try:
                service(
                    rollout=rollout,
                    actor=actor_for_user(request.user),
                    reason=form.cleaned_data["reason"],
                    expected_revision=form.cleaned_data["revision"],
                    **kwargs,
                )
            except DomainError as error:
                self.message_user(request, error.detail, messages.ERROR)
            else:
                self.message_user(request, f"{label}: done.", messages.SUCCESS)
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{label}: {rollout}",
            "rollout": rollout,
            "action_label": label,
            "consequence": consequence,
            "form": form,
            "opts": self.model._meta,
            "change_url": change_url,
            "allowed": rollout.state in states,
        }
        return TemplateResponse(request, "admin/rollout/confirm_action.html", context)


@admin.register(RolloutEvent)
class RolloutEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "rollout", "action", "actor", "reason")
    list_filter = ("action", "rollout__flow")
    search_fields = ("actor", "reason", "rollout__id")
    list_select_related = ("rollout", "rollout__flow", "rollout__flow__app")
