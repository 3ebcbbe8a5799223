"""Whether a model fits a flow's interface: real corpus models against flow interfaces."""

from pathlib import Path

import pytest

from registry.coreml import MLMODEL, FeatureDescription, ModelDescription, inspect_model
from registry.interfaces import interface_from_description, interface_problems

REPO_ROOT = Path(__file__).resolve().parents[3]
CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "coreml"

DEMO = "KrauseFx__CoreMLDemo__MyFirstCustomModel.mlmodel"
DEMO_OTA = "KrauseFx__CoreMLDemo__80a2-82d1-bcf8-4ab5-9d35-d7f257c4c31e.mlmodel"
GAVI_IRIS = "gavi__Iris__iris.mlmodel"
DIABETES_PACKAGE = "bkdevart__ML-Playground__DiabetesTest.mlpackage"


@pytest.fixture(scope="module", autouse=True)
def corpus():
    if not CORPUS.is_dir():
        pytest.fail(f"The Core ML corpus is missing: expected it at {CORPUS}.")
    return CORPUS


def describe(name: str) -> ModelDescription:
    return inspect_model(CORPUS / name)


def demo_interface() -> dict:
    return interface_from_description(describe(DEMO))


def test_interface_from_description__demo_model__lists_its_single_array_input():
    assert demo_interface() == {
        "inputs": [
            {
                "name": "input",
                "type": "multiArray",
                "optional": False,
                "shape": [2],
                "data_type": "double",
                "description": "",
            }
        ]
    }


def test_interface_problems__ota_model_against_demo_flow__fits():
    assert interface_problems(describe(DEMO_OTA), demo_interface(), "Purchased") == []


def test_interface_problems__no_interface_and_no_label__fits_anything():
    assert interface_problems(describe(GAVI_IRIS), None, "") == []


def test_interface_problems__extra_interface_inputs__are_fine():
    interface = demo_interface()
    interface["inputs"].append({"name": "hour_of_day", "type": "int64", "optional": False})

    assert interface_problems(describe(DEMO), interface, "Purchased") == []


def test_interface_problems__iris_against_demo_flow__names_missing_input_and_labels():
    problems = interface_problems(describe(GAVI_IRIS), demo_interface(), "Purchased")

    assert problems == [
        "The model reads input 'data', which the flow's interface does not have (it has: input).",
        "The flow reads the probability of 'Purchased', but the model has no class-probability "
        "output (a dictionary named by predictedProbabilitiesName); its outputs are: Species.",
        "The positive label 'Purchased' is not one of the model's class labels "
        "(setosa, versicolor, virginica).",
    ]


def test_interface_problems__wrong_input_type__says_both_types():
    interface = {"inputs": [{"name": "input", "type": "double", "optional": False}]}

    assert interface_problems(describe(DEMO), interface, "") == [
        "Input 'input' is a multiArray in the model but a double in the flow's interface."
    ]


def test_interface_problems__wrong_shape_and_data_type__says_both():
    interface = demo_interface()
    interface["inputs"][0].update(shape=[3], data_type="float32")

    assert interface_problems(describe(DEMO), interface, "") == [
        "Input 'input' has shape [2] in the model but [3] in the flow's interface.",
        "Input 'input' holds double values in the model but float32 in the flow's interface.",
    ]


def test_interface_problems__image_of_other_size__says_shapes():
    mnist = describe("umerzia-7001__CoreML-Keras_Digit_recognition_app__MNISTClassifier.mlmodel")
    interface = interface_from_description(mnist)
    interface["inputs"][0]["shape"] = [32, 32]

    assert interface_problems(mnist, interface, "") == [
        "Input 'imageInput' has shape [28, 28] in the model but [32, 32] in the flow's interface."
    ]


def test_interface_problems__dictionary_key_type_differs__says_key_types():
    model = ModelDescription(
        format=MLMODEL,
        spec_version=1,
        model_type="dictVectorizer",
        sub_models=(),
        inputs=(FeatureDescription("counts", "dictionary", False, key_type="string"),),
        outputs=(FeatureDescription("vector", "multiArray", False, (3,), "double"),),
        class_labels=(),
        predicted_feature_name="",
        predicted_probabilities_name="",
    )
    interface = {"inputs": [{"name": "counts", "type": "dictionary", "key_type": "int64"}]}

    assert interface_problems(model, interface, "") == [
        "Input 'counts' is a dictionary keyed by string in the model but by int64 in the flow's "
        "interface."
    ]


def test_interface_problems__optional_model_input_not_in_interface__fits():
    demo = describe(DEMO)
    optional = FeatureDescription("hour_of_day", "int64", True)
    model = ModelDescription(**{**demo.__dict__, "inputs": (*demo.inputs, optional)})

    assert interface_problems(model, demo_interface(), "Purchased") == []


def test_interface_problems__positive_label_not_a_class__lists_the_labels():
    assert interface_problems(describe(DEMO), demo_interface(), "Bought") == [
        "The positive label 'Bought' is not one of the model's class labels (Dismissed, Purchased)."
    ]


def test_interface_problems__regressor_with_positive_label__not_a_classifier():
    problems = interface_problems(
        describe("MoonAndEye__CreateMLDemo__HousePricer.mlmodel"), None, "Purchased"
    )

    assert problems == [
        "The flow reads the probability of 'Purchased', but the model is a pipelineRegressor, "
        "not a classifier."
    ]


def test_interface_problems__int64_labels__match_as_strings():
    diabetes = describe(DIABETES_PACKAGE)

    assert interface_problems(diabetes, interface_from_description(diabetes), "1") == []


def test_interface_problems__flow_reads_output_model_lacks__says_so():
    interface = {**demo_interface(), "output": "classProbability"}
    diabetes = describe(DIABETES_PACKAGE)

    problems = interface_problems(diabetes, interface, "")

    assert problems[-1] == (
        "The flow reads the output 'classProbability', which the model does not have "
        "(it has: Outcome, OutcomeProbability)."
    )


def test_interface_problems__malformed_interface__one_sentence():
    assert interface_problems(describe(DEMO), {"inputs": "input"}, "") == [
        "The flow's interface is malformed: 'inputs' must be a list of named features."
    ]
