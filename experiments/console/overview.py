"""
The flows overview (CONSOLE.md, pages 1 and 2): the Flow changelist as a product manager's
landing page, one row per flow with its rollout's stage, state badge, primary lift, guardrails,
time left and last action; filters by app and state; the legend of the states below.

Registered from `experiments.admin` in place of the registry's FlowAdmin (the registry may not
know rollouts or analyses); the change form stays the registry's.
"""

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from registry.admin import FlowAdmin
from rollout.metrics import PRIMARY

from .. import readout
from .charts import interval_cells, interval_row
from .flow_rows import FlowRow, flow_rows, with_current_rollout

# State filter: URL value → badge label (the legend's order, then flows with no rollout).
_STATE_CHOICES = {
    "draft": readout.DRAFT,
    "ramping": readout.RAMPING,
    "holding": readout.HOLDING,
    "paused": readout.PAUSED,
    "guardrail_failing": readout.GUARDRAIL_FAILING,
    "rolled_back": readout.ROLLED_BACK,
    "ready_to_promote": readout.READY_TO_PROMOTE,
    "promoted": readout.PROMOTED,
    "unhealthy": readout.UNHEALTHY,
    "none": readout.NO_ROLLOUT,
}
_BAR_WIDTH, _BAR_HEIGHT = 120, 18


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return list(_STATE_CHOICES.items())

    def queryset(self, request, queryset):
        label = _STATE_CHOICES.get(self.value())
        if label is None:
            return queryset
        # The badge is derived from the latest analysis, so it is filtered on as derived: a
        # handful of queries over the flows the other filters left (the admin's queryset
        # carries `current_rollout_id`), and the page then reads its own rows.
        rows = flow_rows(list(queryset))
        return queryset.filter(pk__in=[pk for pk, row in rows.items() if row.badge.label == label])


class OverviewChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        flows = list(self.result_list)
        rows = flow_rows(flows)
        for flow in flows:
            flow.overview = rows[flow.pk]
        self.result_list = flows


def _row(flow) -> FlowRow:
    return flow.overview


class FlowOverviewAdmin(FlowAdmin):
    """The registry's FlowAdmin with the overview as its changelist."""

    list_display = (
        "name", "app", "baseline_model", "stage", "state", "primary_lift", "guardrails",
        "time_left", "last_action",
    )  # fmt: skip
    list_display_links = ("name",)
    list_filter = ("app", StateFilter)
    list_select_related = ("app", "baseline")
    list_per_page = 50
    change_list_template = "admin/experiments/flow_overview.html"

    def get_queryset(self, request):
        return with_current_rollout(super().get_queryset(request))

    def get_changelist(self, request, **kwargs):
        return OverviewChangeList

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            "title": "Flows overview",
            "state_legend": readout.STATE_LEGEND,
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context)

    @admin.display(description="baseline model")
    def baseline_model(self, flow):
        baseline = flow.baseline
        if baseline is None:
            return format_html('<span class="console-muted">{}</span>', "bundled model")
        return format_html(
            '<a href="{}" title="{}"><code>\u2026{}</code></a> '
            '<span class="console-notes">{}</span>',
            reverse("admin:registry_modelversion_change", args=[baseline.pk]),
            baseline.pk,
            baseline.pk.hex[-8:],
            Truncator(baseline.notes).chars(40),
        )

    @admin.display(description="stage")
    def stage(self, flow):
        row = _row(flow)
        if row.rollout is None:
            return row.stage
        return format_html(
            '<a href="{}" class="console-stage">{}</a>',
            reverse("admin:rollout_rollout_change", args=[row.rollout.pk]),
            row.stage,
        )

    @admin.display(description="state")
    def state(self, flow):
        badge = _row(flow).badge
        return format_html(
            '<span class="console-badge console-tone-{}" title="{}">{}</span>',
            badge.tone,
            badge.sentence,
            badge.label,
        )

    @admin.display(description="primary lift")
    def primary_lift(self, flow):
        lift = _row(flow).lift
        if lift.chip is None:
            return format_html(
                '<span class="console-muted" title="{}">{}</span>', lift.note, lift.text
            )
        value, _, interval = lift.text.partition(" (")
        return format_html(
            '<span class="console-lift" title="{}">{}'
            '<span class="console-lift-text">{} <span class="console-chip console-tone-{}">'
            '{} {}</span></span><span class="console-lift-interval">{}</span></span>',
            lift.note,
            _interval_bar(lift.comparison),
            value,
            lift.chip.tone,
            lift.chip.symbol,
            lift.chip.label,
            f"({interval}" if interval else "",
        )

    @admin.display(description="guardrails")
    def guardrails(self, flow):
        symbol, sentence = _row(flow).guardrails
        tone = {"\u2713": "good", "\u26a0": "bad"}.get(symbol, "neutral")
        word = {"\u2713": "clean", "\u26a0": "worse"}.get(symbol, "")
        return format_html(
            '<span class="console-guardrails console-tone-{}" title="{}">{} {}</span>',
            tone,
            sentence,
            symbol,
            word,
        )

    @admin.display(description="time left")
    def time_left(self, flow):
        return _row(flow).days_left

    @admin.display(description="last action")
    def last_action(self, flow):
        event = _row(flow).last_action
        if event is None:
            return "\u2014"
        return format_html(
            '{} <span class="console-muted">by</span> {}<br><span class="console-muted">{}</span>',
            event.action,
            readout.actor_text(event.actor),
            date_format(timezone.localtime(event.at), "DATETIME_FORMAT"),
        )


def _interval_bar(comparison: dict | None) -> str:
    """The difference and its always-valid interval around zero: the results table's own
    interval cell (`charts`), whose tone is the chip's, on this row's scale."""
    if not comparison:
        return ""
    cell = interval_cells(
        [interval_row(readout.metric_title(PRIMARY), comparison)],
        width=_BAR_WIDTH,
        height=_BAR_HEIGHT,
    ).cells[0]
    return mark_safe(cell.svg)  # built and escaped by charts
