"""
Creating a rollout from the console (CONSOLE.md, page 5), in three steps without JavaScript:

1. the flow (or arrive with `?flow=<id>`, e.g. from the flow's page);
2. the plan: the challenger, picked from this flow's models that are not its baseline, newest
   first, each with its notes, format, size and offline metrics; the stage plan, the gates,
   the guardrails the flow can be judged on, and the planned sample, all with defaults;
3. the review, with the power estimate (`power_estimate`), before "Create".

Only "Create" changes anything, through `rollout.services.rollout_create` (the form is a
`ServiceFormMixin` form); the review step validates the same form without calling it. Served
as the Rollout admin's add view by `ConsoleRolloutAdmin`, in this layer because the estimate
reads analyses.
"""

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from controlplane.actors import actor_for_user
from controlplane.admin_mixins import ServiceFormMixin
from registry.models import Flow, ModelVersion
from rollout import services
from rollout.allocation import DEFAULT_STAGES, AllocationError, validate_stages
from rollout.metrics import MODEL_ERROR, VALUE, outcome_metric
from rollout.shares import fraction, percent_text

from .. import readout
from ..selectors import flow_baseline_rate, flow_exposure_rate
from .power_estimate import PowerEstimate, power_estimate

LOWER, HIGHER = "lower", "higher"


# --- The flow ------------------------------------------------------------------------------


class FlowChoiceForm(forms.Form):
    flow = forms.ModelChoiceField(
        queryset=Flow.objects.select_related("app").order_by("app__name", "name"),
        empty_label="Choose a flow…",
        help_text="The decision point whose model you want to replace.",
        error_messages={"invalid_choice": "There is no such flow; choose one from the list."},
    )


# --- The challengers the flow offers ---------------------------------------------------------


@dataclass(frozen=True)
class ChallengerOption:
    model: ModelVersion
    notes: str
    format: str
    size: str
    metrics: str
    sdk_range: str

    @property
    def pk(self) -> str:
        return str(self.model.pk)


def challenger_queryset(flow: Flow):
    """The flow's models that could challenge its baseline: every one but the baseline, newest
    first (the service refuses the baseline too)."""
    return (
        ModelVersion.objects.filter(flow=flow)
        .exclude(pk=flow.baseline_id)
        .order_by("-created_at", "-pk")
    )


def metrics_summary(metrics: dict, positive_label: str) -> str:
    """A model's offline metrics in one line: accuracy, and precision and recall of the label
    that counts as success, when training recorded them; otherwise its plain numbers."""
    if not isinstance(metrics, dict) or not metrics:
        return "none recorded"
    parts = []
    if _is_number(metrics.get("accuracy")):
        parts.append(f"accuracy {metrics['accuracy']:.3f}")
    of_label = metrics.get(positive_label) if positive_label else None
    if isinstance(of_label, dict):
        for key, name in (("precision", "precision"), ("recall", "recall")):
            if _is_number(of_label.get(key)):
                parts.append(f"{positive_label} {name} {of_label[key]:.3f}")
    if not parts:
        parts = [f"{key} {value:.4g}" for key, value in metrics.items() if _is_number(value)][:4]
    if parts and _is_number(metrics.get("n_test")):
        parts.append(f"on {metrics['n_test']:,} held-out rows")
    return ", ".join(parts) or "recorded, not numeric (see the model's page)"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def challenger_options(flow: Flow) -> list[ChallengerOption]:
    options = []
    for model in challenger_queryset(flow):
        notes = " ".join(model.notes.split()) or "no notes"
        options.append(
            ChallengerOption(
                model=model,
                notes=notes if len(notes) <= 160 else notes[:159] + "…",
                format=model.get_format_display(),
                size=filesizeformat(model.size),
                metrics=metrics_summary(model.metrics, flow.positive_label),
                sdk_range=f"SDK {model.min_sdk_version} to {model.max_sdk_version or 'any newer'}",
            )
        )
    return options


# --- The guardrails the flow can be judged on ------------------------------------------------


