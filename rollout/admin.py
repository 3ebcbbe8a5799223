"""Admin of rollouts for product managers: every action asks for confirmation and a reason."""

import csv
from collections.abc import Callable
from dataclasses import dataclass, field

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from controlplane.actors import actor_for_user
from controlplane.admin_mixins import (
    ReadOnlyAdmin,
    ReadOnlyInline,
    ServiceAdminMixin,
)
from controlplane.errors import DomainError
from controlplane.roles import ROLLOUT_ACTION_ROLES, Role, user_has_role

from . import selectors, services
from .models import ACTIVE_STATES, Rollout, RolloutConclusion, RolloutEvent, RolloutState
from .shares import percent_text


@dataclass(frozen=True)
class RolloutAction:
    """One action of the state machine, as the admin offers it."""

    label: str  # the button
    states: tuple[str, ...]  # the states it applies to
    service: Callable
    consequence: str  # what the confirmation page says will happen
    not_now: str  # why the button is disabled in any other state
    danger: bool = False  # styled apart: it undoes the rollout
    ends: bool = False  # ending the rollout records a conclusion


ACTIONS = {
    "start": RolloutAction(
        "Start", (RolloutState.DRAFT,), services.rollout_start,
        "Devices start getting each challenger at its first stage.",
        "Only a draft can start"),
    "advance": RolloutAction(
        "Advance to next stage", (RolloutState.RUNNING,), services.rollout_advance,
        "Each challenger moves to its next stage; devices that have it keep it.",
        "Only a running rollout can advance"),
    "pause": RolloutAction(
        "Pause", (RolloutState.RUNNING,), services.rollout_pause,
        "Shares freeze: every device keeps what it has.",
        "Only a running rollout can pause"),
    "resume": RolloutAction(
        "Resume", (RolloutState.PAUSED,), services.rollout_resume,
        "The rollout runs again from its current stage.",
        "Only a paused rollout can resume"),
    "promote": RolloutAction(
        "Promote", ACTIVE_STATES, services.rollout_promote,
        "The challenger becomes the flow's baseline and the rollout completes.",
        "Only a running or paused rollout can be promoted", ends=True),
    "rollback": RolloutAction(
        "Roll back", ACTIVE_STATES, services.rollout_rollback,
        "Every device goes back to the baseline on its next poll.",
        "Only a running or paused rollout can roll back", danger=True, ends=True),
}  # fmt: skip

# Whoever holds none of these roles (a viewer) is shown no actions at all.
ACTION_TAKERS = frozenset().union(*(ROLLOUT_ACTION_ROLES[name] for name in ACTIONS))


@dataclass(frozen=True)
class ActionButton:
    name: str
    label: str
    disabled_reason: str  # empty: it may be done now
    danger: bool


def _role_needed(roles: frozenset[Role]) -> str:
    # Admins hold every role: the sentence names the roles people are given for the work.
    names = [role.label.lower() for role in Role if role in roles and role != Role.ADMIN]
    return f"Needs the {' or '.join(names) or 'admin'} role"


def action_refusal(user, rollout: Rollout, name: str) -> str:
    """Why `user` may not take action `name` on the rollout now; empty when they may."""
    action = ACTIONS[name]
    if rollout.state not in action.states:
        return action.not_now
    if name == "advance" and all(a.stage_index >= len(a.stages) - 1 for a in rollout.arms.all()):
        return "Already at its last stage"
    if not user_has_role(user, ROLLOUT_ACTION_ROLES[name]):
        return _role_needed(ROLLOUT_ACTION_ROLES[name])
    return ""


def action_buttons(user, rollout: Rollout) -> list[ActionButton]:
    """Every action of the state machine, enabled or disabled with its reason beside it
    (CONSOLE.md, principle 4); none for someone who may take no action at all."""
    if not user_has_role(user, ACTION_TAKERS):
        return []
    return [
        ActionButton(name, action.label, action_refusal(user, rollout, name), action.danger)
        for name, action in ACTIONS.items()
    ]


@dataclass
class ActionCheck:
    """What a confirmation page shows beyond the consequence, and what confirming then takes.

    The rollout's own admin knows no analysis, so it checks nothing more; the console's
    (`experiments.console.actions`) adds the impact, the unmet gates and the recommendation.
    """

    impact: object = None  # shown by the confirmation page
    name_required: bool = False  # the flow's name must be typed to confirm
    why_name: list[str] = field(default_factory=list)  # why, one sentence each
    evidence: dict = field(default_factory=dict)  # added to the audit row's evidence
    audit_note: str = ""  # put before the reason in the audit row


