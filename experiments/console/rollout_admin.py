"""The rollout page of the admin: rollout's own admin (actions, forms) with the page of
`rollout_page` in place of its read-only fields. Registered here, in the layer that can read
both the rollout and its analyses."""

from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils import timezone

from rollout.admin import RolloutAdmin, action_buttons

from .actions import action_check
from .alert_actions import may_handle_alerts
from .create_form import rollout_add_view
from .rollout_page import rollout_page
from .segments import rollout_segments


class ConsoleRolloutAdmin(RolloutAdmin):
    def add_view(self, request, form_url="", extra_context=None):
        """Flow, then challenger and plan, then a review with the power estimate, then create."""
        return rollout_add_view(self, request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        rollout = self.get_object(request, object_id)
        if rollout is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, rollout):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": f"Rollout of {rollout.flow}",
            "subtitle": str(rollout),
            "opts": self.opts,
            "original": rollout,
            "page": rollout_page(rollout, now=timezone.now()),
            "segments": rollout_segments(rollout),
            "rollout_actions": self.allowed_actions(request, rollout),
            "action_buttons": action_buttons(request.user, rollout),
            "may_handle_alerts": may_handle_alerts(request.user),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/rollout/rollout/console.html", context)

    def action_check(self, request, rollout, action):
        # The impact, the unmet gates and the recommendation: they need the analyses.
        return action_check(rollout, action, now=timezone.now())