@dataclass(frozen=True)
class GuardrailChoice:
    metric: str  # as `rollout.guardrails` names it
    title: str
    key: str  # the part of the form's field names that stands for it
    proportion: bool  # margin in percentage points; else in the metric's own units
    always_on: bool = False
    outcome: bool = False


def guardrail_choices(flow: Flow) -> list[GuardrailChoice]:
    """Model errors (always judged), the value per device, and an outcome guardrail for every
    class label of the flow's models but the one that counts as success (the primary metric)."""
    labels = set()
    for found in ModelVersion.objects.filter(flow=flow).values_list(
        "description__class_labels", flat=True
    ):
        labels.update(label for label in found or [] if isinstance(label, str))
    labels.discard(flow.positive_label)
    choices = [
        GuardrailChoice(MODEL_ERROR, "model errors", "model_error", True, always_on=True),
        GuardrailChoice(VALUE, "value per device", "value", False),
    ]
    for label in sorted(labels):
        metric = outcome_metric(label)
        key = "outcome_" + hashlib.sha256(label.encode()).hexdigest()[:12]
        choices.append(
            GuardrailChoice(metric, readout.metric_title(metric), key, True, outcome=True)
        )
    return choices


# --- The plan -----------------------------------------------------------------------------


class RolloutPlanForm(forms.Form):
    """Everything a rollout is created with; valid means ready to review."""

    challenger = forms.ModelChoiceField(
        queryset=ModelVersion.objects.none(),
        widget=forms.RadioSelect,
        empty_label=None,
        error_messages={
            "required": "Pick the model to roll out.",
            "invalid_choice": "That model is not a challenger of this flow (is it the "
            "baseline, or another flow's?). Pick one from the list.",
        },
    )
    stages = forms.CharField(
        initial=", ".join(str(s) for s in DEFAULT_STAGES),
        label="Stage plan (%)",
        help_text="The challenger's share at each stage, comma-separated, e.g. 1, 5, 20, 50, 100.",
    )
    auto_advance = forms.BooleanField(
        required=False,
        label="Advance automatically",
        help_text="The judge moves to the next stage once every gate is met.",
    )
    stage_min_minutes = forms.IntegerField(
        min_value=0,
        initial=60,
        label="Minutes per stage, at least",
        help_text="No stage ends sooner, whatever the data says.",
    )
    min_devices_per_arm = forms.IntegerField(
        min_value=1,
        initial=100,
        label="Minimum devices per arm",
        help_text="No result, and no advancing, before every arm has this many devices.",
    )
    advance_detectable_lift = forms.FloatField(
        min_value=1,
        max_value=1000,
        initial=50,
        label="Drop to detect (%)",
        help_text="Advancing waits until each arm has the devices to see conversion drop by this "
        "much, relative: 50 % is a challenger that halves it. The smaller, the more devices.",
    )
    planned_sample = forms.IntegerField(
        min_value=100,
        initial=5000,
        label="Planned sample",
        help_text="Devices you expect the rollout to see, all arms together; it tunes the "
        "always-valid test, which stays valid beyond it.",
    )
    baseline_rate = forms.FloatField(
        required=False,
        min_value=0.01,
        max_value=99.99,
        label="Baseline conversion (%)",
        help_text="The baseline's conversion the estimate assumes; not stored.",
    )

    def __init__(self, *args, flow: Flow, **kwargs):
        super().__init__(*args, **kwargs)
        self.flow = flow
        self.fields["challenger"].queryset = challenger_queryset(flow)
        self.guardrail_choices = guardrail_choices(flow)
        for choice in self.guardrail_choices:
            self.fields[f"guard_{choice.key}"] = forms.BooleanField(
                required=False,
                initial=choice.always_on,
                disabled=choice.always_on,
                label=f"Judge {choice.title}",
            )
            unit = "percentage points" if choice.proportion else "in its own units"
            self.fields[f"margin_{choice.key}"] = forms.FloatField(
                required=False,
                min_value=0,
                max_value=100 if choice.proportion else None,
                initial=0,
                label=f"Margin for {choice.title} ({unit})",
            )
            if choice.outcome:
                self.fields[f"better_{choice.key}"] = forms.ChoiceField(
                    choices=[(LOWER, "fewer is better"), (HIGHER, "more is better")],
                    initial=LOWER,
                    required=False,  # unset: fewer is better, the default of an outcome
                    label=f"Direction of {choice.title}",
                )
        # The guardrails' table labels each checkbox by its metric; its other cells have no
        # label of their own, so their inputs carry one.
        for name, field in self.fields.items():
            if name.startswith(("margin_", "better_")):
                field.widget.attrs["aria-label"] = field.label

    def guardrail_rows(self) -> list[dict]:
        """The guardrail fields by metric, for the template's table."""
        return [
            {
                "choice": choice,
                "guard": self[f"guard_{choice.key}"],
                "margin": self[f"margin_{choice.key}"],
                "better": self[f"better_{choice.key}"] if choice.outcome else None,
            }
            for choice in self.guardrail_choices
        ]

    def clean_stages(self):
        try:
            stages = [
                Decimal(part.strip())
                for part in self.cleaned_data["stages"].split(",")
                if part.strip()
            ]
        except InvalidOperation:
            raise forms.ValidationError(
                "Write the stages as numbers of percent, e.g. 1, 5, 20, 50, 100."
            ) from None
        try:
            validate_stages(stages)  # the service checks again; the review should not pass it
        except AllocationError as error:
            raise forms.ValidationError(str(error)) from None
        return stages

    def guardrails(self) -> list:
        """The guardrails as `rollout_create` takes them (`rollout.guardrails`)."""
        entries = []
        for choice in self.guardrail_choices:
            if not (choice.always_on or self.cleaned_data.get(f"guard_{choice.key}")):
                continue
            entry: dict = {"metric": choice.metric}
            margin = self.cleaned_data.get(f"margin_{choice.key}") or 0.0
            if margin:
                entry["margin"] = round(margin / 100, 6) if choice.proportion else margin
            if choice.outcome and self.cleaned_data.get(f"better_{choice.key}") == HIGHER:
                entry["higher_is_better"] = True
            if len(entry) > 1:
                entries.append(entry)
            elif not choice.always_on:  # model_error is judged whether listed or not
                entries.append(choice.metric)
        return entries

    def guardrails_text(self) -> list[str]:
        texts = []
        for choice in self.guardrail_choices:
            if not (choice.always_on or self.cleaned_data.get(f"guard_{choice.key}")):
                continue
            margin = self.cleaned_data.get(f"margin_{choice.key}") or 0.0
            unit = " pp" if choice.proportion else ""
            direction = ""
            if choice.outcome:
                higher = self.cleaned_data.get(f"better_{choice.key}") == HIGHER
                direction = ", more is better" if higher else ", fewer is better"
            texts.append(
                f"{choice.title}{direction}"
                + (f", harm counts beyond a margin of {margin:g}{unit}" if margin else "")
                + (" (always judged)" if choice.always_on else "")
            )
        return texts

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        return {
            "flow": self.flow,
            "challengers": [{"model_id": str(data["challenger"].pk), "stages": data["stages"]}],
            "auto_advance": data["auto_advance"],
            "stage_min_minutes": data["stage_min_minutes"],
            "min_devices_per_arm": data["min_devices_per_arm"],
            "advance_detectable_lift": round(data["advance_detectable_lift"] / 100, 6),
            "planned_sample": data["planned_sample"],
            "guardrails": self.guardrails(),
        }

    def estimate(self, *, daily_devices: float | None) -> PowerEstimate:
        data = self.cleaned_data
        rate = data.get("baseline_rate")
        return power_estimate(
            baseline_rate=rate / 100 if rate else None,
            advance_detectable_lift=data["advance_detectable_lift"] / 100,
            min_devices_per_arm=data["min_devices_per_arm"],
            planned_sample=data["planned_sample"],
            stages=[fraction(bp) for bp in validate_stages(data["stages"])],
            stage_min_minutes=data["stage_min_minutes"],
            alpha=settings.EXPERIMENT_ALPHA,
            min_detectable_lift=settings.EXPERIMENT_MIN_DETECTABLE_LIFT,
            daily_devices=daily_devices,
        )


