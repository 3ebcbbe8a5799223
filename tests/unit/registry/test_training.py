"""Training the demo's outcome classifier: CSV parsing, refusals, the Core ML model and its report."""

import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.coreml import inspect_model
from registry.training import (
    DEMO_COLUMNS,
    MIN_ROWS,
    TrainingResult,
    demo_rows,
    read_outcome_csv,
    train_outcome_classifier,
    write_demo_csv,
)

PROPERTY = settings(database=None, max_examples=100, deadline=None)
FEATURES = ["Battery Level", "Phone Charging?"]


def read_text(text: str, **kwargs):
    return read_outcome_csv(io.StringIO(text), **kwargs)


def demo_training_set(n=200, *, seed=0, purchase_bias=0.0):
    rows = demo_rows(n, seed=seed, purchase_bias=purchase_bias)
    X = [[row["Battery Level"], 1.0 if row["Phone Charging?"] else 0.0] for row in rows]
    return X, [row["Outcome"] for row in rows]


@pytest.fixture(scope="module")
def trained() -> TrainingResult:
    X, y = demo_training_set(200)
    return train_outcome_classifier(FEATURES, X, y, seed=0, n_estimators=10)


# --------------------------------------------------------------------------- CSV


def test_read_outcome_csv__demo_style_csv__returns_features_rows_labels():
    text = (
        "Outcome,Battery Level,Phone Charging?\n"
        "Purchased,0.9,true\n"
        "Dismissed,0.15,false\n"
        "Purchased,1,1\n"
    )

    assert read_text(text) == (
        FEATURES,
        [[0.9, 1.0], [0.15, 0.0], [1.0, 1.0]],
        ["Purchased", "Dismissed", "Purchased"],
    )


def test_read_outcome_csv__outcome_not_first__keeps_feature_order():
    text = "Battery Level,Outcome,Phone Charging?\n0.5,Dismissed,no\n"

    assert read_text(text) == (FEATURES, [[0.5, 0.0]], ["Dismissed"])


def test_read_outcome_csv__other_outcome_column__reads_it():
    text = "result,x\nwon,1.5\n"

    assert read_text(text, outcome_column="result") == (["x"], [[1.5]], ["won"])


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("true", 1.0),
        ("TRUE", 1.0),
        ("Yes", 1.0),
        ("1", 1.0),
        ("false", 0.0),
        ("False", 0.0),
        ("no", 0.0),
        ("0", 0.0),
        (" yes ", 1.0),
    ],
)
def test_read_outcome_csv__boolean_cells__become_one_or_zero(cell, value):
    _, rows, _ = read_text(f"Outcome,Phone Charging?\nPurchased,{cell}\n")

    assert rows == [[value]]


def test_read_outcome_csv__non_numeric_value__names_line_and_column():
    text = "Outcome,Battery Level,Phone Charging?\nPurchased,0.9,true\nDismissed,high,false\n"

    with pytest.raises(ValueError) as caught:
        read_text(text)

    assert str(caught.value) == (
        "Line 3, column 'Battery Level': 'high' is not a number or a boolean "
        "(true/false, yes/no, 1/0)."
    )


def test_read_outcome_csv__empty_cell__names_line_and_column():
    with pytest.raises(ValueError, match=r"^Line 2, column 'x': an empty value is not a number"):
        read_text("Outcome,x\nPurchased,\n")


def test_read_outcome_csv__not_finite_number__refused():
    with pytest.raises(ValueError, match=r"^Line 2, column 'x': 'nan' is not a finite number\.$"):
        read_text("Outcome,x\nPurchased,nan\n")


def test_read_outcome_csv__blank_lines__skipped_and_line_numbers_stay_true():
    text = "Outcome,x\n\nPurchased,1\n\nDismissed,oops\n"

    with pytest.raises(ValueError, match=r"^Line 5, column 'x'"):
        read_text(text)


def test_read_outcome_csv__row_with_missing_value__says_expected_count():
    with pytest.raises(ValueError) as caught:
        read_text("Outcome,a,b\nPurchased,1,2\nDismissed,1\n")

    assert str(caught.value) == "Line 3: expected 3 values (Outcome, a, b), found 2."


def test_read_outcome_csv__empty_outcome__names_line():
    with pytest.raises(ValueError, match=r"^Line 2: the 'Outcome' value is empty\.$"):
        read_text("Outcome,x\n,1\n")


def test_read_outcome_csv__no_outcome_column__lists_the_columns():
    with pytest.raises(ValueError) as caught:
        read_text("Result,x\nPurchased,1\n")

    assert str(caught.value) == "The CSV has no 'Outcome' column (its columns are: Result, x)."


