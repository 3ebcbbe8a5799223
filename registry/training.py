"""Train the ContextSDK demo's outcome classifier from a CSV and convert it to a Core ML .mlmodel."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

MIN_ROWS = 10
MIN_ROWS_PER_OUTCOME = 2
DEMO_COLUMNS = ("Outcome", "Battery Level", "Phone Charging?")
PURCHASED, DISMISSED = "Purchased", "Dismissed"

_TRUE = frozenset({"true", "yes", "y", "t", "1"})
_FALSE = frozenset({"false", "no", "n", "f", "0"})


@dataclass(frozen=True)
class TrainingResult:
    model_bytes: bytes
    report: dict


# --------------------------------------------------------------------------- CSV


def read_outcome_csv(
    path_or_file, *, outcome_column: str = "Outcome"
) -> tuple[list[str], list[list[float]], list[str]]:
    """Return (feature names, rows of feature values, outcome labels) from a CSV with a header.

    Every column but the outcome is a numeric feature; booleans (true/false, yes/no, 1/0) become 1.0/0.0.
    Raise ValueError naming the line and column of the first bad value.
    """
    if isinstance(path_or_file, str | os.PathLike):
        with open(path_or_file, encoding="utf-8-sig", newline="") as handle:
            return _read_outcome_rows(handle, outcome_column)
    handle = path_or_file
    if isinstance(handle.read(0), bytes):
        # Uploaded files arrive as bytes; Excel likes to prefix a byte-order mark.
        handle = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
        try:
            return _read_outcome_rows(handle, outcome_column)
        finally:
            handle.detach()
    return _read_outcome_rows(handle, outcome_column)


def _read_outcome_rows(handle, outcome_column: str):
    reader = csv.reader(handle)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as error:
        raise ValueError(f"Line 1: the CSV header cannot be read ({error}).") from None
    if header is None:
        raise ValueError("The CSV is empty: it needs a header line and data rows.")
    header = [name.strip() for name in header]
    if outcome_column not in header:
        raise ValueError(
            f"The CSV has no '{outcome_column}' column (its columns are: {', '.join(header)})."
        )
    if "" in header:
        raise ValueError(f"Line 1: column {header.index('') + 1} has no name.")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ValueError(f"Line 1: the column '{duplicates[0]}' appears more than once.")
    outcome_index = header.index(outcome_column)
    feature_names = [name for name in header if name != outcome_column]
    if not feature_names:
        raise ValueError(f"The CSV has only the '{outcome_column}' column and no feature columns.")

    rows: list[list[float]] = []
    labels: list[str] = []
    while True:
        try:
            record = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as error:
            raise ValueError(f"Line {reader.line_num}: the CSV cannot be read ({error}).") from None
        if record is None:
            break
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            raise ValueError(
                f"Line {line}: expected {len(header)} values ({', '.join(header)}), "
                f"found {len(record)}."
            )
        label = record[outcome_index].strip()
        if not label:
            raise ValueError(f"Line {line}: the '{outcome_column}' value is empty.")
        values = [
            _parse_value(cell, line, name)
            for name, cell in zip(header, record, strict=True)
            if name != outcome_column
        ]
        rows.append(values)
        labels.append(label)
    return feature_names, rows, labels


def _parse_value(cell: str, line: int, column: str) -> float:
    text = cell.strip()
    lowered = text.lower()
    if lowered in _TRUE:
        return 1.0
    if lowered in _FALSE:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        shown = f"'{text}'" if text else "an empty value"
        raise ValueError(
            f"Line {line}, column '{column}': {shown} is not a number or a boolean "
            "(true/false, yes/no, 1/0)."
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"Line {line}, column '{column}': '{text}' is not a finite number.")
    return value


# --------------------------------------------------------------------------- training


def train_outcome_classifier(
    feature_names,
    X,
    y,
    *,
    seed: int = 0,
    n_estimators: int = 100,
    test_size: float = 0.2,
    input_name: str = "input",
    short_description: str = "Predicts the outcome of a flow from on-device signals",
) -> TrainingResult:
    """Fit a random forest on a held-out split, convert it to Core ML, and report held-out metrics.

    The model has one MultiArray input (`input_name`, double, one slot per feature in order) so that
    models trained on CSVs with the same columns share a flow interface, like the demo app's model.
    """
    feature_names = [str(name) for name in feature_names]
    matrix = _validated_matrix(feature_names, X)
    labels = [str(label) for label in y]
    _check_training_set(matrix, labels)

    import coremltools
    import sklearn
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, classification_report
    from sklearn.model_selection import train_test_split

    classes = sorted(set(labels))
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            matrix, labels, test_size=test_size, random_state=seed, stratify=labels
        )
    except ValueError:
        # Too few rows for every class to appear in both halves (many classes, tiny CSV).
        X_train, X_test, y_train, y_test = train_test_split(
            matrix, labels, test_size=test_size, random_state=seed
        )
    missing = sorted(set(classes) - set(y_train))
    if missing:
        raise ValueError(
            f"After holding out a test split, no training row has the outcome '{missing[0]}'. "
            "Add more rows for it."
        )

    classifier = RandomForestClassifier(n_estimators=n_estimators, random_state=seed)
    classifier.fit(X_train, y_train)
    predicted = classifier.predict(X_test)

    report = _plain(
        classification_report(y_test, predicted, labels=classes, output_dict=True, zero_division=0)
    )
    report.update(
        accuracy=float(accuracy_score(y_test, predicted)),
        n_train=len(y_train),
        n_test=len(y_test),
        features=list(feature_names),
        labels=classes,
        seed=seed,
        n_estimators=n_estimators,
        sklearn_version=sklearn.__version__,
        coremltools_version=coremltools.__version__,
    )

    model = coremltools.converters.sklearn.convert(classifier, input_features=input_name)
    spec = model.get_spec()
    spec.description.metadata.shortDescription = short_description
    # The single array input loses the column names; keep them where a person can find them.
    spec.description.input[0].shortDescription = "[" + ", ".join(feature_names) + "]"
    spec.description.metadata.userDefined["com.cohort.features"] = json.dumps(feature_names)
    spec.description.metadata.userDefined["com.cohort.training.seed"] = str(seed)
    return TrainingResult(model_bytes=spec.SerializeToString(deterministic=True), report=report)


def _validated_matrix(feature_names: list[str], X) -> list[list[float]]:
    if not feature_names:
        raise ValueError("There are no feature columns to train on.")
    matrix = []
    for index, row in enumerate(X, start=1):
        row = list(row)
        if len(row) != len(feature_names):
            raise ValueError(
                f"Row {index} has {len(row)} values but there are {len(feature_names)} features "
                f"({', '.join(feature_names)})."
            )
        values = []
        for name, value in zip(feature_names, row, strict=True):
            if isinstance(value, bool):
                value = float(value)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Row {index}, feature '{name}': {value!r} is not a number."
                ) from None
            if not math.isfinite(number):
                raise ValueError(
                    f"Row {index}, feature '{name}': {value!r} is not a finite number."
                )
            values.append(number)
        matrix.append(values)
    return matrix


def _check_training_set(matrix: list[list[float]], labels: list[str]) -> None:
    if len(matrix) != len(labels):
        raise ValueError(f"There are {len(matrix)} rows but {len(labels)} outcomes.")
    if len(labels) < MIN_ROWS:
        raise ValueError(
            f"There are only {len(labels)} rows; at least {MIN_ROWS} are needed to train and "
            "hold out a test split."
        )
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    if len(counts) < 2:
        only = next(iter(counts))
        raise ValueError(
            f"Every row has the outcome '{only}'; a classifier needs at least two different "
            "outcomes."
        )
    rare = sorted(label for label, count in counts.items() if count < MIN_ROWS_PER_OUTCOME)
    if rare:
        raise ValueError(
            f"The outcome '{rare[0]}' appears in only {counts[rare[0]]} row; each outcome needs at "
            f"least {MIN_ROWS_PER_OUTCOME}."
        )


def _plain(value):
    """sklearn reports hold numpy scalars; make them JSON-able."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "item"):
        return value.item()
    return value