class RolloutCreateForm(ServiceFormMixin, RolloutPlanForm):
    """The plan, created: valid means `rollout_create` made the rollout."""

    def service_call(self, cleaned_data):
        return services.rollout_create(
            actor=actor_for_user(self.request.user), **self.service_kwargs()
        )


# --- The estimate, as the review shows it ----------------------------------------------------


@dataclass(frozen=True)
class Figure:
    name: str
    value: str
    how: str  # how it was computed (CONSOLE.md, principle 5)


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def _power(value: float | None) -> str:
    """A power as people read it; above 99 % it is not worth more digits."""
    if value is None:
        return "—"
    return "> 99 %" if value > 0.99 else f"{value * 100:.0f} %"


def _relative(value: float) -> str:
    """A relative change as people write it: 0.5 → "50 %", 0.125 → "12.5 %"."""
    return f"{value * 100:g} %"


def estimate_figures(estimate: PowerEstimate, *, rate_source: str, traffic) -> list[Figure]:
    """The review's power figures, each with how it was computed."""
    test = f"two-sided two-proportion z-test at alpha = {estimate.alpha:g}, power 80 %"
    drop, rise = (
        _relative(estimate.advance_detectable_lift),
        _relative(estimate.min_detectable_lift),
    )
    figures = [
        Figure("Baseline conversion", _pct(estimate.baseline_rate), rate_source),
        Figure(
            "Devices per arm before advancing",
            f"{estimate.devices_per_arm_to_advance:,}" if estimate.known else "unknown",
            f"enough to see conversion drop by {drop} ({test}), "
            f"and never fewer than the minimum of {estimate.min_devices_per_arm:,}: the judge's "
            "gate for advancing"
            if estimate.known
            else f"at least the minimum of {estimate.min_devices_per_arm:,}; the judge sizes the "
            "rest once it has measured the baseline",
        ),
        Figure(
            f"Devices per arm to detect a {rise} change",
            f"{estimate.devices_per_arm_for_min_lift:,}"
            if estimate.devices_per_arm_for_min_lift
            else "unknown",
            f"the judge's minimum detectable effect, relative to the baseline ({test})",
        ),
        Figure(
            "Power of the planned sample",
            f"{_power(estimate.power_at_planned)} for the {drop} drop; "
            f"{_power(estimate.power_at_planned_min_lift)} for a {rise} change",
            f"{estimate.planned_per_arm:,} devices per arm: the planned sample split evenly "
            "between the baseline and the challenger",
        ),
    ]
    if traffic is None:
        figures.append(
            Figure(
                "New devices a day",
                "not measured yet",
                "no rollout of this flow has run for an hour: the days cannot be estimated",
            )
        )
        return figures
    figures.append(
        Figure(
            "New devices a day",
            f"{traffic.per_day:,.0f}",
            f"devices first exposed in the first {_span(traffic)} of rollout "
            f"{traffic.rollout_id[:8]}",
        )
    )
    first = percent_text(round(estimate.first_stage_share * 10_000))
    if estimate.days_first_stage is not None:
        days = estimate.days_first_stage
        value = f"~{days} day{'s' if days != 1 else ''} (estimate)"
        how = (
            f"at the measured rate, ~{estimate.first_stage_daily:,.1f} new devices a day reach "
            f"the smallest arm, until every arm has {estimate.devices_per_arm_to_advance:,}; each "
            f"of the {estimate.later_stages} later stages then waits at least "
            f"{estimate.stage_min_minutes} min, as the devices already counted stay counted"
        )
    elif not estimate.known:
        value, how = "unknown", "the devices needed are unknown without a baseline conversion"
    else:
        value, how = "unknown", "at this share no device is left to the baseline to compare with"
    figures.append(Figure(f"Time at the first stage ({first})", value, how))
    return figures


