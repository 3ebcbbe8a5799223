"""
The model version page (CONSOLE.md, page 6): inputs and outputs, offline metrics, SDK range,
size, sha256, the rollouts that used the version, a download link, and "make baseline" as a
button on the page (the registry's confirmed action, for the roles that set baselines).

Registered from `experiments.admin` in place of the registry's ModelVersionAdmin: the rollouts
that used a version are the rollout app's, which the registry may not import.
"""

from django.contrib import admin
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join

from controlplane.roles import BASELINE_SETTERS, Role, user_roles
from registry.admin import ModelVersionAdmin
from registry.storage import model_file_url
from rollout.models import Rollout

_SUMMARY = (
    "id", "flow", "structure", "notes", "download", "size_text", "sha256", "sdk_range",
    "uploaded_by", "created_at",
)  # fmt: skip
_DETAILS = ("format", "original_filename", "spec_version", "warnings_list", "metadata_block")


class ModelVersionPageAdmin(ModelVersionAdmin):
    change_form_template = "admin/experiments/model_version_page.html"

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return super().get_fieldsets(request, obj)
        return [
            (None, {"fields": _SUMMARY}),
            ("Inputs and outputs", {"fields": ("inputs_table", "outputs_table", "labels")}),
            ("Offline metrics", {"fields": ("metrics_table",)}),
            ("Rollouts that used it", {"fields": ("rollouts_used",)}),
            ("File details", {"fields": _DETAILS, "classes": ("collapse",)}),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return super().get_readonly_fields(request, obj)
        return (*super().get_readonly_fields(request, obj), "size_text", "sdk_range",
                "rollouts_used")  # fmt: skip

    @admin.display(description="size")
    def size_text(self, obj):
        return f"{_bytes_text(obj.size)} ({obj.size:,} bytes)"

    @admin.display(description="SDK versions")
    def sdk_range(self, obj):
        if obj.max_sdk_version:
            return f"{obj.min_sdk_version} to {obj.max_sdk_version}"
        return f"{obj.min_sdk_version} and later"

    @admin.display(description="rollouts")
    def rollouts_used(self, obj):
        rollouts = list(
            Rollout.objects.filter(Q(arms__model_version=obj) | Q(baseline=obj))
            .distinct()
            .select_related("flow")
            .order_by("-created_at")
        )
        if not rollouts:
            return "None yet."
        return format_html(
            '<ul class="console-rollouts">{}</ul>',
            format_html_join(
                "",
                '<li><a href="{}">Rollout {}</a> \u2014 {} as {}, created {}</li>',
                (
                    (
                        reverse("admin:rollout_rollout_change", args=[rollout.pk]),
                        str(rollout.pk)[-8:],
                        rollout.get_state_display(),
                        "the baseline" if rollout.baseline_id == obj.pk else "a challenger",
                        date_format(timezone.localtime(rollout.created_at), "DATETIME_FORMAT"),
                    )
                    for rollout in rollouts
                ),
            ),
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        version = self.get_object(request, object_id)
        extra_context = {**(extra_context or {}), **self._page_actions(request, version)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _page_actions(self, request, version) -> dict:
        """The page's buttons: download, and make baseline (or why it is not possible now)."""
        if version is None:
            return {}
        roles = user_roles(request.user)
        baseline = {"allowed": False, "reason": None, "shown": bool(roles - {Role.VIEWER})}
        if version.flow.baseline_id == version.pk:
            baseline["reason"] = "This model is its flow's baseline already."
        elif not roles & BASELINE_SETTERS:
            baseline["reason"] = "Only product managers and admins set baselines."
        else:
            baseline["allowed"] = True
        return {
            "download_url": model_file_url(version.storage_key, base_url="/"),
            "download_name": version.file_name,
            "download_size": _bytes_text(version.size),
            "make_baseline": baseline,
            "changelist_url": reverse("admin:registry_modelversion_changelist"),
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }


def _bytes_text(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} bytes"
