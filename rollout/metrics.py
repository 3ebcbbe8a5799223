"""The names of the metrics a rollout is judged on (no Django), and what kind each one is.

- `PRIMARY` ("conversion"): the share of devices with at least one outcome equal to the flow's
  positive label. Always judged.
- `MODEL_ERROR` ("model_error"): the reserved outcome a device reports when the assigned model
  failed, and the metric of the share of devices that reported it. Always a guardrail.
- `VALUE` ("value"): the numeric value per device (e.g. revenue), compared as a mean.
- `outcome_metric(label)` ("outcome:<label>"): the share of devices that reported the outcome
  <label> (e.g. outcome:Dismissed).
"""

PRIMARY = "conversion"
MODEL_ERROR = "model_error"
VALUE = "value"
OUTCOME_PREFIX = "outcome:"

# How a metric is compared: as the share of devices with it (0/1 per device), or as a mean.
PROPORTION = "proportion"
MEAN = "mean"


def outcome_metric(label: str) -> str:
    """The metric of the share of devices that reported the outcome `label`."""
    return OUTCOME_PREFIX + label


def outcome_label(metric: str) -> str | None:
    """The outcome label an "outcome:<label>" metric counts; None for any other metric."""
    if metric.startswith(OUTCOME_PREFIX) and len(metric) > len(OUTCOME_PREFIX):
        return metric[len(OUTCOME_PREFIX) :]
    return None