def test_read_outcome_csv__duplicate_column__refused():
    with pytest.raises(ValueError, match="'x' appears more than once"):
        read_text("Outcome,x,x\nPurchased,1,2\n")


def test_read_outcome_csv__only_outcome_column__refused():
    with pytest.raises(ValueError, match="no feature columns"):
        read_text("Outcome\nPurchased\n")


def test_read_outcome_csv__empty_file__refused():
    with pytest.raises(ValueError, match="empty"):
        read_text("")


def test_read_outcome_csv__binary_upload_with_bom__reads_like_text():
    upload = io.BytesIO("\ufeffOutcome,x\r\nPurchased,0.5\r\n".encode())

    assert read_outcome_csv(upload) == (["x"], [[0.5]], ["Purchased"])
    assert not upload.closed


def test_read_outcome_csv__path__reads_file(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("Outcome,x\nDismissed,2\n", encoding="utf-8")

    assert read_outcome_csv(path) == (["x"], [[2.0]], ["Dismissed"])
    assert read_outcome_csv(str(path)) == (["x"], [[2.0]], ["Dismissed"])


demo_like_rows = st.lists(
    st.fixed_dictionaries(
        {
            "Outcome": st.sampled_from(["Purchased", "Dismissed"]),
            "Battery Level": st.floats(min_value=0.0, max_value=1.0),
            "Phone Charging?": st.booleans(),
        }
    ),
    max_size=30,
)


@PROPERTY
@given(rows=demo_like_rows)
def test_read_outcome_csv__reads_what_write_demo_csv_wrote__same_values(rows):
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "rows.csv"
        write_demo_csv(path, rows)
        features, X, y = read_outcome_csv(path)

    assert features == FEATURES
    assert [[row["Battery Level"], float(row["Phone Charging?"])] for row in rows] == X
    assert y == [row["Outcome"] for row in rows]


@PROPERTY
@given(
    label=st.text(
        st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1
    ).filter(lambda s: s.strip() == s),
    value=st.floats(allow_nan=False, allow_infinity=False),
)
def test_read_outcome_csv__any_label_and_finite_value__round_trip_through_csv(label, value):
    buffer = io.StringIO()
    write_demo_csv(buffer, [{"Outcome": label, "x": value}])
    buffer.seek(0)

    assert read_outcome_csv(buffer) == (["x"], [[value]], [label])


def test_write_demo_csv__no_rows__writes_demo_header(tmp_path):
    path = tmp_path / "empty.csv"

    write_demo_csv(path, [])

    assert path.read_bytes() == b"Outcome,Battery Level,Phone Charging?\r\n"


# --------------------------------------------------------------------------- demo data


def test_write_demo_csv__row_missing_a_column__refused(tmp_path):
    rows = [{"Outcome": "Purchased", "x": 1.0}, {"Outcome": "Dismissed"}]

    with pytest.raises(ValueError, match=r"^Row 2 has no 'x' value\.$"):
        write_demo_csv(tmp_path / "rows.csv", rows)


def test_demo_rows__same_seed__same_rows():
    assert demo_rows(50, seed=4) == demo_rows(50, seed=4)
    assert demo_rows(50, seed=4) != demo_rows(50, seed=5)


def test_demo_rows__any_seed__plausible_values():
    rows = demo_rows(300, seed=1)

    assert len(rows) == 300
    assert all(list(row) == list(DEMO_COLUMNS) for row in rows)
    assert all(0.0 <= row["Battery Level"] <= 1.0 for row in rows)
    assert {row["Outcome"] for row in rows} == {"Purchased", "Dismissed"}
    assert {row["Phone Charging?"] for row in rows} == {True, False}


def purchase_rate(rows) -> float:
    return sum(row["Outcome"] == "Purchased" for row in rows) / len(rows)


def test_demo_rows__charging_and_full_battery__buy_more_often():
    rows = demo_rows(4000, seed=2)
    keen = [r for r in rows if r["Phone Charging?"] and r["Battery Level"] > 0.7]
    reluctant = [r for r in rows if not r["Phone Charging?"] and r["Battery Level"] < 0.3]

    assert purchase_rate(keen) > purchase_rate(reluctant) + 0.4


def test_demo_rows__positive_purchase_bias__more_purchases():
    assert purchase_rate(demo_rows(2000, seed=0, purchase_bias=1.5)) > (
        purchase_rate(demo_rows(2000, seed=0)) + 0.15
    )


# --------------------------------------------------------------------------- training


def test_train_outcome_classifier__demo_rows__model_matches_demo_interface(trained, tmp_path):
    path = tmp_path / "trained.mlmodel"
    path.write_bytes(trained.model_bytes)

    description = inspect_model(path)

    assert [f.to_dict() for f in description.inputs] == [
        {
            "name": "input",
            "type": "multiArray",
            "optional": False,
            "shape": [2],
            "data_type": "double",
            "description": "[Battery Level, Phone Charging?]",
        }
    ]
    assert description.class_labels == ("Dismissed", "Purchased")
    assert description.predicted_probabilities_name == "classProbability"
    assert description.output("classProbability").key_type == "string"
    assert description.metadata["short_description"] == (
        "Predicts the outcome of a flow from on-device signals"
    )
    assert description.metadata["user_defined"]["com.cohort.training.seed"] == "0"


def test_train_outcome_classifier__demo_rows__report_has_held_out_metrics(trained):
    report = trained.report

    assert report["n_train"] == 160
    assert report["n_test"] == 40
    assert report["features"] == FEATURES
    assert report["labels"] == ["Dismissed", "Purchased"]
    assert report["seed"] == 0
    assert report["sklearn_version"] == "1.5.1"
    assert report["coremltools_version"] == "9.0"
    assert 0.5 < report["accuracy"] <= 1.0
    for label in ("Dismissed", "Purchased"):
        assert set(report[label]) == {"precision", "recall", "f1-score", "support"}
    assert report["Dismissed"]["support"] + report["Purchased"]["support"] == 40
    assert json.loads(json.dumps(report)) == report


def test_train_outcome_classifier__same_data_and_seed__same_bytes(trained):
    X, y = demo_training_set(200)

    again = train_outcome_classifier(FEATURES, X, y, seed=0, n_estimators=10)

    assert again.model_bytes == trained.model_bytes
    assert again.report == trained.report


def test_train_outcome_classifier__other_bias__different_model(trained):
    X, y = demo_training_set(200, purchase_bias=1.5)

    other = train_outcome_classifier(FEATURES, X, y, seed=0, n_estimators=10)

    assert other.model_bytes != trained.model_bytes


def test_train_outcome_classifier__from_csv__trains(tmp_path):
    path = tmp_path / "rows.csv"
    write_demo_csv(path, demo_rows(60, seed=9))

    result = train_outcome_classifier(*read_outcome_csv(path), n_estimators=5, seed=9)

    assert result.report["n_train"] + result.report["n_test"] == 60


def test_train_outcome_classifier__fewer_than_minimum_rows__refused():
    X, y = demo_training_set(MIN_ROWS - 1)

    with pytest.raises(ValueError) as caught:
        train_outcome_classifier(FEATURES, X, y, n_estimators=5)

    assert str(caught.value) == (
        f"There are only {MIN_ROWS - 1} rows; at least {MIN_ROWS} are needed to train and hold "
        "out a test split."
    )


def test_train_outcome_classifier__csv_with_one_outcome__refused(tmp_path):
    path = tmp_path / "one.csv"
    write_demo_csv(path, [{**row, "Outcome": "Purchased"} for row in demo_rows(30)])

    with pytest.raises(ValueError) as caught:
        train_outcome_classifier(*read_outcome_csv(path), n_estimators=5)

    assert str(caught.value) == (
        "Every row has the outcome 'Purchased'; a classifier needs at least two different outcomes."
    )


def test_train_outcome_classifier__outcome_with_single_row__refused():
    X, y = demo_training_set(30)
    y = ["Dismissed"] * 29 + ["Purchased"]

    with pytest.raises(ValueError, match="'Purchased' appears in only 1 row"):
        train_outcome_classifier(FEATURES, X, y, n_estimators=5)


def test_train_outcome_classifier__non_numeric_feature__names_row_and_feature():
    X, y = demo_training_set(20)
    X[6][1] = "charging"

    with pytest.raises(ValueError) as caught:
        train_outcome_classifier(FEATURES, X, y, n_estimators=5)

    assert str(caught.value) == "Row 7, feature 'Phone Charging?': 'charging' is not a number."


def test_train_outcome_classifier__row_of_wrong_width__refused():
    X, y = demo_training_set(20)
    X[2] = [0.5]

    with pytest.raises(ValueError, match=r"^Row 3 has 1 values but there are 2 features"):
        train_outcome_classifier(FEATURES, X, y, n_estimators=5)


def test_train_outcome_classifier__three_outcomes__labels_sorted_in_model(tmp_path):
    X, _ = demo_training_set(60)
    y = [("Dismissed", "Purchased", "Snoozed")[i % 3] for i in range(60)]

    result = train_outcome_classifier(FEATURES, X, y, n_estimators=5)
    path = tmp_path / "three.mlmodel"
    path.write_bytes(result.model_bytes)

    assert inspect_model(path).class_labels == ("Dismissed", "Purchased", "Snoozed")
    assert result.report["labels"] == ["Dismissed", "Purchased", "Snoozed"]