def _span(traffic) -> str:
    hours = (traffic.until - traffic.since).total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.0f} hours"


def rate_source(form: RolloutPlanForm, measured) -> str:
    entered = form.cleaned_data.get("baseline_rate")
    if entered is None:
        return "unknown: no analysis of this flow measured it, and none was entered"
    if measured is not None and round(measured.rate * 100, 2) == entered:
        return (
            f"measured: the baseline arm's {measured.devices:,} devices in analysis "
            f"#{measured.analysis_id} of rollout {measured.rollout_id[:8]}, "
            f"{measured.computed_at:%Y-%m-%d %H:%M} UTC"
        )
    return "entered for this estimate"


# --- The view -------------------------------------------------------------------------------

STEPS = (("flow", "Flow"), ("plan", "Challenger and plan"), ("review", "Review and create"))


def _flow_form(request) -> FlowChoiceForm:
    chosen = request.POST.get("flow") or request.GET.get("flow")
    return FlowChoiceForm({"flow": chosen} if chosen else None)


def _initial(flow: Flow, measured) -> dict:
    initial = {}
    first = challenger_queryset(flow).first()
    if first is not None:
        initial["challenger"] = str(first.pk)
    if measured is not None:
        initial["baseline_rate"] = round(measured.rate * 100, 2)
    return initial


