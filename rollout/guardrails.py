"""
The metrics a rollout is judged on, as configured on it (no Django).

A rollout's `guardrails` is a list of entries, each a metric name (`rollout.metrics`) or an
object:
- "model_error": share of devices that reported the reserved outcome model_error (always on).
- "value": the numeric value per device (e.g. revenue), compared as a mean.
- "outcome:<label>": share of devices that reported the outcome <label> (e.g. outcome:Dismissed).
- {"metric": <one of the above>, "margin": 0.01, "higher_is_better": false}: harm counts only
  when the challenger is worse by more than the margin (in the metric's own units).
The primary metric, "conversion", is always judged: the share of devices with at least one
outcome equal to the flow's positive label.
"""

from dataclasses import dataclass

from .metrics import MEAN, MODEL_ERROR, OUTCOME_PREFIX, PROPORTION, VALUE, outcome_label


class InvalidGuardrail(ValueError):
    pass


@dataclass(frozen=True)
class Guardrail:
    metric: str
    kind: str  # metrics.PROPORTION | metrics.MEAN
    higher_is_better: bool
    margin: float = 0.0

    @property
    def outcome_label(self) -> str | None:
        return outcome_label(self.metric)


def _default_for(metric: str) -> Guardrail:
    if metric == MODEL_ERROR:
        return Guardrail(MODEL_ERROR, PROPORTION, higher_is_better=False)
    if metric == VALUE:
        return Guardrail(VALUE, MEAN, higher_is_better=True)
    if outcome_label(metric):
        return Guardrail(metric, PROPORTION, higher_is_better=False)
    raise InvalidGuardrail(
        f"Unknown guardrail metric {metric!r}: use '{MODEL_ERROR}', '{VALUE}' or "
        f"'{OUTCOME_PREFIX}<label>'."
    )


def guardrails_parse(entries) -> tuple[Guardrail, ...]:
    """Return the guardrails of a rollout, model_error first; raise InvalidGuardrail if wrong."""
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise InvalidGuardrail("guardrails must be a list of metric names or objects.")
    parsed: dict[str, Guardrail] = {MODEL_ERROR: _default_for(MODEL_ERROR)}
    for index, entry in enumerate(entries, start=1):
        if isinstance(entry, str):
            guardrail = _default_for(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("metric"), str):
            base = _default_for(entry["metric"])
            margin = entry.get("margin", 0.0)
            higher = entry.get("higher_is_better", base.higher_is_better)
            if isinstance(margin, bool) or not isinstance(margin, int | float) or margin < 0:
                raise InvalidGuardrail(f"Guardrail {index}: margin must be a number >= 0.")
            if not isinstance(higher, bool):
                raise InvalidGuardrail(
                    f"Guardrail {index}: higher_is_better must be true or false."
                )
            guardrail = Guardrail(base.metric, base.kind, higher, float(margin))
        else:
            raise InvalidGuardrail(
                f"Guardrail {index} must be a metric name or an object with a 'metric'."
            )
        parsed[guardrail.metric] = guardrail
    return tuple(parsed.values())