class ActionForm(forms.Form):
    """A confirmation: the reason, the revision the person saw, and what the action asks for
    besides (the arm to promote, the conclusion of an ending, the flow's name typed)."""

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), help_text="Recorded in the audit log."
    )
    revision = forms.IntegerField(widget=forms.HiddenInput)
    arm = forms.ChoiceField(required=False, help_text="The challenger to promote.")
    conclusion = forms.ChoiceField(
        choices=RolloutConclusion.choices, help_text="What this rollout concluded."
    )
    conclusion_note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Conclusion note",
        help_text="Shown with the conclusion in the rollout list and on its page.",
    )
    confirm_name = forms.CharField(label="Type the flow's name to confirm")

    def __init__(self, *args, rollout: Rollout, action: str, check: ActionCheck, **kwargs):
        super().__init__(*args, **kwargs)
        self.flow_name = rollout.flow.name
        arms = [(arm.name, arm.name) for arm in rollout.arms.all()]
        self.fields["arm"].choices = arms
        if action != "promote" or len(arms) < 2:
            del self.fields["arm"]
        if not ACTIONS[action].ends:
            del self.fields["conclusion"], self.fields["conclusion_note"]
        if check.name_required:
            field_ = self.fields["confirm_name"]
            field_.help_text = f"Type {self.flow_name} to confirm."
            # The page's script enables the button once the name matches; the check is here.
            field_.widget.attrs.update(
                {"autocomplete": "off", "spellcheck": "false", "data-expected": self.flow_name}
            )
        else:
            del self.fields["confirm_name"]

    def clean_confirm_name(self):
        typed = self.cleaned_data["confirm_name"].strip()
        if typed != self.flow_name:
            raise forms.ValidationError(
                f"Type the flow's name, {self.flow_name}, exactly to go ahead.",
                code="name_mismatch",
            )
        return typed


