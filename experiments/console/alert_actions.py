"""
Acknowledging, dismissing and resolving alerts in the admin (CONSOLE.md, page 4): from the
rollout page's alerts section, and as actions of the alert list. Dismissing needs a reason;
every change is logged with who, when and why (`AlertStatusChange`), by the service.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from controlplane.actors import actor_for_user
from controlplane.admin_mixins import ReadOnlyInline
from controlplane.errors import DomainError
from controlplane.roles import EDITORS, user_has_role

from ..models import Alert, AlertStatus, AlertStatusChange
from ..services import alert_status_change

# Whoever may stop a rollout may also say an alert about it needs nothing more.
ALERT_HANDLERS = EDITORS

# The moves people make, as buttons: (status, label).
ALERT_STATUS_BUTTONS = (
    (AlertStatus.ACKNOWLEDGED, "Acknowledge"),
    (AlertStatus.RESOLVED, "Resolve"),
    (AlertStatus.DISMISSED, "Dismiss"),
)


def may_handle_alerts(user) -> bool:
    return user_has_role(user, ALERT_HANDLERS)


class AlertStatusForm(forms.Form):
    status = forms.ChoiceField(choices=[(status, label) for status, label in ALERT_STATUS_BUTTONS])
    reason = forms.CharField(required=False, max_length=2000)


class DismissForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why these alerts need no action. Logged with your name and the time.",
    )


class AlertStatusChangeInline(ReadOnlyInline):
    model = AlertStatusChange
    fields = ("at", "before", "after", "actor", "reason")
    readonly_fields = fields
    verbose_name_plural = "status log"


class AlertStatusAdminMixin:
    """For the alert admin: a status view for the rollout page's buttons, and list actions."""

    actions = ["acknowledge_selected", "resolve_selected", "dismiss_selected"]

    def get_urls(self):
        return [
            path(
                "<int:alert_id>/status/",
                self.admin_site.admin_view(self.alert_status_view),
                name="experiments_alert_status",
            ),
            *super().get_urls(),
        ]

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not may_handle_alerts(request.user):
            for name in self.actions:
                actions.pop(name, None)
        return actions

    def alert_status_view(self, request, alert_id):
        return _alert_status_view(self, request, alert_id)

    def _move_all(self, request, queryset, status: str, reason: str = "") -> None:
        if not may_handle_alerts(request.user):
            raise PermissionDenied("Needs the data scientist or product manager role.")
        moved, refused = 0, []
        for alert in queryset:
            try:
                alert_status_change(
                    alert=alert, status=status, actor=actor_for_user(request.user), reason=reason
                )
            except DomainError as error:
                refused.append(f"{alert.title}: {error.detail}")
            else:
                moved += 1
        if moved:
            label = AlertStatus(status).label.lower()
            self.message_user(request, f"{moved} alert(s) {label}.", messages.SUCCESS)
        for sentence in refused:
            self.message_user(request, sentence, messages.WARNING)

    @admin.action(description="Acknowledge the selected alerts")
    def acknowledge_selected(self, request, queryset):
        self._move_all(request, queryset, AlertStatus.ACKNOWLEDGED)

    @admin.action(description="Resolve the selected alerts")
    def resolve_selected(self, request, queryset):
        self._move_all(request, queryset, AlertStatus.RESOLVED)

    @admin.action(description="Dismiss the selected alerts (asks for a reason)")
    def dismiss_selected(self, request, queryset):
        form = DismissForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            self._move_all(request, queryset, AlertStatus.DISMISSED, form.cleaned_data["reason"])
            return None
        return TemplateResponse(
            request,
            "admin/experiments/alert/dismiss.html",
            {
                **self.admin_site.each_context(request),
                "title": "Dismiss alerts",
                "opts": self.model._meta,
                "alerts": queryset,
                "form": form,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )


def _alert_status_view(model_admin, request, alert_id):
    """Move one alert (the rollout page's buttons), then go back where the person was."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    alert = get_object_or_404(Alert, pk=alert_id)
    if not may_handle_alerts(request.user):
        raise PermissionDenied("Needs the data scientist or product manager role.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = reverse("admin:experiments_alert_change", args=[alert.pk])
    form = AlertStatusForm(request.POST)
    if not form.is_valid():
        model_admin.message_user(request, "Choose what to do with the alert.", messages.ERROR)
        return HttpResponseRedirect(back)
    try:
        alert_status_change(
            alert=alert,
            status=form.cleaned_data["status"],
            actor=actor_for_user(request.user),
            reason=form.cleaned_data["reason"],
        )
    except DomainError as error:
        model_admin.message_user(request, f"{alert.title}: {error.detail}", messages.ERROR)
    else:
        label = AlertStatus(form.cleaned_data["status"]).label.lower()
        model_admin.message_user(request, f"{alert.title}: {label}.", messages.SUCCESS)
    return HttpResponseRedirect(back)