# --------------------------------------------------------------------------- demo data


def demo_rows(n: int = 500, *, seed: int = 0, purchase_bias: float = 0.0) -> list[dict]:
    """Synthetic demo rows: a charging phone with a full battery buys more often.

    purchase_bias is added to the log-odds of a purchase, so two biases give two different models.
    """
    if n < 0:
        raise ValueError(f"n must be zero or more, not {n}.")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        battery = round(rng.random(), 2)
        charging = rng.random() < 0.4
        log_odds = -3.0 + 4.0 * battery + 2.0 * charging + purchase_bias
        purchased = rng.random() < 1.0 / (1.0 + math.exp(-log_odds))
        rows.append(
            {
                "Outcome": PURCHASED if purchased else DISMISSED,
                "Battery Level": battery,
                "Phone Charging?": charging,
            }
        )
    return rows


def write_demo_csv(path, rows) -> None:
    """Write rows (dicts) as a CSV that read_outcome_csv reads back; booleans as true/false.

    The demo's columns come first in their usual order, then any others in the first row's order.
    """
    rows = list(rows)
    first = list(rows[0]) if rows else list(DEMO_COLUMNS)
    columns = [c for c in DEMO_COLUMNS if c in first] + [c for c in first if c not in DEMO_COLUMNS]
    if isinstance(path, str | os.PathLike):
        with Path(path).open("w", encoding="utf-8", newline="") as handle:
            _write_rows(handle, columns, rows)
    else:
        _write_rows(path, columns, rows)


def _write_rows(handle, columns: list[str], rows: list[dict]) -> None:
    writer = csv.writer(handle)
    writer.writerow(columns)
    for number, row in enumerate(rows, start=1):
        missing = [column for column in columns if column not in row]
        if missing:
            raise ValueError(f"Row {number} has no '{missing[0]}' value.")
        writer.writerow([_format_cell(row[column]) for column in columns])


def _format_cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