class RolloutEventInline(ReadOnlyInline):
    model = RolloutEvent
    fields = ("at", "action", "actor", "reason", "change")
    readonly_fields = fields
    verbose_name_plural = "audit log"

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
    list_display = (
        "__str__", "flow", "state_badge", "arms_summary", "conclusion_text", "started_at",
        "created_by",
    )  # fmt: skip
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
        "stage_started_at", "ended_at", "conclusion_text",
    )  # fmt: skip

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("arms__model_version")

    # Rollouts are created by the console's form (experiments.console.create_form), which
    # shows the power estimate before anything starts.

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields

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
        return ", ".join(f"{arm.name} {percent_text(arm.share_now)}" for arm in obj.arms.all())

    @admin.display(description="conclusion")
    def conclusion_text(self, obj):
        if not obj.conclusion:
            return "—"
        if not obj.conclusion_note:
            return obj.get_conclusion_display()
        return format_html(
            "<span title='{}'>{}: {}</span>",
            obj.conclusion_note,
            obj.get_conclusion_display(),
            obj.conclusion_note[:80] + ("…" if len(obj.conclusion_note) > 80 else ""),
        )

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
                    percent_text(arm.share_now),
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
        """The actions `request.user` may take on the rollout now: (name, label)."""
        return [
            (button.name, button.label)
            for button in action_buttons(request.user, obj)
            if not button.disabled_reason
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
            path(
                "<uuid:rollout_id>/audit.csv",
                self.admin_site.admin_view(self.audit_csv_view),
                name="rollout_rollout_audit_csv",
            ),
            *super().get_urls(),
        ]

    def action_check(self, request, rollout: Rollout, action: str) -> ActionCheck:
        """What confirming `action` shows and takes beyond a reason; nothing more here."""
        return ActionCheck()

    def action_view(self, request, rollout_id, action):
        """Confirm an action with a reason (GET), then perform it through its service (POST).

        An action the state does not allow now shows why, and a POST of it changes nothing;
        a change made meanwhile (the revision moved) is a message on the rollout's page.
        """
        rollout = get_object_or_404(
            Rollout.objects.select_related("flow", "baseline").prefetch_related(
                "arms__model_version"
            ),
            pk=rollout_id,
        )
        if action not in ACTIONS:
            raise PermissionDenied
        spec = ACTIONS[action]
        # admin_view only checks is_staff: the role is checked here, like the API does.
        if not user_has_role(request.user, ROLLOUT_ACTION_ROLES[action]):
            raise PermissionDenied(
                f"{_role_needed(ROLLOUT_ACTION_ROLES[action])} to {spec.label.lower()}."
            )
        change_url = reverse("admin:rollout_rollout_change", args=[rollout.pk])
        refusal = action_refusal(request.user, rollout, action)
        if refusal and request.method == "POST":
            self.message_user(
                request,
                f"{spec.label}: {refusal} (it is {rollout.get_state_display().lower()} now); "
                "nothing was changed.",
                messages.WARNING,
            )
            return HttpResponseRedirect(change_url)
        check = ActionCheck() if refusal else self.action_check(request, rollout, action)
        form = ActionForm(
            request.POST if request.method == "POST" else None,
            rollout=rollout,
            action=action,
            check=check,
            initial=self.action_initial(rollout, action, check),
        )
        if request.method == "POST" and form.is_valid():
            return self._action_perform(request, rollout, action, form, check, change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{spec.label}: {rollout}",
            "rollout": rollout,
            "action": action,
            "action_label": spec.label,
            "danger": spec.danger,
            "consequence": spec.consequence,
            "check": check,
            "form": form,
            "opts": self.model._meta,
            "change_url": change_url,
            "allowed": not refusal,
            "refusal": refusal,
        }
        return TemplateResponse(request, "admin/rollout/confirm_action.html", context)

    def action_initial(self, rollout: Rollout, action: str, check: ActionCheck) -> dict:
        arm = rollout.arms.first()
        default = RolloutConclusion.WON if action == "promote" else RolloutConclusion.STOPPED_EARLY
        return {"revision": rollout.revision, "arm": arm.name if arm else "", "conclusion": default}

    def _action_perform(self, request, rollout, action, form, check, change_url):
        spec = ACTIONS[action]
        data = form.cleaned_data
        kwargs = {}
        if "arm" in form.fields:
            kwargs["arm"] = data["arm"]
        if spec.ends:
            kwargs["conclusion"] = data["conclusion"]
            kwargs["conclusion_note"] = data["conclusion_note"]
        if check.evidence:
            kwargs["evidence"] = check.evidence
        reason = f"{check.audit_note} {data['reason']}" if check.audit_note else data["reason"]
        try:
            spec.service(
                rollout=rollout,
                actor=actor_for_user(request.user),
                reason=reason,
                expected_revision=data["revision"],
                **kwargs,
            )
        except DomainError as error:
            self.message_user(request, error.detail, messages.ERROR)
        else:
            self.message_user(request, f"{spec.label}: done.", messages.SUCCESS)
        return HttpResponseRedirect(change_url)

    def audit_csv_view(self, request, rollout_id):
        rollout = get_object_or_404(Rollout, pk=rollout_id)
        if not self.has_view_permission(request, rollout):
            raise PermissionDenied
        return audit_csv_response(
            rollout.events.order_by("-at", "-pk"), filename=f"rollout-{rollout.pk}-audit.csv"
        )


AUDIT_CSV_COLUMNS = (
    "at", "rollout", "actor", "action", "reason", "before state", "after state", "analysis id",
)  # fmt: skip


def _csv_cell(value) -> str:
    # A spreadsheet runs a cell that starts like a formula; reasons are typed by people.
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def audit_csv_response(events, *, filename: str) -> HttpResponse:
    """The audit log as CSV: when, who, what, why, the state before and after, and the
    analysis an action was based on."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(AUDIT_CSV_COLUMNS)
    for event in events:
        writer.writerow(
            _csv_cell(value)
            for value in (
                event.at.isoformat(),
                event.rollout_id,
                event.actor,
                event.action,
                event.reason,
                event.before.get("state", ""),
                event.after.get("state", ""),
                (event.evidence or {}).get("analysis_id", ""),
            )
        )
    return response


@admin.register(RolloutEvent)
class RolloutEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "rollout", "action", "actor", "reason")
    list_filter = ("action", "rollout__flow")
    search_fields = ("actor", "reason", "rollout__id")
    list_select_related = ("rollout", "rollout__flow", "rollout__flow__app")
    ordering = ("-at", "-id")  # newest first
    actions = ["download_csv"]

    @admin.action(description="Download the selected events as CSV")
    def download_csv(self, request, queryset):
        return audit_csv_response(queryset.order_by("-at", "-id"), filename="audit-log.csv")
