"""
Training data from the field: outcome events with their signals, as the CSV `train_model` reads.

The format is the one `registry.training.read_outcome_csv` accepts: a header, the outcome column
first, then one column per signal (sorted by name); every feature cell a number or a boolean
(`true`/`false`). Since that reader takes no empty cells:
- a signal that ever carries text is left out (it cannot be a numeric feature);
- an event missing one of the chosen signals is skipped (and counted), so choose the columns
  (`signals=`) when devices on older SDKs do not send every signal yet.
Rows are streamed from the database in chunks, twice: once to find the columns, once to write.
"""

import csv
import math
from dataclasses import dataclass
from datetime import datetime

from registry.models import Flow
from rollout.metrics import MODEL_ERROR

from .models import OutcomeEvent

CHUNK_SIZE = 2000


@dataclass(frozen=True)
class TrainingExport:
    columns: list[str]  # the signal columns written after the outcome column
    rows: int
    skipped_missing: int  # events lacking one of the columns
    dropped_signals: list[str]  # signals left out because they carry text


def _is_feature(value) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, int | float) and math.isfinite(value)


def _cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _events(*, flow: Flow, start: datetime, end: datetime, outcomes):
    queryset = OutcomeEvent.objects.filter(
        flow=flow, occurred_at__gte=start, occurred_at__lt=end, signals__isnull=False
    )
    if outcomes:
        queryset = queryset.filter(outcome__in=list(outcomes))
    else:
        queryset = queryset.exclude(outcome=MODEL_ERROR)
    return queryset.order_by("occurred_at", "pk")


def training_columns(*, flow: Flow, start: datetime, end: datetime, outcomes=None):
    """Return (numeric signal names, signal names that carry text), both sorted."""
    numeric, textual = set(), set()
    events = _events(flow=flow, start=start, end=end, outcomes=outcomes)
    for signals in events.values_list("signals", flat=True).iterator(chunk_size=CHUNK_SIZE):
        if not isinstance(signals, dict):
            continue
        for name, value in signals.items():
            (numeric if _is_feature(value) else textual).add(name)
    return sorted(numeric - textual), sorted(textual)


def training_csv_write(
    *,
    flow: Flow,
    start: datetime,
    end: datetime,
    out,
    outcome_column: str = "Outcome",
    outcomes=None,
    signals=None,
) -> TrainingExport:
    """Write the flow's events in `[start, end)` that carry signals as a training CSV to `out`.

    `outcomes`: the labels to learn from (default: every outcome but `model_error`).
    `signals`: the feature columns (default: every signal that is always a number or boolean).
    """
    dropped: list[str] = []
    if signals is None:
        columns, dropped = training_columns(flow=flow, start=start, end=end, outcomes=outcomes)
    else:
        columns = sorted(set(signals))
    if outcome_column in columns:
        raise ValueError(
            f"A signal is named '{outcome_column}' like the outcome column; "
            "choose another outcome column name."
        )
    writer = csv.writer(out)
    writer.writerow([outcome_column, *columns])
    written = skipped = 0
    events = _events(flow=flow, start=start, end=end, outcomes=outcomes)
    for outcome, values in events.values_list("outcome", "signals").iterator(chunk_size=CHUNK_SIZE):
        if not isinstance(values, dict):
            continue
        row = [outcome]
        for name in columns:
            value = values.get(name)
            if not _is_feature(value):
                skipped += 1
                break
            row.append(_cell(value))
        else:
            writer.writerow(row)
            written += 1
    return TrainingExport(
        columns=columns, rows=written, skipped_missing=skipped, dropped_signals=dropped
    )