def rollout_add_view(model_admin, request, extra_context=None):
    """The Rollout admin's add view: flow → plan → review → create."""
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Create a rollout",
        "steps": STEPS,
        **(extra_context or {}),
    }
    flow_form = _flow_form(request)
    if not flow_form.is_bound or not flow_form.is_valid():
        return _render(request, context, step="flow", flow_form=flow_form)
    flow = flow_form.cleaned_data["flow"]
    measured = flow_baseline_rate(flow=flow)
    traffic = flow_exposure_rate(flow=flow, now=timezone.now())
    context.update(
        flow=flow,
        measured_rate=measured,
        measured_text=f"{measured.rate:.1%} of {measured.devices:,} devices in the latest "
        f"analysis of this flow (#{measured.analysis_id})"
        if measured
        else "",
        traffic=traffic,
        options=challenger_options(flow),
        title=f"Create a rollout of {flow}",
    )
    step = request.POST.get("step", "create") if request.method == "POST" else None
    if step is None:
        form = RolloutPlanForm(flow=flow, initial=_initial(flow, measured))
        return _render(request, context, step="plan", form=form)
    if step in ("review", "edit"):
        form = RolloutPlanForm(request.POST, flow=flow)
        if step == "review" and form.is_valid():
            estimate = form.estimate(daily_devices=traffic.per_day if traffic else None)
            chosen = str(form.cleaned_data["challenger"].pk)
            return _render(
                request,
                context,
                step="review",
                form=form,
                plan=form.service_kwargs(),
                chosen=next(o for o in context["options"] if o.pk == chosen),
                guardrails_text=form.guardrails_text(),
                stages_text=" → ".join(
                    percent_text(bp) for bp in validate_stages(form.cleaned_data["stages"])
                ),
                estimate=estimate,
                figures=estimate_figures(
                    estimate, rate_source=rate_source(form, measured), traffic=traffic
                ),
            )
        return _render(request, context, step="plan", form=form)
    form = RolloutCreateForm(request.POST, flow=flow, request=request)
    if not form.is_valid():
        return _render(request, context, step="plan", form=form)
    rollout = form.save()
    model_admin.log_addition(request, rollout, [{"added": {}}])
    model_admin.message_user(
        request,
        f"Rollout of {flow} created as a draft: nothing changes for devices until you start it.",
        messages.SUCCESS,
    )
    return HttpResponseRedirect(reverse("admin:rollout_rollout_change", args=[rollout.pk]))


def _render(request, context, *, step: str, **more):
    form = more.get("form")
    selected = str(form["challenger"].value() or "") if form is not None else ""
    return TemplateResponse(
        request,
        "admin/rollout/rollout/create.html",
        {**context, "step": step, "selected_challenger": selected, **more},
    )
